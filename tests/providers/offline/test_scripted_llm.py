"""The scripted LLM: rules from a TOML file, streamed like a real LLM, with tool calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.providers import factory
from bridge.providers.base import LlmEvent, Message, ProviderError, TextDelta, ToolCall, ToolSpec
from bridge.providers.llm import scripted
from bridge.providers.llm.script_match import dtmf_keys, similar
from bridge.providers.llm.script_model import ScriptError, parse_script
from bridge.providers.llm.scripted import ScriptedLLM
from bridge.settings import Secrets, Settings

TOOLS = [ToolSpec("end_call", "hang up"), ToolSpec("transfer_call", "to a person")]

SCRIPT = """
[script]
greeting = "Hello, Acme."
fallback = "Say hours or bye."

[states.pick]
fallback = "Red or blue?"

[[intents]]
name = "hours"
keywords = { open = 2, hours = 2, when = 0.5 }
dtmf = ["1"]
states = ["main"]
reply = "Nine to five."

[[intents]]
name = "colour"
keywords = ["colour"]
dtmf = ["2"]
states = ["main"]
reply = "Red or blue?"
next_state = "pick"

[[intents]]
name = "red"
keywords = ["red"]
dtmf = ["1"]
states = ["pick"]
reply = "Red it is."
next_state = "main"

[[intents]]
name = "bye"
keywords = { goodbye = 3, bye = 3 }
phrases = ["that is all"]
reply = "Goodbye!"
tool = "end_call"
tool_args = { reason = "caller said goodbye" }

