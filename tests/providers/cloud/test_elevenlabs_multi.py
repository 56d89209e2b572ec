"""ElevenLabs multi-context WebSocket: the bridge's client (elevenlabs_multi.py) against the
fake server through the real websockets library. Sockets are counted by the fake's "request"
events (one per WebSocket handshake)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from bridge.providers.base import AudioChunk, ProviderError
from bridge.providers.tts import elevenlabs_multi
from bridge.providers.tts.elevenlabs_multi import ElevenLabsMultiTTS
from devkit.fakes import FakeCloud
from devkit.fakes.control import Journal
from devkit.fakes.tone import ToneSource

from .conftest import assert_clean, clauses, socket_tts, synth


def make(url: str, **kw: object) -> ElevenLabsMultiTTS:
    return socket_tts(ElevenLabsMultiTTS, url, **kw)


def tone(*texts: str) -> bytes:
    source = ToneSource("ulaw_8000")
    return b"".join(source.encode(t) for t in texts)


def audio(chunks: list[AudioChunk]) -> bytes:
    return b"".join(c.data for c in chunks)


def max_live(journal: Journal) -> int:
    """The most live contexts any socket held (the fake counts them at each context's start)."""
    return max(e.data["live"] for e in journal.of("init"))


async def cut_before_audio(tts: ElevenLabsMultiTTS, journal: Journal, text: str) -> None:
    """A reply cut by a barge-in once its clause reached the server, before any audio."""
    texts = journal.count("text")
    out = tts.synthesize(clauses(text))
    first = asyncio.ensure_future(anext(out))
    await journal.wait_for(lambda j: j.count("text") == texts + 1)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await out.aclose()


async def test_one_reply(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url)
    chunks = await synth(tts, clauses("Hello there.", "How are you?"))
    assert audio(chunks) == tone("Hello there. ", "How are you? ")
    assert {(c.encoding, c.sample_rate) for c in chunks} == {("ulaw", 8000)}
    journal = cloud.elevenlabs.journal
    request = journal.of("request")[0].data
    assert request["multi"] and request["output_format"] == "ulaw_8000"
    init = journal.of("init")[0].data["message"]
    cid = init["context_id"]
    assert init == {"text": " ", "context_id": cid, "generation_config": {"chunk_length_schedule": [50]}}
    assert [(e.data["text"], e.data["flush"]) for e in journal.of("text")] == [
        ("Hello there. ", True), ("How are you? ", True)]
    assert [e.data["context"] for e in journal.of("close_context")] == [cid]
    # the socket stays open for the next reply: no handshake on its path
    await synth(tts, clauses("Again."))
    assert journal.count("request") == 1 and tts.opened == 1
    assert journal.of("init")[1].data["context"] != cid  # a fresh context id
    await tts.aclose()
    await journal.wait_for(lambda j: j.count("socket_closed") == 1)


async def test_overlapping_replies_share_sockets_four_contexts_at_most(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.chunk_delay_s = 0.01  # replies overlap for a while
    tts = make(cloud.http_url)
    texts = [f"Reply number {i} to caller {i}." for i in range(10)]
    results = await asyncio.gather(*(synth(tts, clauses(t)) for t in texts))
    for text, chunks in zip(texts, results, strict=True):
        assert audio(chunks) == tone(text + " ")  # each reply gets its own audio, whole
    journal = cloud.elevenlabs.journal
    assert journal.count("ws_error") == 0 and max_live(journal) <= 4
    assert journal.count("request") == 3  # ten replies started together: ceil(10 / 4) sockets
    assert (tts.takes, tts.misses) == (10, 10)  # a cold start: every one waited for a handshake
    await tts.aclose()


async def test_keep_warm_opens_sockets_before_they_are_needed(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    journal = cloud.elevenlabs.journal
    assert journal.count("request") == 1
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 5.0  # the replies stay live

    async def until_released(release: asyncio.Event) -> AsyncIterator[str]:
        yield "Hold on."
        await release.wait()

    release = asyncio.Event()
    replies = []
    for i in range(3):
        replies.append(asyncio.ensure_future(synth(tts, until_released(release))))
        await journal.wait_for(lambda j, n=i + 1: j.count("text") == n)
    # fewer than 4 slots free from the first reply on: a second socket opened in the background
    await journal.wait_for(lambda j: j.count("request") == 2)
    assert tts.misses == 0 and tts.headroom == 4
    await asyncio.sleep(0.05)
    assert journal.count("request") == 2  # 3 used of 8: enough free, nothing more opened
    for reply in replies:
        reply.cancel()
    await asyncio.gather(*replies, return_exceptions=True)
    await tts.aclose()


async def test_barge_in_frees_the_slot_and_the_next_reply_uses_the_same_socket(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.chunk_delay_s = 0.02
    tts = make(cloud.http_url)
    async with contextlib.aclosing(tts.synthesize(clauses("A long sentence that takes a while."))) as out:
        await anext(out)
    journal = cloud.elevenlabs.journal
    cut = journal.of("init")[0].data["context"]
    await journal.wait_for(lambda j: j.count("close_context") == 1)
    assert journal.of("close_context")[0].data == {"context": cut, "known": True}
    chunks = await synth(tts, clauses("Next."))
    assert audio(chunks) == tone("Next. ")
    assert journal.count("request") == 1 and journal.count("socket_closed") == 0  # no new handshake
    await tts.aclose()


async def test_audio_of_an_abandoned_context_never_reaches_another_reply(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.chunk_delay_s = 0.01
    tts = make(cloud.http_url)
    long_text = "A long answer that keeps on talking for quite a while, on and on."
    async with contextlib.aclosing(tts.synthesize(clauses(long_text))) as out:
        await anext(out)
    # the cut reply's flushed audio is still coming on the shared socket while the next one speaks
    chunks = await synth(tts, clauses("Short."))
    assert audio(chunks) == tone("Short. ")
    journal = cloud.elevenlabs.journal
    await journal.wait_for(lambda j: j.count("completed") == 2)  # the cut one's isFinal came too
    assert journal.count("request") == 1
    await tts.aclose()


async def test_never_a_sixth_context_when_cut_contexts_are_not_final_yet(cloud: FakeCloud) -> None:
    """The livekit bug: contexts closed after a barge-in still count until their isFinal, so
    the client opens another socket rather than a 5th/6th context on the first."""
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 5.0  # the cut replies' audio is far off
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    for i in range(6):
        await cut_before_audio(tts, journal, f"Cut {i}.")
    await journal.wait_for(lambda j: j.count("close_context") == 6)
    assert journal.count("ws_error") == 0 and max_live(journal) == 4
    assert journal.count("request") == 2
    await tts.aclose()


async def test_server_error_fails_the_live_contexts_and_the_next_reply_reconnects(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    release = asyncio.Event()

    async def waiting() -> AsyncIterator[str]:
        await release.wait()
        yield "Never said."

    # the next socket sends this error frame at its first text, then closes 1008
    cloud.elevenlabs.ws_error = ("invalid_input_message", "Invalid message received.")
    quiet = asyncio.ensure_future(synth(tts, waiting()))  # on the socket, no text yet
    for _ in range(1000):  # its slot taken (the context opens at its first clause)
        if tts._sockets and tts._sockets[0].contexts:
            break
        await asyncio.sleep(0.01)
    assert tts._sockets[0].contexts
    with pytest.raises(ProviderError) as loud:
        await synth(tts, clauses("Hello."))
    with pytest.raises(ProviderError) as other:
        await quiet
    for error in (loud.value, other.value):
        assert_clean(error)
        assert error.retryable and "invalid_input_message" in str(error)
    await journal.wait_for(lambda j: j.count("ws_error") == 1)
    chunks = await synth(tts, clauses("After the error."))
    assert audio(chunks) == tone("After the error. ")
    assert journal.count("request") == 2  # the next reply opened a new socket
    await tts.aclose()


async def test_an_account_refusal_in_an_error_frame_is_fatal(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_error = ("quota_exceeded", "This request exceeds your quota.")
    tts = make(cloud.http_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, clauses("Hello."))
    assert not info.value.retryable and "quota" in str(info.value)
    await tts.aclose()


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (403, False), (429, True), (503, True)])
async def test_handshake_rejections(cloud: FakeCloud, status: int, retryable: bool) -> None:
    cloud.elevenlabs.ws_faults.status = status
    tts = make(cloud.http_url)
    with pytest.raises(ProviderError) as info:
        await synth(tts, clauses("Hello."))
    assert_clean(info.value)
    assert info.value.retryable is retryable and str(status) in str(info.value)
    await tts.aclose()


async def test_idle_socket_closed_by_the_server_is_replaced(cloud: FakeCloud) -> None:
    cloud.elevenlabs.timeout_scale = 0.002  # the 180 s asked -> 0.36 s
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    journal = cloud.elevenlabs.journal
    assert journal.of("request")[0].data["multi"]
    await journal.wait_for(lambda j: j.count("ws_error") == 1)
    assert journal.of("ws_error")[0].data == {"error": "input_timeout_exceeded"}
    old = tts._sockets[0]
    async with asyncio.timeout(5):
        await asyncio.gather(old.reader, return_exceptions=True)  # the client saw the close
    cloud.elevenlabs.timeout_scale = 1.0
    await tts.warmup()  # as on the next call offered: a fresh socket
    assert journal.count("request") == 2
    chunks = await synth(tts, clauses("Still works."))
    assert audio(chunks) == tone("Still works. ") and tts.misses == 0
    await tts.aclose()


async def test_a_socket_idle_too_long_is_retired_before_the_server_closes_it(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert elevenlabs_multi.IDLE_RETIRE_S < elevenlabs_multi.INACTIVITY_TIMEOUT_S <= 180
    tts = make(cloud.http_url)
    await synth(tts, clauses("First."))
    monkeypatch.setattr(elevenlabs_multi, "IDLE_RETIRE_S", 0.0)
    chunks = await synth(tts, clauses("Second."))
    assert audio(chunks) == tone("Second. ")
    journal = cloud.elevenlabs.journal
    assert journal.count("request") == 2
    await journal.wait_for(lambda j: j.count("socket_closed") == 1)  # the retired one, closed by us
    assert journal.of("socket_closed")[0].data == {"by": "client", "live": 0}
    await tts.aclose()


async def test_a_context_closed_by_the_server_fails_the_reply_not_the_socket(cloud: FakeCloud) -> None:
    """If the idle timeout ends contexts rather than sockets: a reply whose LLM stalled past it
    gets a ProviderError (not a truncated reply), and the socket serves the next reply."""
    cloud.elevenlabs.multi_idle_closes = "context"
    cloud.elevenlabs.timeout_scale = 0.002  # 180 s -> 0.36 s
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal

    async def stalled_llm() -> AsyncIterator[str]:
        yield "Let me check."
        for _ in range(500):  # until the client read the context's isFinal (bounded)
            if not tts._sockets[0].contexts:
                break
            await asyncio.sleep(0.01)
        yield "Found it."

    with pytest.raises(ProviderError, match="context closed by the server"):
        await synth(tts, stalled_llm())
    assert journal.count("context_timeout") == 1
    chunks = await synth(tts, clauses("Next one."))
    assert audio(chunks) == tone("Next one. ")
    assert journal.count("request") == 1
    await tts.aclose()


# review defect 2: a ProviderError from the LLM was taken for the socket's and swallowed
@pytest.mark.parametrize("error", [RuntimeError("llm died"), ProviderError("openai", "stream stalled")],
                         ids=["bug", "provider-error"])
async def test_text_source_failure_propagates_unchanged_and_closes_the_context(
        cloud: FakeCloud, error: Exception) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Hello."
        raise error

    tts = make(cloud.http_url)
    with pytest.raises(type(error), match=str(error)):
        await synth(tts, broken())
    journal = cloud.elevenlabs.journal
    await journal.wait_for(lambda j: j.count("close_context") == 1)
    assert journal.count("socket_closed") == 0
    await tts.aclose()


async def test_no_first_audio_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.elevenlabs.ws_faults.stall_after = 0
    tts = make(cloud.http_url, read_timeout_s=0.3)
    with pytest.raises(ProviderError, match=r"no first audio within 0\.3 s"):
        await synth(tts, clauses("Hello."))
    await tts.aclose()


async def test_closing_the_client_while_a_reply_waits_for_a_socket_fails_it(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url)
    # the handshake cannot finish before aclose: the reply waits on it
    reply = asyncio.ensure_future(synth(tts, clauses("Hello.")))
    await asyncio.sleep(0)
    await tts.aclose()
    with pytest.raises(ProviderError, match="client closed"):
        await reply


async def test_a_socket_whose_closed_context_is_never_confirmed_takes_no_new_context(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close whose isFinal is late past the grace: its slot may never free, so the socket is
    retired (closed once no reply reads it) and the next reply goes to a fresh one."""
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 5.0  # the cut reply's audio is far off
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    await cut_before_audio(tts, journal, "Cut.")
    await journal.wait_for(lambda j: j.count("close_context") == 1)
    monkeypatch.setattr(elevenlabs_multi, "ABANDON_GRACE_S", 0.0)
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 0.0
    chunks = await synth(tts, clauses("Fresh."))
    assert audio(chunks) == tone("Fresh. ")
    assert journal.count("request") == 2
    await journal.wait_for(lambda j: j.count("socket_closed") == 1)
    assert journal.of("socket_closed")[0].data == {"by": "client", "live": 1}
    await tts.aclose()


async def test_a_reply_cancelled_twice_still_closes_its_context(cloud: FakeCloud) -> None:
    """Call teardown may cancel a reply's task again while it cleans up: the context must be
    closed and abandoned all the same, or its slot stays taken by nobody."""
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 5.0
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    release = asyncio.Event()

    async def llm() -> AsyncIterator[str]:
        yield "Hello."
        await release.wait()

    async def consume() -> None:
        async for _ in tts.synthesize(llm()):
            pass

    task = asyncio.ensure_future(consume())
    await journal.wait_for(lambda j: j.count("text") == 1)
    task.cancel()
    await asyncio.sleep(0)  # its clean-up has started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await journal.wait_for(lambda j: j.count("close_context") == 1)
    assert tts._sockets[0].active == 0
    await tts.aclose()


async def test_a_reply_starting_as_a_handshake_finishes_gives_its_reservation_back(cloud: FakeCloud) -> None:
    # review defect 1: the handshake task ended but its done-callback had not run yet; a reply
    # joining it then left reserved=1 on the socket for good (one slot fewer, never retired)
    tts = make(cloud.http_url)
    warm = asyncio.ensure_future(tts.warmup())
    await asyncio.sleep(0)
    task = tts._pending[0].task
    for _ in range(10_000):  # resumes in the loop pass the task ended, before its callbacks
        if task.done():
            break
        await asyncio.sleep(0)
    assert task.done()
    assert audio(await synth(tts, clauses("Hello."))) == tone("Hello. ")
    await warm
    [sock] = tts._sockets
    assert (sock.reserved, len(sock.contexts), sock.used) == (0, 0, 0)
    await tts.aclose()


@pytest.mark.parametrize("bad", [["unexpected"], {"audio": 12, "contextId": "?"}])
async def test_a_malformed_frame_fails_the_socket_and_the_next_reply_opens_another(bad: object) -> None:
    # review defect 3: the reader died on it silently; the socket still looked open
    import base64
    import json

    from websockets.asyncio.server import ServerConnection, serve

    sent_bad = False

    async def handler(ws: ServerConnection) -> None:
        nonlocal sent_bad
        async for raw in ws:
            m = json.loads(raw)
            cid = m.get("context_id")
            if m.get("flush"):
                if not sent_bad:
                    sent_bad = True
                    await ws.send(json.dumps(bad if isinstance(bad, list) else {**bad, "contextId": cid}))
                chunk = base64.b64encode(b"\xff" * 800).decode()
                await ws.send(json.dumps({"audio": chunk, "contextId": cid}))
            if m.get("close_context"):
                await ws.send(json.dumps({"isFinal": True, "contextId": cid}))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        tts = make(f"http://127.0.0.1:{port}", read_timeout_s=30.0)
        with pytest.raises(ProviderError, match="bad message") as err:
            await synth(tts, clauses("Reply one."))
        assert err.value.retryable
        [sock] = tts._sockets
        assert not sock.open
        assert audio(await synth(tts, clauses("Reply two."))) == b"\xff" * 800
        assert tts.opened == 2
        await tts.aclose()


@pytest.mark.parametrize("confirmed", [True, False])
async def test_replies_cut_before_their_first_clause_open_no_context(
    cloud: FakeCloud, confirmed: bool
) -> None:
    # review defect 4: the context was opened at reply start; whether the service confirms the
    # close of a context that never got text is undocumented (False: the fake never does)
    cloud.elevenlabs.multi_empty_close_final = confirmed
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    never = asyncio.Event()

    async def thinking() -> AsyncIterator[str]:
        await never.wait()  # the LLM's first token never comes: barge-in meanwhile
        yield "Never said."

    for _ in range(6):  # more than a socket's slots
        out = tts.synthesize(thinking())
        first = asyncio.ensure_future(anext(out))
        for _ in range(1000):
            if tts._sockets and tts._sockets[0].contexts:
                break
            await asyncio.sleep(0.01)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await out.aclose()
    [sock] = tts._sockets
    assert (sock.used, sock.open) == (0, True)
    assert journal.count("init") == 0 and journal.count("close_context") == 0
    assert audio(await synth(tts, clauses("Hello."))) == tone("Hello. ")
    assert journal.count("request") == 1 and tts.opened == 1
    await tts.aclose()


async def test_an_unconfirmed_close_of_an_empty_context_retires_the_socket(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fake's other reading, met by a client that does open an empty context (init, then
    # close): the slot stays used; after ABANDON_GRACE_S the socket takes no new context
    cloud.elevenlabs.multi_empty_close_final = False
    monkeypatch.setattr(elevenlabs_multi, "ABANDON_GRACE_S", 0.0)
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    await tts.warmup()
    [sock] = tts._sockets
    ctx = sock.add("empty-1")
    await sock.send({"text": " ", "context_id": "empty-1"})
    ctx.abandoned = True
    ctx.closed_at = 0.0  # closed long ago
    await sock.send({"context_id": "empty-1", "close_context": True})
    await journal.wait_for(lambda j: j.count("close_unconfirmed") == 1)
    assert sock.used == 1  # never confirmed: still counted
    assert audio(await synth(tts, clauses("Hello."))) == tone("Hello. ")
    assert journal.count("request") == 2  # the reply went to a fresh socket
    assert sock not in tts._sockets  # retired and, read by nobody, closed
    await tts.aclose()


async def test_after_aclose_no_socket_is_opened(cloud: FakeCloud) -> None:
    # review defect 5: synthesize()/warmup() after aclose() opened a socket nobody closed
    tts = make(cloud.http_url)
    await tts.warmup()
    await tts.aclose()
    with pytest.raises(ProviderError, match="client closed") as err:
        await tts.warmup()
    assert not err.value.retryable
    with pytest.raises(ProviderError, match="client closed"):
        await synth(tts, clauses("Hello."))
    assert cloud.elevenlabs.journal.count("request") == 1 and tts.opened == 1


async def test_a_socket_failure_raises_a_fresh_error_in_each_reply(cloud: FakeCloud) -> None:
    # review defect 6: one instance raised in every reply gathered all their tracebacks
    tts = make(cloud.http_url)
    journal = cloud.elevenlabs.journal
    release = asyncio.Event()

    async def waiting() -> AsyncIterator[str]:
        yield "First."
        await release.wait()
        yield "Never said."

    replies = [asyncio.ensure_future(synth(tts, waiting())) for _ in range(3)]
    await journal.wait_for(lambda j: j.count("first_byte") == 3)
    [sock] = tts._sockets
    await sock.ws.close()  # the socket drops under three live replies
    errors = await asyncio.gather(*replies, return_exceptions=True)
    assert all(isinstance(e, ProviderError) for e in errors)
    assert len({id(e) for e in errors}) == 3
    await tts.aclose()
