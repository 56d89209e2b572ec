"""Many simulated Plivo stream callers in one process at little CPU a stream: the scale-out
benches' load generator (``bench/stream_scaleout.py --callers lean``).

The same wire as the reference simulator (``stream_client.PlivoStreamClient``, which the tests
use and which this module reuses for the signed upgrade headers, the ``start`` event, the
stream id and ``extra_headers``): a WebSocket upgrade signed with X-Plivo-Signature-V3, ``start``,
a ``media`` event every 20 ms (base64 mu-law, sequenceNumber, chunk, Unix-ms timestamp; the
text is byte for byte what the simulator sends), ``playAudio`` buffered and played out at real
time as Plivo's buffer does, ``checkpoint`` -> ``playedStream`` once the audio before it has
played, ``clearAudio`` -> buffer dropped + ``clearedAudio``, pings answered, and a close 1000
when the caller hangs up. What it leaves out to be cheap: the network model (loopback as is),
DTMF, other formats than mu-law 8 kHz, and the PCM timeline of what was heard unless asked
(``keep_heard``: mu-law as played).

Where the simulator's CPU goes and what this does instead:
- one task and one timer per call, each waking every 20 ms, and a reader per socket woken per
  message -> one timer for the process, firing every 20 ms / ``SLOTS``; each call belongs to one
  slot (so the calls' sends stay spread over the 20 ms, as independent callers' are) and on its
  tick reads what its socket holds (one non-blocking recv: what the daemon sent since the last
  tick, which Plivo's buffer could not have played earlier anyway), plays a frame and sends its
  media and any playedStream in one send: ~2 system calls a call a tick, no epoll wake-ups;
- the websockets client (Python framing per frame) -> lean_ws.py: the tone's base64 payloads
  are masked once per process for each of the 4 offsets they can start at, the per-call tail
  once per call; per send only ~130 bytes (sequence number, timestamp, chunk) are masked;
- JSON parse + base64 + mu-law decode per playAudio -> the daemon's exact playAudio text is
  recognised by its prefix (anything else goes through json.loads, so another key order still
  works) and its payload base64-decoded in C and buffered as mu-law; a silent frame is told
  from audio by deleting the mu-law codes of zero (``bytes.translate``) instead of decoding.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from bridge.simulator.plivo import lean_ws
from bridge.simulator.plivo.lean_ws import CLOSE, PING, PONG, TEXT, HandshakeError, Masker, ProtocolViolation
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.stream_client import FRAME_S, PlivoStreamClient

FRAME_ULAW = 160  # 20 ms of mu-law at 8 kHz
SLOTS = 4  # the process timer fires every 20 ms / SLOTS
_RECV = 1 << 18
# mu-law codes that decode to sample 0 (0xFF and 0x7F): a frame of only these is silence
_ZERO_CODES = bytes(c for c in range(256) if ulaw_to_pcm(bytes([c])) == b"\x00\x00")
# the daemon's playAudio as bridge/stream/protocol.py:play_audio writes it for a mu-law stream
_PLAY_HEAD = (b'{"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, '
              b'"payload": "')
_PLAY_TAIL = b'"}}'
Masked = tuple[bytes, bytes, bytes, bytes]


class Clip:
    """The caller's audio (s16le 8 kHz) as 20 ms media payloads, base64'd and masked at the
    four phases once for the process; then ``tail_s`` of silence."""

    def __init__(self, pcm: bytes, tail_s: float, masker: Masker) -> None:
        ulaw = pcm_to_ulaw(pcm[: len(pcm) & ~1])
        n = -(-len(ulaw) // FRAME_ULAW)
        ulaw += b"\xff" * (n * FRAME_ULAW - len(ulaw))
        cache: dict[bytes, tuple[bytes, Masked]] = {}
        self.payloads: list[tuple[bytes, Masked]] = []
        frames = [ulaw[i : i + FRAME_ULAW] for i in range(0, len(ulaw), FRAME_ULAW)]
        for frame in [*frames, b"\xff" * FRAME_ULAW]:
            if frame not in cache:
                text = base64.b64encode(frame)
                cache[frame] = (text, masker.all_phases(text))
            self.payloads.append(cache[frame])
        self.silence = self.payloads.pop()
        self.audio_ticks = n
        self.ticks = n + int(tail_s / FRAME_S)


@dataclass
class LeanResult:
    call_uuid: str
    error: str = ""
    ended_by: str = ""  # "caller" | "bridge"
    close_code: int | None = None
    close_reason: str = ""
    bad_messages: int = 0
    received: Counter[str] = field(default_factory=Counter)
    agent_audio_ms: int = 0  # audio the bridge sent that was played (buffer underruns are not)
    echoed_ticks: int = 0  # ticks that played non-silent audio
    gap_ticks: int = 0  # ticks of nothing or silence between the first and the last non-silent one
    first_audio_tick: int | None = None
    played_checkpoints: int = 0
    clears: int = 0
    heard: bytes = b""  # mu-law as played, one 160-byte frame a tick (keep_heard only)


@dataclass
class LoadStats:
    """The load generator's own health: if its timer runs late, a gap may be its fault."""

    cpu_s: float = 0.0  # this process's CPU over the calls
    wall_s: float = 0.0
    late_ms: list[float] = field(default_factory=list)  # per timer firing, how late

    def late_p99_ms(self) -> float:
        if not self.late_ms:
            return 0.0
        ordered = sorted(self.late_ms)
        return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)


