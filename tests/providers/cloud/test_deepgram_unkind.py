"""Deepgram as unkind as the service (reference/providers-documented.md): empty speech_finals,
unanswered Finalize, segmented long utterances, the 10 s idle close, coded error closes, a
processing delay on finals and a refused model; the real deepgram-sdk client against each."""

from __future__ import annotations

import asyncio
import time

from bridge.providers.base import ProviderError, Transcript
from devkit.fakes import FakeCloud
from devkit.fakes.deepgram import DEFAULT_FINAL_DELAY_S, ErrorClose

from .conftest import assert_clean, silence, speech
from .test_deepgram import collect_until, make, push


def _sent(cloud: FakeCloud, **match: object) -> list[dict[str, object]]:
    return [
        e.data for e in cloud.deepgram.journal.of("sent")
        if all(e.data.get(k) == v for k, v in match.items())
    ]


async def test_unanswered_finalize_is_not_a_stall(cloud: FakeCloud) -> None:
    """Defect 2: Finalize with little audio pending gets no reply; the client used to arm its
    stall watchdog on Finalize and reconnect (replaying audio into the next turn)."""
    cloud.deepgram.script.append("Hello there.")
    stream = await make(cloud.http_url, stall_timeout_s=0.3).open()
    await push(stream, speech(600) + silence(400))
    got = await collect_until(stream, 1)
    await push(stream, silence(60))
    await stream.finalize()  # the engine's endpoint, just after Deepgram's own final
    got += await collect_until(stream, 1)
    await cloud.deepgram.journal.wait_for(lambda j: j.count("finalize_unanswered") == 1)
    await asyncio.sleep(0.8)  # well past the stall timeout, with no audio flowing (as in a turn)
    await stream.close()
    assert [t for t in got if t.end_of_utterance] == [
        Transcript("Hello there.", True, True, 0.98), Transcript("", True, True, 0.0)
    ]
    assert stream.reconnects == 0 and cloud.deepgram.journal.count("request") == 1


async def test_finalize_with_speech_pending_is_answered_by_deepgram(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("Quick one.")
    stream = await make(cloud.http_url, endpointing_ms=3000).open()
    await push(stream, speech(500) + silence(50))
    await stream.finalize()
    got = await collect_until(stream, 1)
    await stream.close()
    assert got[-1] == Transcript("Quick one.", True, True, 0.98)
    assert _sent(cloud, from_finalize=True, text="Quick one.")


async def test_finalize_soon_after_an_unanswered_one_is_answered_by_the_client(cloud: FakeCloud) -> None:
    """Debt (DESIGN, Known debts): an early Finalize, then the endpoint's 100 ms of audio
    later, before the first one's reply came. Deepgram has ~nothing left to process for the
    second and (documented) may not answer it; the client counted the unfinalized audio
    since the last FINAL (640 ms) and so waited for that reply: the turn waited
    stt_final_timeout_s. Counted from the last Finalize, it answers the second itself."""
    cloud.deepgram.script.append("Hello there.")
    stream = await make(cloud.http_url, endpointing_ms=3000).open()
    await push(stream, speech(500) + silence(40))
    await stream.finalize()  # the early one: 540 ms to process, answered after a delay
    await push(stream, silence(100))
    await stream.finalize()  # the endpoint's, 100 ms of audio after it
    got = await collect_until(stream, 2)
    await cloud.deepgram.journal.wait_for(lambda j: j.count("finalize_unanswered") == 1)
    await stream.close()
    assert [t for t in got if t.end_of_utterance] == [
        Transcript("", True, True, 0.0), Transcript("Hello there.", True, True, 0.98)
    ]
    assert len(_sent(cloud, from_finalize=True)) == 1


async def test_late_reply_to_a_finalize_answered_by_the_client_ends_nothing(cloud: FakeCloud) -> None:
    """The other documented answer to that second Finalize: an (empty) from_finalize reply
    after the first one's. It must not count as the end of the next utterance."""
    cloud.deepgram.script.extend(["Hello there.", "Second one."])
    cloud.deepgram.small_finalize_answered = True
    stream = await make(cloud.http_url, endpointing_ms=3000).open()
    await push(stream, speech(500) + silence(40))
    await stream.finalize()
    await push(stream, silence(100))
    await stream.finalize()
    got = await collect_until(stream, 2)
    await cloud.deepgram.journal.wait_for(
        lambda j: sum(1 for e in j.of("sent") if e.data.get("from_finalize")) == 2
    )  # both answered: the second reply was sent before anything of the next utterance
    await push(stream, speech(600) + silence(40))
    await stream.finalize()
    got += await collect_until(stream, 1)
    await stream.close()
    assert [t for t in got if t.end_of_utterance] == [
        Transcript("", True, True, 0.0),
        Transcript("Hello there.", True, True, 0.98),
        Transcript("Second one.", True, True, 0.98),
    ]
    assert cloud.deepgram.journal.count("finalize_unanswered") == 0


async def test_a_reconnect_owes_one_reply_for_all_the_lost_sockets_finalizes(cloud: FakeCloud) -> None:
    """Two Finalize messages owed when the socket drops: the new socket gets the replay with
    each one resent at its own place in it (review12: one after all of it, the other answered
    here at once, put an empty end AHEAD of the first part's words, and a turn waiting then
    took the earlier turn's words), so the replies come in audio order, each with its words.
    Before the reconnect logic, the client waited for two (and the turn stt_final_timeout_s)."""
    cloud.deepgram.script.extend(["First part.", "Second part."])
    cloud.deepgram.final_delay_s = 1.0  # both replies still queued when the socket drops
    first, second = speech(500) + silence(40), speech(300) + silence(40)
    cloud.deepgram.faults.drop_after = len(first + second) // 2 + 1  # mu-law: the next audio
    cloud.deepgram.faults.fault_times = 1
    stream = await make(cloud.http_url, endpointing_ms=3000).open()
    await push(stream, first)
    await stream.finalize()
    await push(stream, second)
    await stream.finalize()  # 340 ms after the first: a reply is owed for each
    await push(stream, silence(100))
    await cloud.deepgram.journal.wait_for(lambda j: j.count("dropped") == 1)
    got = await collect_until(stream, 2, limit_s=10.0)
    await stream.close()
    ends = [t for t in got if t.end_of_utterance]
    assert [t.text for t in ends] == ["First part.", "Second part."], ends
    assert stream.reconnects == 1
    finalizes = [e for e in cloud.deepgram.journal.of("control") if e.data["type"] == "Finalize"]
    assert len(finalizes) == 4  # two on the lost socket, each again in its place on the new one


async def test_empty_speech_final_in_the_gap_does_not_end_a_short_answer(cloud: FakeCloud) -> None:
    """Defect 3: an empty speech_final comes between the last speech and the final of "Yes.";
    reported as the end of the utterance, it made the engine drop the answer."""
    cloud.deepgram.script.append("Yes.")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(300) + silence(500))
    got = await collect_until(stream, 1)
    await stream.close()
    assert [t for t in got if t.end_of_utterance] == [Transcript("Yes.", True, True, 0.98)]
    assert _sent(cloud, is_final=True, speech_final=True, text="")  # the fake did send it


