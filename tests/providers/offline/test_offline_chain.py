"""The offline engines together, as on a call with no keys: the caller's questions spoken by
espeak-ng, through a mu-law phone line, streamed into one pocketsphinx stream (one call, so
the decoder adapts as it would), and the scripted demo agent (config/agent-script.toml)
answering from what was recognised, its replies spoken by espeak-ng. Keeps the phrasings
listed at the top of the demo script true."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.providers.base import Message, TextDelta, ToolCall, ToolSpec
from bridge.providers.llm import scripted
from bridge.providers.llm.scripted import ScriptedLLM
from bridge.providers.stt import pocketsphinx_stt
from bridge.providers.stt.pocketsphinx_stt import PocketsphinxSTT
from bridge.providers.tts.espeak_tts import EspeakTTS
from bridge.settings import Secrets, Settings
from tests.providers.offline import speech
from tests.providers.offline.speech import chunks, phone_line, rms, say, transcribe

TOOLS = [ToolSpec("end_call", "hang up"), ToolSpec("transfer_call", "to a person")]

# (what the caller says, the intent's reply must contain, the tool it must call)
Turn = tuple[str, str, str | None]
CONVERSATIONS: dict[str, list[Turn]] = {
    "booking-then-goodbye": [
        ("Where are you located?", "twelve Market Street", None),
        ("Are you open on Saturday?", "Saturday from nine to one", None),
        ("I would like to make an appointment.", "morning or an afternoon", None),
        ("In the morning, please.", "ten in the morning", None),
        ("Thank you, goodbye.", "Goodbye", "end_call"),
    ],
    "afternoon-then-operator": [
        ("What time do you open?", "Saturday from nine to one", None),
        ("Can I book a checkup?", "morning or an afternoon", None),
        ("In the afternoon, please.", "three in the afternoon", None),
        ("I need an operator.", "put you through", "transfer_call"),
    ],
}
# the demo's settings: the decoder's language model built from the agent script
DEMO = Settings.model_validate({"stt": {"pocketsphinx_corpus": "config/agent-script.toml"}})


@pytest.fixture
async def stt() -> AsyncIterator[PocketsphinxSTT]:
    provider = pocketsphinx_stt.create(Settings(), Secrets())
    yield provider
    await provider.aclose()


@pytest.fixture
async def demo_stt() -> AsyncIterator[PocketsphinxSTT]:
    provider = pocketsphinx_stt.create(DEMO, Secrets())
    yield provider
    await provider.aclose()


@pytest.mark.parametrize("name", list(CONVERSATIONS))
async def test_demo_conversation_is_followed(demo_stt: PocketsphinxSTT, name: str) -> None:
    llm: ScriptedLLM = scripted.create(DEMO, Secrets())
    tts = EspeakTTS("en-us+klatt", 165)
    history: list[Message] = []
    heard: list[str] = []
    stream = await demo_stt.open()
    try:
        for said, expected, tool in CONVERSATIONS[name]:
            final, _ = await transcribe(stream, phone_line(await say(said, tts)))
            heard.append(final.text)
            history.append(Message("user", final.text))
            events = [e async for e in llm.stream(history, TOOLS)]
            reply = "".join(e.text for e in events if isinstance(e, TextDelta))
            calls = [e.name for e in events if isinstance(e, ToolCall)]
            assert expected in reply, f"{said!r} heard as {final.text!r}: agent said {reply!r}"
            assert calls == ([tool] if tool else [])
            audio = await speech.heard(tts.synthesize(chunks(reply)))
            assert len(audio) / 16000 > 0.5 and rms(audio) > 300  # spoken, not silence
            history.append(Message("assistant", reply))
    finally:
        await stream.close()
    assert len(heard) == len(CONVERSATIONS[name])


@pytest.mark.parametrize(
    ("said", "intent"),
    [
        ("I need an operator.", "operator"),
        ("Can I talk to a person?", "operator"),
        # not "What time do you open?": its caller audio (see speech.say) is heard as
        # "what i'd go to a lot of" here; 17 of espeak's 20 flutter versions of it come through
        ("Are you open on Saturday?", "hours"),
        ("What are your opening hours?", "hours"),
        ("Where are you located?", "location"),
    ],
)
async def test_first_question_of_a_call_is_understood(stt: PocketsphinxSTT, said: str, intent: str) -> None:
    """A call's first turn, on a decoder fresh from the pool (no adaptation to the caller yet),
    with the general language model (no corpus): the plainer questions still come through."""
    llm: ScriptedLLM = scripted.create(Settings(), Secrets())
    stream = await stt.open()
    try:
        final, _ = await transcribe(stream, phone_line(await say(said)))
    finally:
        await stream.close()
    reply = llm.agent.respond([Message("user", final.text)])
    assert reply is not None and reply.intent == intent, f"{said!r} heard as {final.text!r}"