class LeanCaller:
    """One call: its WebSocket (a non-blocking socket) and Plivo's playback buffer. ``LoadPool``
    connects it and gives it its ticks."""

    def __init__(self, url: str, call_uuid: str, *, extra_headers: str = "", auth_token: str | None = None,
                 keep_heard: bool = False) -> None:
        # the reference simulator builds what Plivo sends on the upgrade and in start
        self.sim = PlivoStreamClient(url, call_uuid=call_uuid, extra_headers=extra_headers,
                                     auth_token=auth_token, network=NetworkProfile.none())
        self.url = url
        self.result = LeanResult(call_uuid)
        self.finished = False
        self._keep_heard = keep_heard
        self._heard = bytearray()
        self._sock: socket.socket | None = None
        self._masker = Masker(b"\0\0\0\0")  # set by upgrade()
        self._ws_key = lean_ws.new_key()
        self._inbox = bytearray()
        self._out = bytearray()  # what the socket did not take yet
        self._fragments: bytearray | None = None
        self._mid = b""  # the media event from after the sequence number up to the timestamp
        self._tail: Masked = (b"", b"", b"", b"")  # its end after the payload, masked per phase
        self._tail_len = 0
        self._checkpoint_head = b"\0"  # the daemon's checkpoint text up to the name (opened())
        self._buffer = bytearray()  # Plivo's playback buffer, mu-law
        self._marks: deque[tuple[int, str]] = deque()  # (buffer position, checkpoint name)
        self._queued = 0  # mu-law bytes ever buffered
        self._played = 0  # ... and taken out
        self._first_voiced = -1
        self._last_voiced = -1
        self.tick = 0
        self.clip: Clip | None = None  # what it plays (LoadPool.run)
        self.open = False  # upgraded, start sent: ticking
        self.hung_up = False

    # --- the connection ---------------------------------------------------------------------

    def request(self) -> bytes:
        """The upgrade request, signed as Plivo signs it (the simulator's headers)."""
        parts = urlsplit(self.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return lean_ws.upgrade_request(parts.netloc, path, self._ws_key, self.sim.upgrade_headers())

    async def upgrade(self, masker: Masker, timeout_s: float = 10.0) -> None:
        """Connect, upgrade and send ``start``; a failure is the call's ``error``."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80))
                await loop.sock_sendall(sock, self.request())
                while (end := self._inbox.find(b"\r\n\r\n")) < 0:
                    data = await loop.sock_recv(sock, 4096)
                    if not data:
                        raise HandshakeError("closed during the upgrade")
                    self._inbox += data
            lean_ws.check_upgrade(bytes(self._inbox[:end]), self._ws_key)
        except (OSError, TimeoutError, HandshakeError) as exc:
            self.fail(str(exc) if isinstance(exc, HandshakeError) else type(exc).__name__)
            return
        del self._inbox[: end + 4]
        self.opened(masker)

    def opened(self, masker: Masker) -> None:
        """Upgraded: send ``start`` and cut the media event around what changes per tick."""
        self._masker = masker
        sim = self.sim
        self._send(masker.frame(TEXT, sim.start_message().encode()))
        # PlivoStreamClient.media_message's text: head + seq + _mid + timestamp + ", chunk" .. payload + tail
        self._mid = (f', "streamId": {json.dumps(sim.stream_id)}, "media": {{"track": "inbound", '
                     f'"timestamp": "').encode()
        tail = f'"}}, "extra_headers": {json.dumps(sim.extra_headers)}}}'.encode()
        self._tail = masker.all_phases(tail)
        self._tail_len = len(tail)
        self._checkpoint_head = (f'{{"event": "checkpoint", "streamId": {json.dumps(sim.stream_id)}, '
                                 f'"name": "').encode()
        self.open = True

    def fail(self, why: str) -> None:
        self.result.error = why
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.open = False
        r = self.result
        if r.first_audio_tick is not None:
            r.gap_ticks = (self._last_voiced - self._first_voiced + 1) - r.echoed_ticks
        if self._keep_heard:
            r.heard = bytes(self._heard)
        if self._sock is not None:
            self._sock.close()

    def _send(self, data: bytes) -> None:
        if self._out:
            self._out += data
            data = bytes(self._out)
            self._out.clear()
        try:
            sent = self._sock.send(data) if self._sock is not None else len(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        if sent < len(data):
            self._out += data[sent:]

    def _lost(self) -> None:
        """The socket went without a close frame."""
        r = self.result
        r.ended_by = r.ended_by or "bridge"
        if r.close_code is None:
            r.close_code = 1006
        self._finish()

    def poll(self) -> None:
        """Read what the daemon sent since the last tick (one recv when it fits) and act on it."""
        sock = self._sock
        while sock is not None and not self.finished:
            try:
                data = sock.recv(_RECV)
            except BlockingIOError:
                break
            except OSError:
                self._lost()
                return
            if not data:
                self._lost()
                return
            self._inbox += data
            if len(data) < _RECV:
                break
        try:
            for fin, opcode, payload in lean_ws.read_frames(self._inbox):
                self._on_frame(fin, opcode, payload)
                if self.finished:
                    return
        except ProtocolViolation as exc:
            self.fail(str(exc))

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        r = self.result
        if opcode == CLOSE:
            if r.close_code is None:
                r.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                r.close_reason = payload[2:].decode("utf-8", "replace")
            if not self.hung_up:  # the daemon ended the call: answer its close
                r.ended_by = r.ended_by or "bridge"
                self._send(self._masker.frame(CLOSE, payload[:2]))
            self._finish()  # both closes crossed: done (the daemon drops TCP)
        elif opcode == PING:
            self._send(self._masker.frame(PONG, payload))
        elif opcode == PONG:
            pass
        elif opcode in (TEXT, 0x2):
            if fin:
                self._on_message(payload)
            else:
                self._fragments = bytearray(payload)
        elif opcode == 0x0 and self._fragments is not None:
            self._fragments += payload
            if fin:
                whole, self._fragments = bytes(self._fragments), None
                self._on_message(whole)
        else:
            r.bad_messages += 1

    # --- Plivo's side of the messages -----------------------------------------------------

    def _on_message(self, msg: bytes) -> None:
        r = self.result
        if msg.startswith(_PLAY_HEAD) and msg.endswith(_PLAY_TAIL):
            try:
                audio = binascii.a2b_base64(msg[len(_PLAY_HEAD) : -len(_PLAY_TAIL)], strict_mode=True)
            except (binascii.Error, ValueError):
                r.bad_messages += 1
                return
            r.received["playAudio"] += 1
            self._buffer += audio
            self._queued += len(audio)
            return
        if msg.startswith(self._checkpoint_head) and msg.endswith(b'"}') and b"\\" not in msg:
            # protocol.checkpoint's text for this stream, a plain name (escapes go to json.loads)
            r.received["checkpoint"] += 1
            self._marks.append((self._queued, msg[len(self._checkpoint_head) : -2].decode()))
            return
        try:
            data = json.loads(msg)
            event = data["event"]
        except (ValueError, KeyError, TypeError):
            r.bad_messages += 1
            return
        r.received[str(event)] += 1
        if event == "playAudio":  # another spelling of the same JSON
            media = data.get("media") or {}
            try:
                audio = base64.b64decode(media.get("payload", ""), validate=True)
            except (binascii.Error, ValueError):
                r.bad_messages += 1
                return
            if media.get("contentType") != "audio/x-mulaw" or media.get("sampleRate") != 8000:
                r.bad_messages += 1
            self._buffer += audio
            self._queued += len(audio)
        elif event == "checkpoint":
            self._marks.append((self._queued, str(data.get("name", ""))))
        elif event == "clearAudio":
            self._buffer.clear()
            self._marks.clear()
            self._queued = self._played
            r.clears += 1
            self._send(self._masker.frame(TEXT, json.dumps(
                {"event": "clearedAudio", "sequenceNumber": self._next_seq(),
                 "streamId": self.sim.stream_id}).encode()))

    def _next_seq(self) -> int:
        self.sim._seq += 1  # one numbering with the start event the simulator wrote
        return self.sim._seq

    # --- one 20 ms tick (LoadPool) ---------------------------------------------------------

    def on_tick(self, clip: Clip, stamp: bytes) -> None:
        """Read what came, send this tick's media, play one frame from the buffer, answer the
        checkpoints it passed (one send for all); after the clip, hang up."""
        self.poll()
        if self.finished or self.hung_up:
            return
        tick = self.tick
        if tick >= clip.ticks:
            self.hang_up()
            return
        self.tick = tick + 1
        masker = self._masker
        text, masked = clip.payloads[tick] if tick < clip.audio_ticks else clip.silence
        head = b"".join((b'{"event": "media", "sequenceNumber": ', str(self._next_seq()).encode(), self._mid,
                         stamp, b'", "chunk": ', str(tick + 1).encode(), b', "payload": "'))
        n_head, n_text = len(head), len(text)
        out = [lean_ws.header(TEXT, n_head + n_text + self._tail_len, masker.key),
               masker.mask(head), masked[n_head % 4], self._tail[(n_head + n_text) % 4]]
        # Plivo's buffer plays one frame
        r = self.result
        buf = self._buffer
        if buf:
            frame = buf[:FRAME_ULAW]
            del buf[:FRAME_ULAW]
            self._played += len(frame)
            r.agent_audio_ms += len(frame) // 8
            if self._keep_heard:
                self._heard += frame + b"\xff" * (FRAME_ULAW - len(frame))
            if frame.translate(None, _ZERO_CODES):
                if self._first_voiced < 0:
                    self._first_voiced = tick
                    r.first_audio_tick = tick
                self._last_voiced = tick
                r.echoed_ticks += 1
        elif self._keep_heard:
            self._heard += b"\xff" * FRAME_ULAW
        marks = self._marks
        while marks and marks[0][0] <= self._played:
            name = marks.popleft()[1]
            r.played_checkpoints += 1
            out.append(masker.frame(TEXT, b'{"event": "playedStream", "sequenceNumber": '
                                    + str(self._next_seq()).encode() + b', "streamId": '
                                    + json.dumps(self.sim.stream_id).encode() + b', "name": '
                                    + json.dumps(name).encode() + b"}"))
        self._send(b"".join(out))

    def hang_up(self) -> None:
        """Close 1000 "caller hung up"; the call is over when the daemon's close comes back."""
        if self.hung_up or self.finished:
            return
        self.hung_up = True
        self.result.ended_by = self.result.ended_by or "caller"
        self._send(self._masker.frame(CLOSE, (1000).to_bytes(2, "big") + b"caller hung up"))


class LoadPool:
    """The process's callers and its one timer: every 20 ms / SLOTS it ticks the calls of the
    slot that is due (and of any step it fell behind on: absolute deadlines, no drift)."""

    def __init__(self, pcm: bytes | Sequence[bytes], tail_s: float = 1.0,
                 masker: Masker | None = None) -> None:
        """``pcm``: the audio every caller plays, or several: caller i plays ``pcm[i % len(pcm)]``."""
        self.masker = masker or Masker()
        self.clips = [Clip(p, tail_s, self.masker) for p in ([pcm] if isinstance(pcm, bytes) else pcm)]
        self.clip = self.clips[0]
        self.slots: list[list[LeanCaller]] = [[] for _ in range(SLOTS)]
        self.stats = LoadStats()
        self._step = FRAME_S / SLOTS
        self._timer: asyncio.TimerHandle | None = None
        self._all_done: asyncio.Event | None = None
        self._callers: Sequence[LeanCaller] = ()

    async def run(self, callers: Sequence[LeanCaller], starts: Sequence[float], *,
                  close_timeout_s: float = 10.0) -> list[LeanResult]:
        """Dial each caller ``starts[i]`` seconds from now; until every call has ended (a call
        still open ``close_timeout_s`` after the last one's clip would have ended fails)."""
        loop = asyncio.get_running_loop()
        cpu0, t0 = time.process_time(), loop.time()
        self._callers = callers
        self._all_done = asyncio.Event()
        self._timer = loop.call_at(t0 + self._step, self._fire, t0, 1)
        for i, c in enumerate(callers):
            c.clip = self.clips[i % len(self.clips)]
        dials = [asyncio.create_task(self._dial(c, t0 + at, i % SLOTS))
                 for i, (c, at) in enumerate(zip(callers, starts, strict=True))]
        limit = max(starts, default=0.0) + max(c.ticks for c in self.clips) * FRAME_S + close_timeout_s
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*dials)
                if not all(c.finished for c in callers):
                    await self._all_done.wait()
        except TimeoutError:
            for c in callers:
                if not c.finished:
                    c.fail("timeout")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for task in dials:
                task.cancel()
            for c in callers:
                if not c.finished:
                    c.fail("cancelled")
        self.stats.cpu_s = time.process_time() - cpu0
        self.stats.wall_s = loop.time() - t0
        return [c.result for c in callers]

    async def _dial(self, caller: LeanCaller, at: float, slot: int) -> None:
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        await caller.upgrade(self.masker)
        if not caller.finished:
            self.slots[slot].append(caller)
        else:
            self._check_done()

    def _check_done(self) -> None:
        if self._all_done is not None and all(c.finished for c in self._callers):
            self._all_done.set()

    def _fire(self, t0: float, step: int) -> None:
        """Steps ``step``..now: each ticks its slot's calls."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.stats.late_ms.append(round((now - (t0 + step * self._step)) * 1000, 2))
        due = max(step, int((now - t0) / self._step))
        stamp = str(int(time.time() * 1000)).encode()  # media.timestamp: Unix epoch ms
        for s in range(step, due + 1):
            slot = self.slots[s % SLOTS]
            for caller in slot:
                caller.on_tick(caller.clip or self.clip, stamp)
            if any(c.finished for c in slot):
                slot[:] = [c for c in slot if not c.finished]
                self._check_done()
        self._timer = loop.call_at(t0 + (due + 1) * self._step, self._fire, t0, due + 1)

