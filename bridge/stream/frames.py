"""Where the next client-to-server WebSocket frame lies in a byte buffer (RFC 6455, 5.2), and
whether websockets' parser waits at a frame boundary.

Only the cutting: the stream socket (connection.py) takes Plivo's whole masked text frames
itself and hands every other frame, as its bytes and in order, to websockets, which keeps the
protocol (control frames, fragments, close, size limits, errors). Reading the 2-14 header
bytes here costs about a third of websockets' generator-based frame parser per frame.
"""

from __future__ import annotations

from types import GeneratorType

from websockets.protocol import Protocol
from websockets.streams import StreamReader

FIN_TEXT = 0x81  # FIN set, no RSV bits, opcode 1: a whole text message in one frame
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2


def frame_bounds(buf: bytes, pos: int) -> tuple[int, int, bool] | None:
    """(payload start, frame end, masked) of the frame starting at ``pos``, or None while its
    header is incomplete. The end may lie beyond the buffer (payload still to come)."""
    have = len(buf) - pos
    if have < 2:
        return None
    second = buf[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        if have < 4:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        start = pos + 4
    elif length == 127:
        if have < 10:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
        start = pos + 10
    masked = bool(second & 0x80)
    if masked:
        if len(buf) < start + 4:
            return None
        start += 4
    return start, start + length, masked


def fragment_state(first_byte: int, fragmenting: bool) -> bool:
    """Whether a fragmented data message is open after a frame with this first byte (control
    frames may come between its fragments and change nothing)."""
    opcode = first_byte & 0x0F
    fin = bool(first_byte & 0x80)
    if opcode in (OP_TEXT, OP_BINARY):
        return not fin
    if opcode == OP_CONT:
        return fragmenting and not fin
    return fragmenting


def parser_at_frame_start(protocol: Protocol) -> bool:
    """True if websockets' parser has nothing buffered and waits for the first byte of a frame
    (suspended in ``StreamReader.at_eof``, where its parse loop begins each frame). False on
    anything else, including another websockets' internals: then the caller keeps away."""
    try:
        if protocol.reader.buffer:
            return False
        gen: object = protocol.parser
        while isinstance(gen, GeneratorType) and gen.gi_yieldfrom is not None:
            gen = gen.gi_yieldfrom
        return isinstance(gen, GeneratorType) and gen.gi_code is StreamReader.at_eof.__code__
    except AttributeError:
        return False