[[intents]]
name = "human"
keywords = { operator = 3 }
reply = "Putting you through."
tool = "transfer_call"
"""


def llm() -> ScriptedLLM:
    return ScriptedLLM(parse_script(SCRIPT))


async def run(
    model: ScriptedLLM, messages: Sequence[Message], tools: Sequence[ToolSpec] = TOOLS
) -> list[LlmEvent]:
    async with asyncio.timeout(10):
        return [e async for e in model.stream(messages, tools)]


def text_of(events: list[LlmEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def user(*texts: str) -> list[Message]:
    out: list[Message] = []
    for t in texts:
        out += [Message("user", t), Message("assistant", "...")]
    return out[:-1]


async def test_reply_streams_word_by_word_and_joins_back_exactly() -> None:
    events = await run(llm(), user("When are you open?"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 3  # "Nine ", "to ", "five."
    assert text_of(events) == "Nine to five."
    assert not [e for e in events if isinstance(e, ToolCall)]


async def test_tool_call_follows_the_spoken_reply() -> None:
    events = await run(llm(), user("ok that is all thanks"))
    assert text_of(events) == "Goodbye!"
    assert isinstance(events[-1], ToolCall)
    assert events[-1].name == "end_call" and events[-1].arguments == {"reason": "caller said goodbye"}
    transfer = await run(llm(), user("operator"))
    assert text_of(transfer) == "Putting you through."
    assert [e.name for e in transfer if isinstance(e, ToolCall)] == ["transfer_call"]


async def test_tool_not_offered_is_skipped_but_the_reply_is_spoken() -> None:
    events = await run(llm(), user("goodbye"), tools=[])
    assert text_of(events) == "Goodbye!"
    assert not [e for e in events if isinstance(e, ToolCall)]


async def test_tool_call_ids_differ_per_turn() -> None:
    first = await run(llm(), user("operator"))
    second = await run(llm(), user("hours", "operator"))
    ids = {e.id for e in first + second if isinstance(e, ToolCall)}
    assert len(ids) == 2


async def test_state_is_replayed_from_the_history() -> None:
    model = llm()
    # "1" means hours in the main state and red in the pick state
    assert text_of(await run(model, user("DTMF: 1"))) == "Nine to five."
    assert text_of(await run(model, user("DTMF: 2"))) == "Red or blue?"
    assert text_of(await run(model, user("DTMF: 2", "DTMF: 1"))) == "Red it is."
    assert text_of(await run(model, user("colour please", "red"))) == "Red it is."
    # the state's own fallback, then back to main after a choice
    assert text_of(await run(model, user("colour please", "mumble"))) == "Red or blue?"
    assert text_of(await run(model, user("colour", "red", "mumble"))) == "Say hours or bye."


async def test_greeting_only_before_the_caller_speaks_and_nothing_after_a_tool_result() -> None:
    model = llm()
    assert text_of(await run(model, [Message("system", "ignored")])) == "Hello, Acme."
    after_tool = [*user("operator"), Message("tool", "ok", tool_call_id="x")]
    assert await run(model, after_tool) == []


async def test_fuzzy_matching_takes_near_misses_but_not_short_words() -> None:
    assert similar("moderator", "operator", 0.8)
    assert similar("opening", "open", 0.8)  # prefix
    assert not similar("by", "bye", 0.8)  # short words must be exact
    assert not similar("blue", "red", 0.8)
    assert text_of(await run(llm(), user("i need a moderator"))) == "Putting you through."
    assert text_of(await run(llm(), user("that it all"))) == "Goodbye!"  # phrase, fuzzily
    assert text_of(await run(llm(), user("when"))) == "Say hours or bye."  # 0.5 < min_score


def test_dtmf_forms() -> None:
    assert dtmf_keys("DTMF: 12#") == "12#"
    assert dtmf_keys("[dtmf 0]") == "0"
    assert dtmf_keys("caller pressed *") == "*"
    assert dtmf_keys("3") == "3"
    assert dtmf_keys("I have 3 questions") == ""


async def test_cancelling_mid_reply_stops_the_stream() -> None:
    stream = llm().stream(user("hours"), TOOLS)
    first = await anext(stream)
    assert first == TextDelta("Nine ")
    await stream.aclose()  # a barge-in


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[script\n", "not valid TOML"),
        ('[[intents]]\nname = "x"\nkeywords = ["a"]\n', "neither a reply nor a tool"),
        ('[[intents]]\nname = "x"\nreply = "y"\n', "no keywords, phrases or dtmf"),
        ('[[intents]]\nname = "x"\nreply = "y"\nkeywords = ["a b"]\n', "must be one word"),
        ('[[intents]]\nname = "x"\nreply = "y"\ndtmf = ["9x"]\n', "only 0-9"),
        (
            '[[intents]]\nname = "x"\nreply = "y"\nkeywords = ["a"]\nnext_state = "nowhere"\n',
            "no known state",
        ),
        ("[script]\nunknown = 1\n", "Extra inputs"),
    ],
)
def test_bad_scripts_are_rejected_with_the_reason(text: str, error: str) -> None:
    with pytest.raises(ScriptError, match=error):
        parse_script(text, "bad.toml")


def test_create_reports_a_missing_or_bad_file(tmp_path: Path) -> None:
    settings = Settings.model_validate({"llm": {"script_file": str(tmp_path / "missing.toml")}})
    with pytest.raises(ProviderError, match="cannot read the agent script"):
        scripted.create(settings, Secrets())
    bad = tmp_path / "bad.toml"
    bad.write_text('[[intents]]\nname = "x"\n')
    settings = Settings.model_validate({"llm": {"script_file": str(bad)}})
    with pytest.raises(ProviderError, match=r"bad\.toml"):
        scripted.create(settings, Secrets())


async def test_factory_builds_the_demo_script_by_default() -> None:
    """The example config's agent, from the default settings, through the factory."""
    model = factory._create(factory.LLM_MODULES, "scripted", Settings(), Secrets())
    assert model.name == "scripted"
    hours = await run(model, user("what time do you open"))
    assert "open Monday to Friday" in text_of(hours)
    booking = await run(model, user("DTMF: 3", "DTMF: 1"))
    assert "ten in the morning" in text_of(booking)
    bye = await run(model, user("that is all thank you"))
    assert [e.name for e in bye if isinstance(e, ToolCall)] == ["end_call"]
