"""Plivo's audio-stream messages, parsed and built (sans-I/O).

Plivo -> us: start, media, dtmf, playedStream, clearedAudio (and possibly stop).
Us -> Plivo: playAudio, checkpoint, clearAudio, sendDTMF (Plivo's audio-streaming page, "Messages
to Plivo"; the sendDTMF body follows plivo-labs/agent-transport). See DESIGN.md, Wire notes:
Plivo audio stream.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.encoder
import json.scanner
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm_keeping
from bridge.audio.resample import StreamResampler


class ProtocolError(ValueError):
    """A message we cannot use (bad JSON, missing fields, bad base64): logged, then skipped."""


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str  # "audio/x-mulaw" | "audio/x-l16"
    sample_rate: int

    @property
    def content_type(self) -> str:
        return self.encoding

    def decoder(self) -> Callable[[bytes], bytes]:
        """Payload bytes -> s16le PCM at 8 kHz (the bridge's internal rate). A new callable per
        stream: the 16 kHz one keeps resampler state between chunks. mu-law PCM keeps the
        payload (g711.UlawPcm): the STT is sent the caller's own bytes, not a re-encoding."""
        if self.encoding == "audio/x-mulaw":
            return ulaw_to_pcm_keeping
        if self.sample_rate != 8000:
            return StreamResampler(self.sample_rate, 8000).push
        return _even

    def encoder(self) -> Callable[[bytes], bytes]:
        """s16le PCM at 8 kHz -> payload bytes in this format."""
        if self.encoding == "audio/x-mulaw":
            return pcm_to_ulaw
        if self.sample_rate != 8000:
            return StreamResampler(8000, self.sample_rate).push
        return _even


def _even(data: bytes) -> bytes:
    return data[: len(data) & ~1]


# Plivo's three documented contentTypes (the <Stream> XML reference).
SUPPORTED_FORMATS = (MediaFormat("audio/x-mulaw", 8000), MediaFormat("audio/x-l16", 8000),
                     MediaFormat("audio/x-l16", 16000))


@dataclass(frozen=True, slots=True)
class Start:
    call_id: str
    stream_id: str
    account_id: str
    media_format: MediaFormat
    extra_headers: object  # raw, as Plivo sent it; decoded by callfacts
    tracks: tuple[str, ...] = ("inbound",)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 us more, 50 times a second a call
class Media:
    payload: bytes  # still encoded (mu-law or L16)
    track: str = "inbound"
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class PlayedStream:
    name: str


@dataclass(frozen=True, slots=True)
class ClearedAudio:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str
    raw: dict[str, Any] = field(default_factory=dict)


Message = Start | Media | Dtmf | PlayedStream | ClearedAudio | Stop | Unknown

_DTMF_DIGITS = set("0123456789*#ABCDabcd")


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not an object")
    return value


# The C scanner json.loads runs, called directly: json.loads on bytes first guesses the
# encoding in Python, and on a str matches whitespace around the value with two regexes; 50
# messages a second a call. What it does not take as a whole goes to json.loads (same result,
# same errors).
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: the decoder is its context


def _load(text: str | bytes) -> object:
    whole = text if isinstance(text, str) else bytes(text).decode()  # strict UTF-8 (RFC 6455 8.1)
    try:
        value, end = _scan(whole, 0)
        if end == len(whole):
            return value
    except (StopIteration, ValueError):
        pass
    return json.loads(whole)  # never json.loads(bytes): it guesses UTF-16/32 and passes surrogates


def parse(text: str | bytes) -> Message:
    try:
        data = _load(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested deep
        raise ProtocolError(f"not JSON: {exc}") from None
    msg = _obj(data, "message")
    event = msg.get("event")
    if not isinstance(event, str):
        raise ProtocolError("no event name")
    if event == "media":
        media = _obj(msg.get("media"), "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise ProtocolError("media without payload")
        try:
            # strict: what b64decode(validate=True) refuses, without its regex pass per message
            raw = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media payload is not base64") from None
        ts = media.get("timestamp")
        try:
            timestamp = int(ts) if ts is not None else None
        except (TypeError, ValueError, OverflowError):
            timestamp = None
        return Media(raw, str(media.get("track", "inbound")), timestamp)
    if event == "start":
        start = _obj(msg.get("start"), "start")
        call_id, stream_id = start.get("callId"), start.get("streamId") or msg.get("streamId")
        if not isinstance(call_id, str) or not call_id:
            raise ProtocolError("start without callId")
        fmt = _obj(start.get("mediaFormat") or {"encoding": "audio/x-l16", "sampleRate": 8000}, "mediaFormat")
        try:
            media_format = MediaFormat(str(fmt.get("encoding", "")).lower(), int(fmt.get("sampleRate", 0)))
        except (TypeError, ValueError):
            raise ProtocolError("bad mediaFormat") from None
        if media_format not in SUPPORTED_FORMATS:
            fmt_name = f"{media_format.encoding};rate={media_format.sample_rate}"
            raise ProtocolError(f"unsupported media format {fmt_name}")
        tracks = start.get("tracks")
        return Start(
            call_id=call_id,
            stream_id=str(stream_id or ""),
            account_id=str(start.get("accountId", "")),
            media_format=media_format,
            extra_headers=msg.get("extra_headers", start.get("extra_headers", "")),
            tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
        )
    if event == "dtmf":
        dtmf = _obj(msg.get("dtmf"), "dtmf")
        digit = str(dtmf.get("digit", ""))
        if len(digit) != 1 or digit not in _DTMF_DIGITS:
            raise ProtocolError(f"bad dtmf digit {digit!r}")
        return Dtmf(digit.upper(), str(dtmf.get("track", "inbound")))
    if event == "playedStream":
        name = msg.get("name")
        if not isinstance(name, str):
            raise ProtocolError("playedStream without name")
        return PlayedStream(name)
    if event == "clearedAudio":
        return ClearedAudio()
    if event == "stop":
        return Stop()
    return Unknown(event, msg)


# json.dumps' own output built from parts (tests/stream/test_protocol.py holds them equal):
# json.dumps of the ~1.1 kB playAudio scans the base64 for characters to escape, where there are
# none; ~10 us of 70 per 100 ms chunk sent.
_quote = json.encoder.encode_basestring_ascii  # what json.dumps quotes a str with (ensure_ascii)


def play_audio(media_format: MediaFormat, payload: bytes) -> str:
    return ('{"event": "playAudio", "media": {"contentType": ' + _quote(media_format.content_type)
            + ', "sampleRate": ' + str(int(media_format.sample_rate)) + ', "payload": "'
            + base64.b64encode(payload).decode("ascii") + '"}}')


def checkpoint(stream_id: str, name: str) -> str:
    return '{"event": "checkpoint", "streamId": ' + _quote(stream_id) + ', "name": ' + _quote(name) + "}"


def dtmf_digits(digits: str) -> list[str]:
    """"12#" -> ["1", "2", "#"]; ValueError on anything Plivo cannot play."""
    out = [d.upper() for d in digits if not d.isspace()]
    bad = [d for d in out if d not in _DTMF_DIGITS]
    if bad or not out:
        raise ValueError(f"not DTMF digits: {digits!r}")
    return out


def send_dtmf(digit: str) -> str:
    return json.dumps({"event": "sendDTMF", "dtmf": digit})


def clear_audio(stream_id: str) -> str:
    return json.dumps({"event": "clearAudio", "streamId": stream_id})
