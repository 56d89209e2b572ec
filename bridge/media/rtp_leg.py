"""The RTP leg: one call's G.711 audio over RTP, implementing bridge.leg.AudioLeg.

Lifecycle (driven by the daemon): ``open`` binds an RTP/RTCP port pair before the SIP answer
(the port goes into the SDP); ``start`` with the negotiated MediaParams on ACK; ``update`` on
re-INVITE (hold/resume, new remote); ``close`` when the call ends. The leg never ends the SIP
dialog: the agent's hang-up and the RTP timeout end the leg with a LegEnded (``by`` agent /
media) and the call's supervisor, which waits on ``finished()``, sends the BYE.

All the media work happens on the process-wide 20 ms clock (bridge.media.media_clock): on each
tick the leg reads the packets the clock found waiting on its socket, sends at most one frame
(DTMF or agent audio), pulls one caller frame from the jitter buffer, writes the recording;
once a second it checks the RTP timeout, flushes metrics and (every 5 s) sends RTCP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bridge.callmodel import MediaParams
from bridge.leg import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    AudioFrame,
    DtmfDigit,
    EndedBy,
    EventConsumer,
    EventFeed,
    LegEnded,
    LegEvent,
)
from bridge.media import udp
from bridge.media.codec import DECODERS, ENCODERS, Passthrough, decode_ulaw_keeping
from bridge.media.dtmf import DtmfReceiver, DtmfSender, normalize_digits
from bridge.media.events import EventChannel
from bridge.media.jitter_buffer import PlayoutBuffer
from bridge.media.listen_buffer import ListenBuffer
from bridge.media.listen_recording import ListenRecording
from bridge.media.media_clock import MediaClock, clock_for_loop
from bridge.media.playback import PlaybackQueue
from bridge.media.ports import PortAllocator, PortPair
from bridge.media.recording import CallRecorder, recording_path, write_subject
from bridge.media.rtcp import ReportBuilder
from bridge.media.rtp_packet import RtpParseError, is_rtcp, parse_rtp
from bridge.media.rx_stats import ReceiveStats
from bridge.metrics import DTMF_EVENTS, RTP_LOST, RTP_PACKETS, RTP_REJECTED
from bridge.settings.media import MediaSettings

log = logging.getLogger(__name__)

_RTP_IN = RTP_PACKETS.labels("in")
_RTP_OUT = RTP_PACKETS.labels("out")
_RTP_FOREIGN = RTP_REJECTED.labels("foreign-source")
_DTMF_OUT = DTMF_EVENTS.labels("out", "rfc4733")
_SILENCE = bytes(FRAME_BYTES)
_HOUSEKEEPING_TICKS = 50  # once a second
_RTCP_TICKS = 250  # every 5 s
_MAX_RTCP_PER_SECOND = 32
_SEQ_TS_SSRC = struct.Struct("!HII")
_HEADER = struct.Struct("!BBHII")
_NO_ADDRESS = ("0.0.0.0", "::", "")
_MAX_MISORDER = 100  # RFC 3550 A.1
_STRAGGLER_S = 1.0  # a packet of the SSRC left this long ago is a switch back, not a straggler
# a straggler was sent before the change: its timestamp is at most a few packets past that
# stream's newest; a sender switching back after a pause is past it by the pause
_STRAGGLER_AHEAD = 5 * FRAME_SAMPLES

TransferCallback = Callable[[str], Awaitable[bool]]

# A caller frame made once per call every 20 ms: AudioFrame is a frozen dataclass, whose
# __init__ is a Python call setting each field through object.__setattr__; its slots'
# descriptors set the same fields directly (tests/media/test_rtp_leg_fast_path.py checks
# the frame is equal to AudioFrame(pcm, t)).
_new_frame = AudioFrame.__new__
_set_frame_pcm = AudioFrame.pcm.__set__  # type: ignore[attr-defined,misc]
_set_frame_t = AudioFrame.t.__set__  # type: ignore[attr-defined,misc]

_COUNTERS = (
    "packets_in", "bytes_in", "packets_out", "bytes_out", "dtmf_in", "dtmf_out", "rtcp_in", "rtcp_out",
    "malformed", "ignored", "foreign", "frames_in", "filler_frames", "latches", "send_errors",
)


class RtpLeg:
    """One call's RTP audio. Create with ``await RtpLeg.open(...)``."""

    # Slots: an instance has ~60 attributes, past the 30 of CPython's shared-key instance
    # layout, so without them each attribute read per packet was a dict lookup with a hint
    # (callgrind: -4 % instructions per call-tick). ``__dict__`` stays for tests that
    # replace a method on one leg.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_agent_pcm",
        "_bytes_in",
        "_bytes_out",
        "_channel",
        "_clock",
        "_closed",
        "_decode_fast",
        "_dtmf_pt",
        "_dtmf_rx",
        "_dtmf_tx",
        "_early_pcm",
        "_encode",
        "_ending",
        "_fast_keeps",
        "_fast_pt",
        "_flushed",
        "_frames_in",
        "_keep_pt",
        "_last_rx",
        "_latch_until",
        "_listen_rec",
        "_listening",
        "_loop",
        "_media",
        "_n",
        "_packets_in",
        "_packets_out",
        "_pair",
        "_passthrough",
        "_paused",
        "_playout",
        "_ports",
        "_pt",
        "_queue",
        "_recorder",
        "_remote",
        "_remote_rtcp",
        "_reports",
        "_rx",
        "_rx_flowing",
        "_rx_left",
        "_rx_on",
        "_rx_ssrc",
        "_sdp_remote",
        "_send_hold",
        "_seq",
        "_settings",
        "_signalling_ip",
        "_sock",
        "_source",
        "_ssrc",
        "_started",
        "_talking",
        "_tick_no",
        "_ticking",
        "_ts",
        "_tx_on",
        "call_id",
        "local_port",
        "on_transfer",
        "subject",
    )

    def __init__(
        self,
        call_id: str,
        pair: PortPair,
        ports: PortAllocator,
        settings: MediaSettings,
        loop: asyncio.AbstractEventLoop,
        signalling_ip: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.subject = ""  # the person's pseudonymous id, written beside the recording
        self.local_port = pair.port
        # The owner's transfer service (REFER / Plivo REST): a request with an answer, which
        # the agent awaits; hang-ups are not asked for but reported (finished()).
        self.on_transfer: TransferCallback | None = None
        self._pair = pair
        self._sock = pair.rtp
        self._ports = ports
        self._settings = settings
        self._loop = loop
        self._clock: MediaClock = clock_for_loop(loop)
        self._channel = EventChannel()
        self._queue = PlaybackQueue(self._channel.put)
        self._playout: PlayoutBuffer | ListenBuffer = PlayoutBuffer(target_ms=settings.jitter_buffer_ms)
        self._listen_rec: ListenRecording | None = None  # listen mode: the recording's caller frames
        # self._playout when it is a ListenBuffer (on_tick's test, without isinstance)
        self._listening: ListenBuffer | None = None
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_tx = DtmfSender()
        self._rx = ReceiveStats()
        self._recorder: CallRecorder | None = None
        # negotiated media
        self._media: MediaParams | None = None
        self._encode = ENCODERS["PCMU"]
        self._passthrough = Passthrough()  # caller payloads in our codec, by decoded frame
        self._pt = 0
        self._keep_pt = -1  # listen mode with PCMU: 0, its frames keep their payload (g711.UlawPcm)
        self._fast_pt = -1  # the payload type on_readable's usual-packet path takes (-1: none)
        self._decode_fast = self._passthrough.decoder(0)
        self._fast_keeps = False  # that path's frames keep their payload (listen mode, PCMU)
        self._dtmf_pt: int | None = None
        self._tx_on = False
        self._rx_on = False
        self._sdp_remote: tuple[str, int] | None = None
        self._remote: tuple[str, int] | None = None
        self._remote_rtcp: tuple[str, int] | None = None
        # send state: random SSRC, sequence and timestamp origin (RFC 3550 §5.1)
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._talking = False
        self._early_pcm: bytes | None = None  # a talkspurt's first frame, sent ahead of its tick
        self._paused = False  # pause(): agent audio held in the queue, not sent
        self._agent_pcm: bytes | None = None  # what this tick sent (for the recording)
        self._send_hold = False  # on_send's hold on the events, released in on_tick
        self._reports = ReportBuilder(self._ssrc)
        # receive state
        self._rx_ssrc: int | None = None
        # the SSRC left at the last change, its newest sequence number and the change's time:
        # its newest timestamp (None: no audio of it buffered); its reordered stragglers are
        # dropped, not taken for a change back (_straggler)
        self._rx_left: tuple[int, int, int | None, float] | None = None
        self._rx_flowing = False  # caller audio seen since start/resume: keep the frame cadence
        self._last_rx = 0.0
        self._source: tuple[str, int] | None = None  # where the caller's packets come from
        self._signalling_ip = signalling_ip  # the INVITE's source: a NATed caller's public IP
        self._latch_until = 0.0  # symmetric RTP may latch onto a new source until then
        # lifecycle
        self._started = False
        self._ticking = False
        self._ending = False
        self._closed = False
        self._tick_no = random.randrange(_RTCP_TICKS)  # spreads housekeeping over the ticks
        # counters (stats()); the Prometheus ones are flushed once a second
        self._n: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        # the counters every packet moves, as attributes (a dict item costs more per update);
        # stats() and counters() put them in with the rest
        self._packets_in = self._bytes_in = self._packets_out = self._bytes_out = self._frames_in = 0
        self._flushed = {"in": 0, "out": 0, "lost": 0, "foreign": 0}

    # -- construction ----------------------------------------------------------------------
    @classmethod
    async def open(
        cls, call_id: str, bind_host: str, ports: PortAllocator, settings: MediaSettings,
        signalling_ip: str | None = None,
    ) -> RtpLeg:
        """Bind a port pair from ``ports`` on ``bind_host``. Raises PortsExhausted when none is
        free. Packets that arrive before ``start`` wait in the socket (the caller's first
        words after our 200 OK are not lost). ``signalling_ip``: where the call's SIP came
        from, the other address a NATed caller's RTP may come from."""
        return cls(call_id, ports.allocate(bind_host), ports, settings, asyncio.get_running_loop(),
                   signalling_ip)

    # -- control from the daemon -----------------------------------------------------------
    def start(self, media: MediaParams) -> None:
        """Begin sending/receiving with the negotiated media (on ACK)."""
        if self._ending:
            return
        self._apply(media)
        if self._started:
            return
        self._started = True
        self._last_rx = self._loop.time()
        if self._settings.recordings_dir:
            try:
                path = recording_path(self._settings.recordings_dir, self.call_id)
                self._recorder = CallRecorder(path)
                write_subject(path, self.subject)
                if isinstance(self._playout, ListenBuffer):
                    self._listen_rec = ListenRecording(self._recorder)
            except OSError as exc:
                log.error("recording disabled for this call: %s", exc, extra={"call_id": self.call_id})
        self._ticking = True
        self._clock.add(self, self._sock.fileno())

    def update(self, media: MediaParams) -> None:
        """Re-INVITE/UPDATE: new remote, codec or direction (hold/resume)."""
        if self._ending:
            return
        if not self._started:
            self.start(media)
            return
        self._apply(media)

    def _apply(self, media: MediaParams) -> None:
        old = self._media
        self._media = media
        self._encode = ENCODERS[media.codec]
        if media.payload_type != self._pt:
            self._passthrough.clear()  # the kept payloads are of the old codec
        self._pt = media.payload_type
        self._dtmf_pt = media.dtmf_payload_type
        remote: tuple[str, int] | None = (media.remote_host, media.remote_port)
        if media.remote_host in _NO_ADDRESS or media.remote_port == 0:
            remote = None  # RFC 2543 style hold: nowhere to send
        if remote != self._sdp_remote or old is None:
            self._sdp_remote = self._remote = remote
            self._remote_rtcp = (remote[0], remote[1] + 1) if remote else None
            self._source = None  # a new remote (answer or re-INVITE): latch afresh, briefly
            self._latch_until = self._loop.time() + self._settings.rtp_latch_window_s
        self._tx_on = media.direction in ("sendrecv", "sendonly")
        rx_on = media.direction in ("sendrecv", "recvonly")
        if rx_on != self._rx_on or old is None:
            # Hold or resume: the caller's stream restarts; so does the inactivity timer.
            self._playout.reset()
            self._rx_flowing = False
            self._last_rx = self._loop.time()
        self._rx_on = rx_on
        self._set_keep_pt()
        if old is not None and old != media:
            log.info(
                "media updated",
                extra={"call_id": self.call_id, "codec": media.codec, "direction": media.direction},
            )

    def listen_on_arrival(self) -> None:
        """The caller's audio goes to a machine listener (the conversation agent's VAD and
        STT), not to a person: each frame as soon as it is there, no playout depth (that
        depth delayed the barge-in pause by 60-100 ms; listen_buffer.py). jitter_buffer_ms
        stays the longest wait for a missing packet."""
        if not isinstance(self._playout, ListenBuffer):
            self._playout = ListenBuffer(max_wait_ms=self._settings.jitter_buffer_ms)
            self._listening = self._playout
            if self._recorder is not None:
                self._listen_rec = ListenRecording(self._recorder)
            self._set_keep_pt()

    def _set_keep_pt(self) -> None:
        """Listen mode on PCMU: caller frames keep the payload they came in (g711.UlawPcm), so
        an STT fed mu-law (Deepgram) sends the caller's bytes as received, without a decode
        here being encoded again there. A frame made here (concealment, filler, a frame cut
        from packets of another size) is plain PCM. Not in echo mode: Passthrough does that
        without a GC-tracked object per frame."""
        media = self._media
        listen = isinstance(self._playout, ListenBuffer)
        self._keep_pt = 0 if listen and media is not None and media.codec == "PCMU" and self._pt == 0 else -1
        # on_readable's usual packet: audio in our codec, received
        pt = self._pt
        usual = self._rx_on and pt in DECODERS and pt != self._dtmf_pt
        self._fast_pt = pt if usual else -1
        self._fast_keeps = pt == self._keep_pt
        # the usual packet's decode: keeping the payload on the frame (listen mode, PCMU) or
        # in the Passthrough (codec.Passthrough.decoder: the decode and keep() in one call)
        if self._fast_keeps:
            self._decode_fast = decode_ulaw_keeping
        elif pt in DECODERS:
            self._decode_fast = self._passthrough.decoder(pt)

    def inject_dtmf(self, digit: str, duration_ms: int) -> None:
        """A digit that came by SIP INFO: delivered like an RFC 4733 one."""
        try:
            digit = normalize_digits(digit)
        except ValueError as exc:
            log.warning("SIP INFO DTMF ignored: %s", exc, extra={"call_id": self.call_id})
            return
        if len(digit) != 1:
            log.warning("SIP INFO DTMF ignored: expected one digit", extra={"call_id": self.call_id})
            return
        self._dtmf_in(digit, max(0, int(duration_ms)), self._loop.time(), "sip-info")

    # -- AudioLeg --------------------------------------------------------------------------
    def events(self) -> AsyncIterator[LegEvent]:
        return self._channel.stream()

    def consume(self, consumer: EventConsumer) -> EventFeed:
        return self._channel.attach(consumer)

    def play(self, utterance_id: str, pcm: bytes) -> None:
        if self._ending:
            return
        # (the queue's frame count: queued_ms == 0 without the property's call and arithmetic)
        idle = not self._talking and self._early_pcm is None and not self._queue._queued_frames \
            and not self._paused
        self._queue.play(utterance_id, pcm)
        if idle:
            self._start_talkspurt()

    def _start_talkspurt(self) -> None:
        """Send the first frame of a talkspurt now instead of at the next tick (up to 20 ms
        later: that wait was most of the bridge's share of the reply latency). It takes the
        next tick's slot (RTP timestamp), and that tick sends nothing, so the timestamps stay
        on the wall clock and the pacing after it is unchanged."""
        if not (self._started and self._tx_on and self._remote is not None) or self._dtmf_tx.busy:
            return
        pcm = self._queue.next_frame(self._loop.time(), True)
        if pcm is None:
            return
        kept = self._passthrough.payload_of(pcm)
        self._send(self._pt, self._ts, self._encode(pcm) if kept is None else kept, True)
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        self._talking = True
        self._early_pcm = pcm

    def end_utterance(self, utterance_id: str) -> None:
        if not self._ending:
            self._queue.end(utterance_id)

    def clear(self) -> None:
        self._paused = False
        self._queue.report_progress(self._loop.time())
        self._queue.clear()

    def pause(self) -> None:
        """Stop sending agent audio from the next tick; the queue stays as it is. The exact
        heard position is reported now: a confirmed barge-in cuts the history there."""
        self._paused = True
        self._queue.report_progress(self._loop.time())

    def resume(self) -> None:
        self._paused = False

    def heard_ms(self, utterance_id: str) -> int:
        return self._queue.heard_ms(utterance_id)

    def queued_ms(self) -> int:
        """Agent audio queued and not yet sent."""
        return self._queue.queued_ms

    async def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 80) -> None:
        """Send digits as RFC 4733 events (in-band tones if no telephone-event was negotiated);
        returns once they are sent. Agent audio waits meanwhile. Raises ValueError for a
        character that is no DTMF digit."""
        normalize_digits(digits)
        if self._ending or not digits:
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._dtmf_tx.add(digits, duration_ms, gap_ms, done)
        await done

    async def transfer(self, target: str) -> bool:
        if self.on_transfer is None or self._ending:
            return False
        return await self.on_transfer(target)

    async def hangup(self, reason: str = "normal") -> None:
        """The agent is done: media stops and LegEnded(by agent) is reported; the owner sends
        the BYE and closes the leg."""
        self._end(reason, "agent")

    def end(self, reason: str, by: EndedBy = "peer") -> None:
        """The owner ends the leg (the dialog ended, or it ends it): media stops, LegEnded."""
        self._end(reason, by)

    async def finished(self) -> LegEnded:
        return await self._channel.finished()

    async def close(self, reason: str = "closed") -> None:
        """Stop everything and release the port (idempotent). Emits LegEnded if not yet done."""
        if self._closed:
            return
        self._closed = True
        self._end(reason, "owner")
        if self._started and self._remote_rtcp is not None:
            udp.send(self._pair.rtcp, self._reports.bye(), self._remote_rtcp)
        self._flush_metrics()
        self._pair.rtp.close()
        self._pair.rtcp.close()
        self._ports.release(self._pair.port)
        if self._recorder is not None:
            if self._listen_rec is not None:
                self._listen_rec.flush()
            self._recorder.close()

    def _end(self, reason: str, by: EndedBy) -> None:
        """Stop the media (no more ticks) and emit LegEnded once."""
        if self._ending:
            return
        self._ending = True
        if self._ticking:
            self._ticking = False
            self._clock.remove(self)
        self._queue.clear()
        for token in self._dtmf_tx.cancel_all():
            if isinstance(token, asyncio.Future) and not token.done():
                token.set_result(None)
        self._channel.put(LegEnded(reason, self._loop.time(), by))

    # -- stats -----------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Every counter of stats(), by name (_COUNTERS)."""
        out = dict(self._n)
        out.update(packets_in=self._packets_in, bytes_in=self._bytes_in, packets_out=self._packets_out,
                   bytes_out=self._bytes_out, frames_in=self._frames_in)
        return out

    def stats(self) -> dict[str, Any]:
        media = self._media
        out: dict[str, Any] = self.counters()
        out.update(
            codec=media.codec if media else None,
            payload_type=media.payload_type if media else None,
            dtmf_payload_type=media.dtmf_payload_type if media else None,
            direction=media.direction if media else None,
            local_port=self.local_port,
            remote=f"{self._remote[0]}:{self._remote[1]}" if self._remote else None,
            lost=self._rx.lost,
            jitter_ms=round(self._rx.jitter_ms, 2),
            ssrc_changes=self._rx.ssrc_changes,
            late=self._playout.late,
            duplicates=self._playout.duplicates,
            concealed_frames=self._playout.concealed_frames,
            skipped_frames=self._playout.skipped_frames,
            jitter_buffer_ms=round(self._playout.depth_ms, 1),
            frames_dropped=self._channel.dropped_frames,
            queued_ms=self._queue.queued_ms,
            recording=str(self._recorder.path) if self._recorder else None,
        )
        return out

    def _flush_metrics(self) -> None:
        n, done = self._n, self._flushed
        if self._packets_in > done["in"]:
            _RTP_IN.inc(self._packets_in - done["in"])
            done["in"] = self._packets_in
        if self._packets_out > done["out"]:
            _RTP_OUT.inc(self._packets_out - done["out"])
            done["out"] = self._packets_out
        if n["foreign"] > done["foreign"]:
            _RTP_FOREIGN.inc(n["foreign"] - done["foreign"])
            done["foreign"] = n["foreign"]
        lost = self._rx.lost
        if lost > done["lost"]:
            RTP_LOST.inc(lost - done["lost"])
            done["lost"] = lost

    # -- the 20 ms tick ----------------------------------------------------------------------
    def on_readable(self, now: float) -> None:
        """The clock saw data on the RTP socket: take one datagram."""
        try:
            data, addr = self._sock.recvfrom(udp.MAX_DATAGRAM)
        except OSError:  # nothing after all (EAGAIN), or an ICMP error report
            return
        if len(data) > 12 and data[0] == 0x80 and data[1] == self._fast_pt:
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            # (an IPv4 address is (host, port) as it comes; IPv6's 4-tuple is cut first)
            if ssrc == self._rx_ssrc and (addr == self._source or addr[:2] == self._source):
                # The usual packet, once per call every 20 ms (no marker, padding, extension
                # or CSRC; our audio codec; the caller's source and SSRC; receiving): what
                # _on_datagram does with it, without its general checks.
                self._last_rx = now
                payload = data[12:]
                self._packets_in += 1
                self._bytes_in += len(payload)
                self._rx.on_packet(ssrc, seq, ts, now)
                # decoded and kept (Passthrough.decoder), or carrying it (g711.UlawPcm)
                self._playout.put(ts, self._decode_fast(payload), seq)
                self._rx_flowing = True
                return
        self._on_datagram(data, addr[:2], now)

    def on_send(self, now: float) -> None:
        # The queue's playback events wait until on_tick: a consumer that plays or clears in
        # reply must not re-enter the queue in the middle of next_frame, and the engine's work
        # on them is receive-side work, not done between two legs' sends.
        if not self._send_hold:
            self._send_hold = True
            self._channel._held += 1  # EventChannel.hold() inline (once per call every 20 ms)
        # Send this tick's frame (DTMF first, then agent audio); _agent_pcm: the agent PCM
        # sent (for the recording). In this method, not a call of its own: once per call
        # every 20 ms.
        early = self._early_pcm
        if early is not None:  # this tick's frame already left in _start_talkspurt
            self._early_pcm = None
            self._agent_pcm = early
            return
        ts = self._ts
        self._ts = (ts + FRAME_SAMPLES) & 0xFFFFFFFF
        audible = self._tx_on and self._remote is not None
        pcm: bytes | None = None
        if self._dtmf_tx._jobs:  # DtmfSender.busy without the property's call
            step = self._dtmf_tx.tick(ts, inband=self._dtmf_pt is None)
            for token in step.finished:
                if isinstance(token, asyncio.Future) and not token.done():
                    token.set_result(None)
            if audible and step.packets and self._dtmf_pt is not None:
                for event, marker, event_ts in step.packets:
                    self._send(self._dtmf_pt, event_ts, event, marker)
                if step.packets[0][1]:
                    self._n["dtmf_out"] += 1
                    _DTMF_OUT.inc()
            pcm = step.tone
            if step.busy and pcm is None:
                self._talking = False
                self._agent_pcm = None
                return
        if pcm is None:
            # Paused (caller speech being judged): the queue waits, nothing of it is heard.
            pcm = None if self._paused else self._queue.next_frame(now, audible)
            if pcm is None and self._settings.send_silence:
                pcm = _SILENCE
        if pcm is None or not audible:
            self._talking = False
            self._agent_pcm = None
            return
        # A caller frame sent back as it came (the echo agent) goes out as its own payload
        # (Passthrough.payload_of inline: this runs once per packet of every call).
        passthrough = self._passthrough
        key = id(pcm)
        kept = passthrough._new.get(key)
        if kept is None:
            kept = passthrough._old.get(key)
        payload = self._encode(pcm) if kept is None else kept
        # _send inlined: this runs once per packet of every call
        pt = self._pt
        seq = self._seq
        try:
            self._sock.sendto(_HEADER.pack(0x80, pt if self._talking else 0x80 | pt, seq, ts, self._ssrc)
                              + payload, self._remote)  # type: ignore[arg-type]  # audible: not None
        except OSError:  # full buffer, no route: UDP drops, the stream goes on
            self._n["send_errors"] += 1
        self._seq = (seq + 1) & 0xFFFF
        self._packets_out += 1
        self._bytes_out += len(payload)
        self._talking = True
        self._agent_pcm = pcm

    def on_tick(self, now: float) -> None:
        if self._send_hold:
            self._send_hold = False
            channel = self._channel
            if channel._held == 1 and not channel._items:
                channel._held = 0  # EventChannel.release() when nothing waits, inline
            else:
                channel.release()
        if self._ending:
            return  # ended during this tick's send or read phase
        caller_pcm: bytes | None = None
        listen = self._listening
        if listen is not None:
            frames = self._listen_tick(listen, now) if self._rx_on else []
            if self._listen_rec is not None:
                self._listen_rec.tick(frames, self._agent_pcm, self._rx_on and listen.primed)
        elif self._rx_on:
            playout: PlayoutBuffer = self._playout  # type: ignore[assignment]  # not listening
            caller_pcm = playout.tick()
            if caller_pcm is None and self._rx_flowing:
                caller_pcm = _SILENCE  # a pause in the caller's stream: keep the cadence
                self._n["filler_frames"] += 1
            if caller_pcm is not None:
                self._frames_in += 1
                frame = _new_frame(AudioFrame)  # AudioFrame(caller_pcm, now) without its __init__
                _set_frame_pcm(frame, caller_pcm)
                _set_frame_t(frame, now)
                self._channel.put(frame)
        if self._recorder is not None and self._listen_rec is None:
            self._recorder.write(caller_pcm, self._agent_pcm)
        self._tick_no += 1
        if self._tick_no % _HOUSEKEEPING_TICKS == 0:
            self._housekeeping(now)

    def _listen_tick(self, playout: ListenBuffer, now: float) -> list[bytes]:
        """Listen mode: every frame that is ready goes out now (and to the recording, all of
        them: listen_recording.py)."""
        frames = playout.frames()
        if not frames and self._rx_flowing and not playout.primed:
            frames = [_SILENCE]  # the sender paused: keep the frames (the listener's time) coming
            self._n["filler_frames"] += 1
        for pcm in frames:
            self._frames_in += 1
            self._channel.put(AudioFrame(pcm, now))
        return frames

    def _on_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        n = self._n
        if len(data) > 12 and data[0] == 0x80:
            # The usual packet (no padding, extension or CSRC): skip the general parser.
            second = data[1]
            if 192 <= second <= 223:  # RTCP of an rtcp-mux peer (RFC 5761 §4)
                n["rtcp_in"] += 1
                return
            pt = second & 0x7F
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            payload = data[12:]
        elif is_rtcp(data):  # rtcp-mux peers
            n["rtcp_in"] += 1
            return
        else:
            try:
                pkt = parse_rtp(data)
            except RtpParseError:
                n["malformed"] += 1
                return
            pt, seq, ts, ssrc, payload = pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.payload
        is_dtmf = pt == self._dtmf_pt
        decode = DECODERS.get(pt)
        if decode is None and not is_dtmf:
            n["ignored"] += 1  # comfort noise, unknown payloads
            return
        if addr != self._source and not self._accept_source(addr, now):
            return
        self._last_rx = now
        self._packets_in += 1
        self._bytes_in += len(payload)
        if ssrc != self._rx_ssrc:
            if self._straggler(ssrc, seq, ts, now):
                if is_dtmf:  # it may still belong to the digit in progress: no reset, no stats
                    for digit, duration_ms in self._dtmf_rx.on_straggler(ssrc, ts, payload, now):
                        self._dtmf_in(digit, duration_ms, now, "rfc4733")
                else:
                    self._playout.late += 1
                return
            if self._rx_ssrc is not None:
                self._rx_left = (self._rx_ssrc, self._rx.extended_max_seq & 0xFFFF,
                                 self._playout.newest_timestamp, now)
            self._rx_ssrc = ssrc
            self._playout.reset()
        self._rx.on_packet(ssrc, seq, ts, now)
        if is_dtmf:
            for digit, duration_ms in self._dtmf_rx.on_packet(ssrc, ts, payload, now):
                self._dtmf_in(digit, duration_ms, now, "rfc4733")
        elif self._rx_on and decode is not None:
            pcm: bytes
            if pt == self._keep_pt:
                pcm = decode_ulaw_keeping(payload)  # listen mode, PCMU: the frame carries it
            else:
                pcm = decode(payload)
                if pt == self._pt:
                    self._passthrough.keep(pcm, payload)
            self._playout.put(ts, pcm, seq)
            self._rx_flowing = True

    def _straggler(self, ssrc: int, seq: int, ts: int, now: float) -> bool:
        """A packet of the SSRC the caller's stream just left (less than ``_STRAGGLER_S``
        ago), numbered near that stream's newest (RFC 3550 A.1's misorder window, either
        way) and timed at most ``_STRAGGLER_AHEAD`` past its newest timestamp: sent before
        the change and reordered or delayed behind it. Following it would reset the receive
        timeline twice and hand the listener a stale frame. Later, numbered elsewhere, or
        timed further on (the sender back after a short prompt from another source: its
        numbering goes on, its clock ran through the pause, RFC 3550 5.1), it is the sender
        switching back: followed as any change."""
        left = self._rx_left
        if left is None or left[0] != ssrc or now - left[3] >= _STRAGGLER_S:
            return False
        if (seq - left[1] + _MAX_MISORDER) & 0xFFFF > 2 * _MAX_MISORDER:
            return False
        newest = left[2]
        return newest is None or ((ts - newest + (1 << 31)) & 0xFFFFFFFF) - (1 << 31) <= _STRAGGLER_AHEAD

    def _dtmf_in(self, digit: str, duration_ms: int, now: float, method: str) -> None:
        """Every digit the caller sends is counted (per call in stats(), in total in
        voice_bridge_dtmf_events_total) and logged, the digit itself masked: DTMF carries PINs
        and card numbers."""
        self._n["dtmf_in"] += 1
        DTMF_EVENTS.labels("in", method).inc()
        log.info("DTMF received", extra={"call_id": self.call_id, "dtmf_method": method, "digit": "x",
                                         "duration_ms": duration_ms, "dtmf_count": self._n["dtmf_in"]})
        self._channel.put(DtmfDigit(digit, duration_ms, now))

    def _accept_source(self, addr: tuple[str, int], now: float) -> bool:
        """Whose packets are the caller's (a packet from anyone else is counted and dropped).

        The address the SDP names always is. Behind NAT (symmetric_rtp) the caller's packets
        come from elsewhere: the first source within the latch window whose IP is the SDP's
        or the signalling source's is taken, once. After that nothing re-latches until a
        re-INVITE names a new address: a third party spraying packets at our port, at call
        start or later, never gets the call's audio."""
        sdp = self._sdp_remote
        if addr == sdp:
            self._latch(addr, "the SDP address")
            return True
        if self._source is not None or not self._settings.symmetric_rtp or now > self._latch_until:
            self._reject(addr)
            return False
        if addr[0] not in ((sdp[0] if sdp else None), self._signalling_ip):
            self._reject(addr)
            return False
        self._latch(addr, "the caller's NAT source")
        return True

    def _latch(self, addr: tuple[str, int], why: str) -> None:
        self._source = addr
        if addr == self._remote:
            return
        self._n["latches"] += 1
        log.info("RTP latched to %s", why,
                 extra={"call_id": self.call_id, "rtp_from": f"{addr[0]}:{addr[1]}"})
        self._remote = addr
        self._remote_rtcp = (addr[0], addr[1] + 1)

    def _reject(self, addr: tuple[str, int]) -> None:
        if self._n["foreign"] == 0:  # one line per call; the rest is counted
            log.warning("RTP from an unexpected source refused",
                        extra={"call_id": self.call_id, "rtp_from": f"{addr[0]}:{addr[1]}"})
        self._n["foreign"] += 1

    def _send(self, pt: int, ts: int, payload: bytes, marker: bool) -> None:
        remote = self._remote
        if remote is None:
            return
        n = self._n
        try:
            # build_rtp inlined (and this in on_send): it runs once per packet of every call
            self._sock.sendto(_HEADER.pack(0x80, 0x80 | pt if marker else pt, self._seq, ts & 0xFFFFFFFF,
                                           self._ssrc)
                              + payload, remote)
        except OSError:  # full buffer, no route: UDP drops, the stream goes on
            n["send_errors"] += 1
        self._seq = (self._seq + 1) & 0xFFFF
        self._packets_out += 1
        self._bytes_out += len(payload)

    def _housekeeping(self, now: float) -> None:
        for digit, duration_ms in self._dtmf_rx.expire(now):
            self._dtmf_in(digit, duration_ms, now, "rfc4733")
        for _data, addr in udp.drain(self._pair.rtcp, _MAX_RTCP_PER_SECOND):
            self._n["rtcp_in"] += 1
            # RTCP follows the caller's RTP host only: anyone else's reports cannot redirect ours.
            if self._settings.symmetric_rtp and self._source is not None and addr[0] == self._source[0]:
                self._remote_rtcp = addr
        self._flush_metrics()
        if self._tick_no % _RTCP_TICKS == 0 and self._remote_rtcp is not None:
            report = self._reports.report(self._rx, self._ts, self._packets_out, self._bytes_out)
            udp.send(self._pair.rtcp, report, self._remote_rtcp)
            self._n["rtcp_out"] += 1
        media = self._media
        if (
            media is not None
            and media.direction == "sendrecv"
            and now - self._last_rx >= self._settings.rtp_timeout_s
        ):
            log.warning(
                "no RTP from the caller: hanging up",
                extra={"call_id": self.call_id, "silent_s": round(now - self._last_rx, 1)},
            )
            self._end("rtp-timeout", "media")  # reported: the supervisor sends the BYE
