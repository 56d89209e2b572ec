"""RtpLeg.on_readable's path for the usual packet against the general one (_on_datagram):
the same random datagrams into two legs, one of them with the usual-packet path off, leave
both in the same state after every packet (counters, receive stats, the buffer, the
passthrough map, the SSRC followed). Sources come as IPv4 pairs or IPv6 4-tuples. The
datagrams mix the usual packet with markers, DTMF, another codec, comfort noise, RTCP,
malformed packets, header extensions, strangers, SSRC changes and their stragglers,
hold/resume, and re-INVITEs changing the codec or the DTMF payload type (even to the
audio's)."""

from __future__ import annotations

import dataclasses
import random
import struct
from typing import Any

import pytest

from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import allocator, media

PEER = ("127.0.0.1", 40_000)


class FakeSocket:
    """Hands the leg one prepared datagram per recvfrom."""

    def __init__(self) -> None:
        self.next: tuple[bytes, tuple[str, int]] | None = None

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[str, int]]:
        assert self.next is not None
        data, self.next = self.next, None
        return data

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        return len(data)


def datagram(rng: random.Random, s: dict[str, int]) -> tuple[bytes, tuple[str, int]]:
    r = rng.random()
    if r < 0.01:
        s["ssrc"] = rng.getrandbits(32)  # a new source; the old one may still straggle
    elif r < 0.015:
        s["seq"] = rng.getrandbits(16)
    ssrc = s["ssrc"] if rng.random() > 0.02 else s["old"]
    if ssrc != s["old"] and rng.random() < 0.01:
        s["old"] = ssrc
    second = s["pt"]
    r = rng.random()
    if r < 0.03:
        second = 0x80 | s["pt"]  # marker
    elif r < 0.05:
        second = 101  # DTMF
    elif r < 0.07:
        second = 8 - s["pt"]  # the other G.711
    elif r < 0.08:
        second = 13  # comfort noise
    elif r < 0.09:
        second = 200  # RTCP (rtcp-mux)
    first = 0x80
    r = rng.random()
    if r < 0.01:
        first = 0x90  # header extension
    elif r < 0.02:
        first = 0x40  # not version 2
    seq = s["seq"] if rng.random() > 0.05 else (s["seq"] - rng.randrange(1, 5)) & 0xFFFF
    s["seq"] = (s["seq"] + 1) & 0xFFFF
    ts = s["ts"]
    s["ts"] = (s["ts"] + 160) & 0xFFFFFFFF
    payload = rng.randbytes(160 if rng.random() > 0.02 else rng.choice([0, 4, 80]))
    data = struct.pack("!BBHII", first, second, seq, ts, ssrc)
    if first == 0x90:
        data += struct.pack("!HH", 0xBEDE, 1) + bytes(4)
    data += payload
    if rng.random() < 0.005:
        data = data[: rng.randrange(12)]
    addr: tuple[Any, ...] = PEER if rng.random() > 0.02 else ("127.0.0.2", 40_000)
    if s.get("v6"):  # an AF_INET6 socket's source: (host, port, flowinfo, scope_id)
        addr = (*addr, 0, 0)
    return data, addr  # type: ignore[return-value]


def state(leg: RtpLeg) -> dict[str, Any]:
    rx, buf = leg._rx, leg._playout
    stream = rx._stream
    return {
        "n": leg.counters(),
        "rx": (dict(vars(rx), _stream=None), None if stream is None else
               tuple(getattr(stream, k) for k in stream.__slots__)),
        "buf": {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                for k, v in vars(buf).items() if k != "_concealer"},
        "kept": sorted(leg._passthrough._new.values()) + sorted(leg._passthrough._old.values()),
        # listen mode on PCMU: frames that carry their payload (g711.UlawPcm), with it
        "frames": sorted((type(c).__name__, getattr(c, "ulaw", None) or b"") for c in buf._chunks.values()),
        "leg": (leg._rx_ssrc, leg._rx_left, leg._last_rx, leg._rx_flowing, leg._source),
    }