async def test_noise_gets_an_empty_speech_final_that_ends_nothing(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("Real words.")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(40) + silence(500))  # a click
    await cloud.deepgram.journal.wait_for(lambda j: bool(_sent(cloud, speech_final=True, text="")))
    await push(stream, speech(700) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    assert [t.text for t in got if t.end_of_utterance] == ["Real words."]


async def test_long_utterance_arrives_in_segments(cloud: FakeCloud) -> None:
    line = " ".join(f"word{i}" for i in range(24))
    cloud.deepgram.script.append(line)
    stream = await make(cloud.http_url).open()
    await push(stream, speech(7000) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    finals = [t for t in got if t.is_final]
    assert len(finals) >= 3 and not any(t.end_of_utterance for t in finals[:-1])
    assert " ".join(t.text for t in finals if t.text) == line
    # interims restart with each segment: after the first final, none repeats its words
    first_final = got.index(finals[0])
    later_interims = [t.text for t in got[first_final:] if not t.is_final]
    assert later_interims and not any(t.startswith("word0 ") for t in later_interims)


async def test_idle_socket_is_closed_1011_and_the_client_reopens_it(cloud: FakeCloud) -> None:
    """Documented: no audio and no KeepAlive for 10 s -> close 1011 NET-0001 (shortened)."""
    cloud.deepgram.idle_timeout_s = 0.3
    cloud.deepgram.script.append("Still here.")
    stream = await make(cloud.http_url, keepalive_s=5.0).open()  # a keepalive regression
    await cloud.deepgram.journal.wait_for(lambda j: j.count("idle_closed") >= 1)
    await cloud.deepgram.journal.wait_for(lambda j: j.count("request") >= 2)
    cloud.deepgram.idle_timeout_s = 10.0
    await push(stream, speech(600) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    assert got[-1].text == "Still here." and stream.reconnects >= 1


async def test_coded_error_close_reconnects_and_keeps_the_words(cloud: FakeCloud) -> None:
    cloud.deepgram.script.append("Keep these words.")
    cloud.deepgram.error_close = ErrorClose(1011, "NET-0000", after_bytes=4000)
    stream = await make(cloud.http_url).open()
    await push(stream, speech(800) + silence(400))
    got = await collect_until(stream, 1)
    await stream.close()
    assert [t.text for t in got if t.end_of_utterance] == ["Keep these words."]
    assert cloud.deepgram.journal.of("error_closed")[0].data == {"code": 1011, "reason": "NET-0000"}
    assert stream.reconnects == 1


async def test_data_error_close_1008_fails_without_replaying(cloud: FakeCloud) -> None:
    cloud.deepgram.error_close = ErrorClose(1008, "DATA-0000", after_bytes=1000, times=5)
    stream = await make(cloud.http_url).open()
    await push(stream, speech(600))
    try:
        async with asyncio.timeout(5):
            async for _ in stream.transcripts():
                pass
        raise AssertionError("no error")
    except ProviderError as exc:
        assert not exc.retryable and "DATA-0000" in str(exc)
        assert_clean(exc)
    await stream.close()
    assert cloud.deepgram.journal.count("request") == 1  # the same audio would be refused again


async def test_unknown_model_is_refused_at_the_handshake(cloud: FakeCloud) -> None:
    try:
        await make(cloud.http_url, model="nova-9").open()
        raise AssertionError("opened")
    except ProviderError as exc:
        assert not exc.retryable and "400" in str(exc)
        assert_clean(exc)
    assert cloud.deepgram.journal.of("rejected")[0].data == {"status": 400, "model": "nova-9"}


async def test_finals_come_after_a_processing_delay_by_default(cloud: FakeCloud) -> None:
    assert cloud.deepgram.final_delay_s == DEFAULT_FINAL_DELAY_S == (0.15, 0.30)
    cloud.deepgram.final_delay_s = 0.4
    cloud.deepgram.script.append("Slow final.")
    stream = await make(cloud.http_url).open()
    await push(stream, speech(600) + silence(300))  # the endpoint is in the last block
    pushed = time.monotonic()
    got = await collect_until(stream, 1)
    arrived = time.monotonic()
    await stream.close()
    assert got[-1].text == "Slow final."
    assert arrived - pushed >= 0.3  # a lower bound: a slow machine only makes it longer
