"""One SIP call to the daemon: the caller's side as a timeline of espeak-ng lines, SIPp playing
it, tcpdump capturing both RTP directions, and what came back (agent audio bursts, the
transcript file of the call)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.g711 import decoder
from bridge.simulator.pcap import read_udp_payloads, rtp_payload
from bridge.simulator.procs import Daemon, capture_udp, free_port
from bridge.simulator.sipp import PAYLOAD_TYPES, SippResult, conversation_scenario, run_sipp
from tests.support.audio import read_wav_pcm, speech_wav

CODEC = "PCMU"
LOUD_PEAK = 28000
BURST_GAP_S = 0.1  # agent packets further apart than this belong to different utterances
# tcpdump (without --immediate-mode) hands packets over in blocks, flushed after libpcap's 1 s
# buffer timeout: stopping it right after the call loses the call's last few hundred ms.
CAPTURE_SETTLE_S = 1.1
ONSET_RMS = 1000.0  # a caller frame louder than this is voiced (the levelled lines peak at 28000)


# The barge-in benches' caller (bench/barge_in_wire.py on SIP, bench/barge_in_stream.py on the
# stream): a first request, then cut-ins taken in turn, the same lines on both paths.
FIRST_REQUEST = "What are your opening hours?"
CUT_INS = ("Wait what about parking?", "Sorry, and on Sundays?", "Hold on, is that every week?",
           "No, I mean the other shop.", "Right, and the phone number?")


def cut_in_script(cut_ins: int) -> list[str]:
    """The caller's lines: the first request, then ``cut_ins`` cut-ins."""
    return [FIRST_REQUEST, *[CUT_INS[i % len(CUT_INS)] for i in range(cut_ins)]]


def caller_line(text: str, folder: Path, name: str) -> bytes:
    """espeak-ng speech, levelled like a phone's AGC does (soft compression): a caller who
    talks over the agent is louder than the agent's echo would be, so the echo guard lets
    the barge-in through (raw espeak has long quiet stretches inside words)."""
    pcm = np.frombuffer(read_wav_pcm(speech_wav(text, folder / f"{name}.wav")), dtype="<i2")
    x = pcm.astype(np.float64) / max(1, int(np.abs(pcm.astype(np.int32)).max()))
    return (LOUD_PEAK * np.tanh(3 * x) / np.tanh(3)).astype("<i2").tobytes()


def onset_s(pcm: bytes, level: float = ONSET_RMS) -> float:
    """Where speech starts in a line: its first 20 ms frame louder than ``level`` RMS."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    for i in range(0, len(x) - 160, 160):
        if np.sqrt(np.mean(x[i : i + 160] ** 2)) > level:
            return i / 8000
    raise AssertionError("no speech in the line")


def timeline(lines: list[tuple[float, bytes]], tail_s: float) -> bytes:
    """Caller audio: each line starts at its offset (seconds from answer), silence elsewhere."""
    end = max(at + len(pcm) / 16000 for at, pcm in lines) + tail_s
    out = bytearray(int(end * 8000) * 2)
    for at, pcm in lines:
        start = int(at * 8000) * 2
        out[start : start + len(pcm)] = pcm
    return bytes(out)


@dataclass
class Burst:
    start: float  # seconds from the caller's first RTP packet
    end: float
    packets: int
    rms: float


@dataclass
class CallerPacket:
    t: float  # on the wire, seconds from the caller's first packet
    at: float  # where its audio starts in the played line, seconds (RTP timestamp from the first)
    rms: float  # of its decoded audio


@dataclass
class CallResult:
    sipp: SippResult
    to_caller: list[tuple[float, bytes]]  # (seconds from the caller's first packet, RTP payload)
    caller: list[CallerPacket]  # the caller's audio packets, in capture order
    transcript: list[dict[str, Any]]
    daemon_logs: str
    wall0: float = 0.0  # the caller's first packet, capture (wall clock) time

    @property
    def from_caller(self) -> int:
        return len(self.caller)

    def onset_on_wire(self, line_at: float, level: float = ONSET_RMS) -> float:
        """The caller's speech onset as the daemon can first know it: when the first packet
        louder than ``level`` RMS at or after ``line_at`` (seconds into the played line; a
        frame early is allowed for, as the line's 20 ms frames need not fall on the
        packets') was captured. SIPp's own send timing is in it, so the stop measured from
        it is the daemon's alone."""
        for p in sorted(self.caller, key=lambda p: p.at):
            if p.at >= line_at - 0.02 and p.rms > level:
                return p.t
        raise AssertionError(f"no caller speech on the wire after {line_at:.2f} s")

    def bursts(self) -> list[Burst]:
        """The agent's audio on the wire, split into utterances at gaps (no silence is sent
        between utterances: media.send_silence is off)."""
        decode = decoder(CODEC)
        out: list[Burst] = []
        group: list[tuple[float, bytes]] = []
        for item in [*self.to_caller, (float("inf"), b"")]:
            if group and item[0] - group[-1][0] > BURST_GAP_S:
                pcm = np.frombuffer(b"".join(decode(p) for _, p in group), dtype="<i2").astype(np.float64)
                rms = float(np.sqrt(np.mean(pcm * pcm))) if len(pcm) else 0.0
                out.append(Burst(group[0][0], group[-1][0] + 0.02, len(group), rms))
                group = []
            group.append(item)
        return out

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.transcript if e.get("event") == kind]

    def explain(self) -> str:
        """Everything needed to see why an assertion failed."""
        return (
            f"\nsipp rc={self.sipp.returncode}\n{self.sipp.errors[-1500:]}\n"
            f"bursts={self.bursts()}\ntranscript=\n"
            + "\n".join(json.dumps(e) for e in self.transcript)
            + "\ndaemon log tail:\n"
            + self.daemon_logs[-6000:]
        )


