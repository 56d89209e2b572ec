"""ElevenLabs stream-input: the spare sockets one client keeps for every call of the process.
Replies that start together (more than one within a handshake's time) must not all wait for
a handshake: each reply that found no spare while another reply was under way and a spare
on its way grows the pool by one, up to max_spares; a cold start or replies one after the
other (one call's reply started over) do not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.protocol import State

from bridge.providers.base import ProviderError
from devkit.fakes import FakeCloud

from .conftest import clauses
from .test_elevenlabs_ws import make, synth


async def test_replies_starting_together_grow_the_spare_pool(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, keep_warm=True, max_spares=3)
    await tts.warmup()
    # three replies at once: one takes the spare, two connect on their own path (misses)
    await asyncio.gather(*(synth(tts, clauses(f"Reply {i}.")) for i in range(3)))
    assert (tts.takes, tts.misses) == (3, 2)
    journal = cloud.elevenlabs.journal
    # the pool refills to three spares (1 + one per miss), opened in the background
    await journal.wait_for(lambda j: j.count("request") == 3 + 3)
    await asyncio.gather(*(synth(tts, clauses(f"Again {i}.")) for i in range(3)))
    assert (tts.takes, tts.misses) == (6, 2)  # the next three replies all found a spare
    assert journal.count("completed") == 6
    await journal.wait_for(lambda j: j.count("request") == 6 + 3)  # each one replaced
    await tts.aclose()
    await journal.wait_for(lambda j: j.count("aborted") == 3)  # the spares, closed


async def test_the_pool_never_holds_more_than_max_spares(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, keep_warm=True, max_spares=2)
    await asyncio.gather(*(synth(tts, clauses(f"Reply {i}.")) for i in range(4)))  # no warm-up
    assert tts.misses == 4
    journal = cloud.elevenlabs.journal
    await journal.wait_for(lambda j: j.count("request") == 4 + 2)
    await asyncio.sleep(0.05)  # nothing more is opened
    assert journal.count("request") == 6
    await tts.aclose()
    await journal.wait_for(lambda j: j.count("aborted") == 2)


async def test_without_keep_warm_no_spare_is_opened(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, keep_warm=False)
    await asyncio.gather(*(synth(tts, clauses(f"Reply {i}.")) for i in range(2)))
    await asyncio.sleep(0.05)
    assert cloud.elevenlabs.journal.count("request") == 2
    assert tts.misses == 0  # not a miss: nothing was kept to be found
    await tts.aclose()


async def test_a_cold_start_keeps_a_single_spare(cloud: FakeCloud) -> None:
    tts = make(cloud.http_url, keep_warm=True)
    await synth(tts, clauses("First."))  # no warm-up: this reply connects, nothing was on its way
    journal = cloud.elevenlabs.journal
    await journal.wait_for(lambda j: j.count("request") == 2)  # its socket and one spare
    await synth(tts, clauses("Second."))  # takes the spare
    await journal.wait_for(lambda j: j.count("request") == 3)  # replaced by one
    await asyncio.sleep(0.05)
    assert journal.count("request") == 3
    assert (tts.takes, tts.misses) == (2, 1)
    await tts.aclose()


async def test_replies_one_after_the_other_keep_a_single_spare(cloud: FakeCloud) -> None:
    """A call's reply cancelled and started over at once (preemption) finds the spare's
    replacement still on its way: one reply at a time is not a reason to hold more sockets."""
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    for i in range(3):
        await synth(tts, clauses(f"Reply {i}."))  # the refill may or may not be back in time
    journal = cloud.elevenlabs.journal
    await journal.wait_for(lambda j: j.count("request") == 1 + 3)
    await asyncio.sleep(0.05)
    assert journal.count("request") == 4  # one spare replaced per reply, never more
    await tts.aclose()


class _StuckSocket:
    """A spare the server stopped answering: its close handshake never completes."""

    def __init__(self) -> None:
        from websockets.protocol import State

        self.state = State.OPEN
        self.close_started = asyncio.Event()

    async def close(self) -> None:
        self.close_started.set()
        await asyncio.Event().wait()


async def test_a_reply_does_not_wait_for_stale_spares_to_close(cloud: FakeCloud) -> None:
    """After an idle spell every spare is too old: the reply connects (or takes a fresh one)
    at once and the old ones are closed in the background, not one by one on its path."""
    from bridge.providers.tts import elevenlabs_ws

    tts = make(cloud.http_url, keep_warm=True)
    stale = [_StuckSocket() for _ in range(3)]
    too_old = -2 * elevenlabs_ws.SPARE_MAX_AGE_S
    tts._spares.extend((ws, too_old) for ws in stale)  # type: ignore[misc]
    reply = asyncio.ensure_future(synth(tts, clauses("After a quiet spell.")))
    done, _ = await asyncio.wait({reply}, timeout=10)
    assert reply in done  # it did not wait for the stuck closes
    reply.result()
    for ws in stale:
        await asyncio.wait_for(ws.close_started.wait(), 10)  # each one's close was begun
    await tts.aclose()  # returns though those closes never complete


async def test_spares_that_aged_out_unused_shrink_the_pool(cloud: FakeCloud) -> None:
    """A pool grown at a busy hour does not keep reopening its sockets through a quiet one:
    each spare that aged out unused lowers the number kept (never below one)."""
    from bridge.providers.tts import elevenlabs_ws

    tts = make(cloud.http_url, keep_warm=True, max_spares=3)
    await tts.warmup()
    await asyncio.gather(*(synth(tts, clauses(f"Reply {i}.")) for i in range(3)))
    journal = cloud.elevenlabs.journal
    await journal.wait_for(lambda j: j.count("request") == 3 + 3)  # the pool grew to three
    aged = [(ws, opened - 2 * elevenlabs_ws.SPARE_MAX_AGE_S) for ws, opened in tts._spares]
    tts._spares.clear()
    tts._spares.extend(aged)  # a quiet spell: all three too old now
    await synth(tts, clauses("After the quiet spell."))
    await journal.wait_for(lambda j: j.count("request") == 6 + 1 + 1)  # its socket, one spare
    await asyncio.sleep(0.05)
    assert journal.count("request") == 8
    await tts.aclose()


class _GatedConnects:
    """The client's handshakes, numbered; those listed wait at their own gate (a slow network),
    the others go through at once."""

    def __init__(self, tts: object, gated: tuple[int, ...]) -> None:
        self.gates = {n: asyncio.Event() for n in gated}
        self.started = 0
        self._connect = tts._connect  # type: ignore[attr-defined]
        tts._connect = self  # type: ignore[attr-defined]

    async def __call__(self) -> object:
        self.started += 1
        gate = self.gates.get(self.started)
        if gate is not None:
            await gate.wait()
        return await self._connect()


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(1000):  # bounded: 10 s
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_a_reply_takes_the_spare_whose_handshake_is_under_way_when_it_comes_first(
    cloud: FakeCloud,
) -> None:
    """A reply started over at once (v1 preemption: the held reply dropped, a new one begun)
    finds the spare it replaces still in its handshake. It opened its own socket on the
    caller's time even when the spare's handshake, begun earlier, was done first. Now it takes
    whichever comes first; the other socket joins the pool (no handshake wasted)."""
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    gates = _GatedConnects(tts, gated=(1, 2))  # from here: 1 the refill, 2 the next reply's own
    await synth(tts, clauses("Held reply."))  # takes the spare; the refill (1) starts, held
    again = asyncio.ensure_future(synth(tts, clauses("Started over.")))
    await _until(lambda: gates.started == 2)  # no spare: its own handshake (2) is under way too
    gates.gates[1].set()  # the refill's handshake completes first
    done, _ = await asyncio.wait({again}, timeout=10)
    assert again in done, "the reply waited for its own handshake"
    assert again.result()
    assert (tts.takes, tts.misses, tts.refill_hits) == (2, 1, 1)
    gates.gates[2].set()  # its own socket, opened for nothing, is kept as the spare
    await _until(lambda: len(tts._spares) == 1)
    await asyncio.sleep(0.05)
    assert gates.started == 2  # and no further handshake was needed
    await synth(tts, clauses("Next."))  # takes it
    assert (tts.takes, tts.misses) == (3, 1)
    await tts.aclose()


async def test_a_reply_whose_own_handshake_comes_first_does_not_wait_for_the_refill(
    cloud: FakeCloud,
) -> None:
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    gates = _GatedConnects(tts, gated=(1,))  # the refill is slow; the reply's own is not
    await synth(tts, clauses("Held reply."))
    await synth(tts, clauses("Started over."))  # on its own socket, not held by the refill
    assert (tts.takes, tts.misses, tts.refill_hits) == (2, 1, 0)
    gates.gates[1].set()
    await _until(lambda: len(tts._spares) == 1)  # the refill still ends in the pool
    await tts.aclose()


async def test_a_reply_cut_while_waiting_for_a_socket_leaves_both_to_the_pool(cloud: FakeCloud) -> None:
    """Barge-in while the reply waits for the spare's handshake and its own: neither socket is
    lost or left open unowned; both end in the pool (up to what it keeps) or closed."""
    tts = make(cloud.http_url, keep_warm=True, max_spares=2)
    await tts.warmup()
    gates = _GatedConnects(tts, gated=(1, 2))
    await synth(tts, clauses("Held reply."))
    cut = asyncio.ensure_future(synth(tts, clauses("Cut.")))
    await _until(lambda: gates.started == 2)
    cut.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cut
    gates.gates[1].set()
    gates.gates[2].set()
    await _until(lambda: len(tts._spares) == 2)
    assert not tts._waiters and tts._adopting == 0
    await tts.aclose()
    await cloud.elevenlabs.journal.wait_for(lambda j: j.count("aborted") == 2)  # both closed by aclose


async def test_closing_the_client_while_a_reply_waits_for_a_socket_fails_it_and_leaves_none_open(
    cloud: FakeCloud,
) -> None:
    """aclose() (the process shutting down) while a reply waits for the spare's handshake and
    its own: the reply must fail as a provider failure (not asyncio's InvalidStateError from
    reading a handshake still under way), and its own handshake must not open a socket that
    nobody owns or closes."""
    tts = make(cloud.http_url, keep_warm=True)
    await tts.warmup()
    opened: list[object] = []
    gates = _GatedConnects(tts, gated=(1, 2))
    inner = tts._connect

    async def recording() -> object:
        ws = await inner()
        opened.append(ws)
        return ws

    tts._connect = recording  # type: ignore[method-assign]
    await synth(tts, clauses("Held reply."))  # takes the spare; the refill (1) is held
    waiting = asyncio.ensure_future(synth(tts, clauses("Started over.")))
    await _until(lambda: gates.started == 2)  # its own handshake (2) is held too
    await tts.aclose()
    done, _ = await asyncio.wait({waiting}, timeout=10)
    assert waiting in done
    assert isinstance(waiting.exception(), ProviderError), repr(waiting.exception())
    gates.gates[2].set()  # a handshake still running now would open a socket after aclose
    await asyncio.sleep(0.2)
    await _until(lambda: all(ws.state is State.CLOSED for ws in opened))  # type: ignore[attr-defined]