@pytest.mark.parametrize("listen", [False, True])
async def test_the_usual_packet_path_leaves_the_leg_as_the_general_one(listen: bool) -> None:
    ports = allocator(4)
    legs = [await RtpLeg.open(f"fast-{i}", "127.0.0.1", ports, MediaSettings()) for i in range(2)]
    socks = [FakeSocket(), FakeSocket()]
    for leg, sock in zip(legs, socks, strict=True):
        if listen:
            leg.listen_on_arrival()
        leg.start(media(PEER[1]))
        # no await from here on: the clock's task does not run, the test drives the leg
        leg._sock = sock  # type: ignore[assignment]
        leg._tick_no = 1  # the same housekeeping ticks (RTCP, timeout) for both
    general = legs[1]
    checked = 0
    slow_calls = 0  # datagrams the fast leg handed to the general path
    fast_general = legs[0]._on_datagram

    def counted(*args: Any) -> None:
        nonlocal slow_calls
        slow_calls += 1
        fast_general(*args)

    legs[0]._on_datagram = counted  # type: ignore[method-assign]
    try:
        for seed in range(8):
            rng = random.Random(seed)
            s = {"ssrc": rng.getrandbits(32), "seq": rng.getrandbits(16), "ts": rng.getrandbits(32)}
            s["old"] = s["ssrc"]
            s["pt"] = 0
            s["v6"] = seed % 2  # every other stream as an IPv6 socket reports its sources
            for step in range(400):
                if rng.random() < 0.01:  # hold or resume by re-INVITE
                    direction = rng.choice(["sendrecv", "sendonly", "recvonly"])
                    codec = rng.choice(["PCMU", "PCMA"])  # a re-INVITE may change the codec
                    dtmf = rng.choice([101, None, 0, 8])  # or the DTMF type (even to the audio's)
                    s["pt"] = 0 if codec == "PCMU" else 8
                    for leg in legs:
                        leg.update(media(PEER[1], codec, dtmf, direction))  # type: ignore[arg-type]
                    general._last_rx = legs[0]._last_rx  # the loop's time, read twice by _apply
                general._fast_pt = -1  # the general path for every packet
                data = datagram(rng, s)
                now = seed * 100 + step * 0.02
                for leg, sock in zip(legs, socks, strict=True):
                    sock.next = data
                    leg.on_readable(now)
                    if step % 3 == 0:
                        leg.on_tick(now)
                fast, slow = state(legs[0]), state(general)
                for key in fast:
                    if key == "n":
                        diff = {k: (v, slow["n"][k]) for k, v in fast["n"].items() if slow["n"][k] != v}
                        assert not diff, f"seed {seed} step {step}: counters {diff}"
                    assert fast[key] == slow[key], f"seed {seed} step {step}: {key}"
                checked += 1
        assert legs[0].counters()["packets_in"] > 2000  # mostly the usual packet
        assert checked - slow_calls > 1000  # and the fast leg took its own path for most of them
    finally:
        for leg in legs:
            leg._sock = leg._pair.rtp
            await leg.close()
    assert checked == 8 * 400


def test_a_caller_frame_made_through_its_slots_is_the_dataclass() -> None:
    from bridge.leg import AudioFrame
    from bridge.media.rtp_leg import _new_frame, _set_frame_pcm, _set_frame_t

    pcm = bytes(range(256)) + bytes(64)
    frame = _new_frame(AudioFrame)
    _set_frame_pcm(frame, pcm)
    _set_frame_t(frame, 12.5)
    assert frame == AudioFrame(pcm, 12.5) and hash(frame) == hash(AudioFrame(pcm, 12.5))
    assert type(frame) is AudioFrame and frame.pcm is pcm
    assert repr(frame) == repr(AudioFrame(pcm, 12.5)) and {frame, AudioFrame(pcm, 12.5)} == {frame}
    with pytest.raises(dataclasses.FrozenInstanceError):  # consumers keep frames: immutable
        frame.pcm = b""  # type: ignore[misc]