def place_call(
    daemon: Daemon, transcripts: Path, workdir: Path, caller_pcm: bytes, wait_ms: int
) -> CallResult:
    """Call the daemon once with SIPp; returns when SIPp is done (the agent's BYE or ours) and
    the daemon has closed the call's transcript."""
    workdir.mkdir(parents=True, exist_ok=True)
    before = set(transcripts.glob("*.jsonl"))
    logs_before = len(daemon.log_lines)
    scenario = conversation_scenario(workdir, CODEC, caller_pcm, wait_ms=wait_ms)
    media_port = free_port()
    pcap = workdir / "rtp.pcap"
    limit = len(caller_pcm) / 16000 + wait_ms / 1000 + 10
    with capture_udp(pcap, f"udp port {media_port}"):
        result = run_sipp(
            scenario, f"127.0.0.1:{daemon.sip_port}", cwd=workdir, media_port=media_port, timeout=limit
        )
        time.sleep(CAPTURE_SETTLE_S)
    lo, hi = daemon.rtp_range
    packets = read_udp_payloads(pcap)
    from_caller = [p for p in packets if p[1] == media_port and lo <= p[2] <= hi]
    to_caller = [p for p in packets if p[2] == media_port and lo <= p[1] <= hi]
    t0 = from_caller[0][0] if from_caller else (to_caller[0][0] if to_caller else 0.0)
    decode = decoder(CODEC)
    caller: list[CallerPacket] = []
    ts0: int | None = None
    for t, _sport, _dport, data in from_caller:
        pt, _seq, ts, payload = rtp_payload(data)
        if pt != PAYLOAD_TYPES[CODEC]:
            continue
        ts0 = ts if ts0 is None else ts0
        x = np.frombuffer(decode(payload), dtype="<i2").astype(np.float64)
        rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
        caller.append(CallerPacket(t - t0, ((ts - ts0) & 0xFFFFFFFF) / 8000, rms))
    agent = []
    for t, _sport, _dport, data in to_caller:
        pt, _seq, _ts, payload = rtp_payload(data)
        if pt == PAYLOAD_TYPES[CODEC]:
            agent.append((t - t0, payload))
    events = _transcript(transcripts, before)
    return CallResult(result, agent, caller, events, "\n".join(daemon.log_lines[logs_before:]), t0)


def _transcript(folder: Path, before: set[Path], limit_s: float = 10.0) -> list[dict[str, Any]]:
    """The events of the call's new transcript file, once it records the end of the call."""
    deadline = time.monotonic() + limit_s
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = []
        for path in sorted(set(folder.glob("*.jsonl")) - before):
            for line in path.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue  # a line being written right now: read again on the next round
        if any(e.get("event") == "call_end" for e in events):
            break
        time.sleep(0.1)
    return events
