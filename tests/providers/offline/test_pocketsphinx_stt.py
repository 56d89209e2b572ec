"""pocketsphinx STT end to end: espeak speech over a mu-law phone line into a real decoder
process, streamed in 20 ms frames. The decoder is deterministic on the same audio, so the
sentences below (chosen because they come through reliably) give repeatable results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.providers.base import ProviderError, Transcript
from bridge.providers.stt import pocketsphinx_stt
from bridge.providers.stt.pocketsphinx_stt import PocketsphinxSTT
from bridge.settings import Secrets, Settings
from tests.providers.offline.speech import next_final, phone_line, say, send_frames, transcribe


@pytest.fixture
async def stt() -> AsyncIterator[PocketsphinxSTT]:
    provider = pocketsphinx_stt.create(Settings(), Secrets())
    yield provider
    await provider.aclose()


async def test_round_trip_interims_then_final(stt: PocketsphinxSTT) -> None:
    audio = phone_line(await say("Where are you located?"))
    stream = await stt.open()
    try:
        final, seen = await transcribe(stream, audio)
    finally:
        await stream.close()
    assert final.is_final and final.end_of_utterance
    assert {"where", "located"} <= set(final.text.split())
    interims = [t for t in seen if not t.is_final]
    assert interims, "no interim results while the audio streamed"
    assert all(t.text for t in interims)
    assert len({t.text for t in interims}) == len(interims)  # sent only when they change
    assert seen[-1] is final


async def test_finals_are_per_utterance_and_finalize_always_answers(stt: PocketsphinxSTT) -> None:
    first = phone_line(await say("Where are you located?"))
    second = phone_line(await say("I need an operator."))
    stream = await stt.open()
    results = aiter(stream.transcripts())
    try:
        await send_frames(stream, first)
        await stream.finalize()
        one = await next_final(results, [])
        await send_frames(stream, second)
        await stream.finalize()
        two = await next_final(results, [])
        await stream.finalize()  # nothing new since: still answered, with no text
        three = await next_final(results, [])
    finally:
        await stream.close()
    assert "located" in one.text.split()
    assert "operator" in two.text.split() and "located" not in two.text.split()
    assert three == Transcript("", is_final=True, end_of_utterance=True)


async def test_pooled_decoder_is_reused_and_forgets_the_last_call() -> None:
    stt = PocketsphinxSTT(idle_decoders=2)
    try:
        audio = phone_line(await say("Are you open on Saturday?"))
        other = phone_line(await say("That is all, thank you."))
        stream = await stt.open()
        first_pid = stream._worker.pid
        await stt._pool.settled()  # the spare started by the take is loaded
        assert stt._pool.idle_count == 1
        text_first, _ = await transcribe(stream, audio)
        await transcribe(stream, other)  # adapts the decoder to this "caller"
        await stream.close()
        assert stt._pool.idle_count == 2  # kept: room for it beside the spare
        stream = await stt.open()
        assert stream._worker.pid == first_pid  # the decoder back from a call goes out first
        text_again, _ = await transcribe(stream, audio)
        await stream.close()
    finally:
        await stt.aclose()
    # a new call starts from the same state: same audio, same words
    assert text_again.text == text_first.text
    assert "open" in text_first.text.split()


async def test_grammar_constrains_results(tmp_path: Path) -> None:
    gram = tmp_path / "menu.gram"
    gram.write_text(
        "#JSGF V1.0;\ngrammar menu;\n"
        "public <q> = what time do you open | where are you located | operator | goodbye;\n"
    )
    settings = Settings.model_validate({"stt": {"pocketsphinx_grammar": str(gram)}})
    stt = pocketsphinx_stt.create(settings, Secrets())
    # the open language model hears nonsense here ("what i wrote a europa");
    # the grammar can only answer with one of its sentences
    audio = phone_line(await say("What time do you open?"))
    stream = await stt.open()
    try:
        final, _ = await transcribe(stream, audio)
    finally:
        await stream.close()
        await stt.aclose()
    assert final.text == "what time do you open"


async def test_long_utterance_is_cut_without_finalize() -> None:
    settings = Settings.model_validate({"stt": {"pocketsphinx_max_utterance_s": 1.0}})
    stt = pocketsphinx_stt.create(settings, Secrets())
    audio = phone_line(await say("Where are you located? I would like to make an appointment."))
    stream = await stt.open()
    try:
        await send_frames(stream, audio)  # ~4 s, never finalized
        cut = await next_final(aiter(stream.transcripts()), [])
    finally:
        await stream.close()
        await stt.aclose()
    assert cut.is_final and not cut.end_of_utterance


async def test_decoder_crash_is_a_provider_error(stt: PocketsphinxSTT) -> None:
    stream = await stt.open()
    results = aiter(stream.transcripts())
    await stream.send(bytes(320))
    stream._worker.kill()
    with pytest.raises(ProviderError, match="exited"):
        await asyncio.wait_for(anext(results), 30)
    with pytest.raises(ProviderError):
        await stream.send(bytes(320))
    with pytest.raises(ProviderError):
        await stream.finalize()
    await stream.close()  # closing a failed stream is fine
    # the provider still serves new calls with a fresh decoder
    stream = await stt.open()
    try:
        final, _ = await transcribe(stream, phone_line(await say("I need an operator.")))
    finally:
        await stream.close()
    assert "operator" in final.text.split()


async def test_odd_sized_sends_and_closed_stream(stt: PocketsphinxSTT) -> None:
    audio = phone_line(await say("Where are you located?"))
    stream = await stt.open()
    results = aiter(stream.transcripts())
    for i in range(0, len(audio), 333):  # odd byte counts: half samples wait for their partner
        await stream.send(audio[i : i + 333])
    await stream.finalize()
    final = await next_final(results, [])
    await stream.close()
    assert "located" in final.text.split()
    with pytest.raises(ProviderError, match="closed"):
        await stream.send(bytes(320))
    assert [t async for t in stream.transcripts()] == []  # ended, not hanging


def test_bad_grammar_fails_at_create(tmp_path: Path) -> None:
    settings = Settings.model_validate({"stt": {"pocketsphinx_grammar": str(tmp_path / "nope.gram")}})
    with pytest.raises(ProviderError, match="no such file"):
        pocketsphinx_stt.create(settings, Secrets())


@pytest.mark.parametrize(
    ("content", "name", "error"),
    [
        (None, "missing.txt", "no such file"),
        ("\n  \n!!\n", "empty.txt", "holds no sentences"),
        ("[[intents]\n", "bad.toml", "not valid TOML"),
        ('[[intents]]\nname = "x"\nkeywords = ["a"]\n', "nophrases.toml", "holds no sentences"),
    ],
)
def test_bad_corpus_fails_at_create(tmp_path: Path, content: str | None, name: str, error: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    settings = Settings.model_validate({"stt": {"pocketsphinx_corpus": str(path)}})
    with pytest.raises(ProviderError, match=error):
        pocketsphinx_stt.create(settings, Secrets())


def test_grammar_and_corpus_together_are_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello there\n")
    settings = Settings.model_validate(
        {
            "stt": {
                "pocketsphinx_corpus": str(corpus),
                "pocketsphinx_grammar": "#JSGF V1.0; grammar g; public <a> = hi;",
            }
        }
    )
    with pytest.raises(ProviderError, match="not both"):
        pocketsphinx_stt.create(settings, Secrets())


async def test_corpus_language_model_from_a_text_file(tmp_path: Path) -> None:
    """Sentences in a text file become the language model: a question the general model
    mangles ("what i'd do you open") comes through whole."""
    corpus = tmp_path / "sentences.txt"
    # "zorblax" is in no dictionary: left out, not an error
    corpus.write_text("What time do you open?\nWhere are you located?\nAsk for Zorblax.\nGoodbye.\n")
    settings = Settings.model_validate({"stt": {"pocketsphinx_corpus": str(corpus)}})
    stt = pocketsphinx_stt.create(settings, Secrets())
    stream = await stt.open()
    try:
        final, _ = await transcribe(stream, phone_line(await say("What time do you open?")))
    finally:
        await stream.close()
        await stt.aclose()
    assert final.text == "what time do you open"
