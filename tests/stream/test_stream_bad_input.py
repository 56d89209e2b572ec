"""Bad input on the Plivo stream socket costs at most that message, never the call.

A text frame must hold UTF-8 (RFC 6455 5.6, 8.1: otherwise the endpoint MUST fail the
connection, which websockets does with 1007): the messages the stream socket parses itself
(cut frames, ``process_event``) must not let ``json.loads(bytes)`` guess UTF-16/32 or pass
encoded surrogates. A JSON number too large for a float is no timestamp, not an
OverflowError. A DTMF flood is bounded for an agent that does not read.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.exceptions import ConnectionClosed

from bridge.stream import protocol
from bridge.stream.connection import StreamConnection
from tests.stream.support import (
    Recorder,
    headers_for,
    running_server,
    signed_connect,
    sim_client,
    start_cutting,
    start_stream,
    tone,
)

_DTMF = json.dumps({"event": "dtmf", "dtmf": {"digit": "5", "track": "inbound"}})

# Frames that are not UTF-8, each a DTMF message json.loads(bytes) still reads.
NOT_UTF8 = {
    # UTF-16 with its BOM: 0xFF never occurs in UTF-8
    "utf16_bom": b"\xff\xfe" + _DTMF.encode("utf-16-le"),
    # a surrogate encoded as UTF-8 (CESU-8): invalid UTF-8 (RFC 3629 section 3)
    "utf8_surrogate": b'{"event": "dtmf", "dtmf": {"digit": "5", "track": "\xed\xa0\x80"}}',
    # UTF-16-LE with a non-ASCII character (U+00E9 -> e9 00: invalid UTF-8)
    "utf16_non_ascii": json.dumps({"event": "dtmf", "dtmf": {"digit": "5", "track": "\u00e9"}},
                                  ensure_ascii=False).encode("utf-16-le"),
}


@pytest.mark.parametrize("name", sorted(NOT_UTF8))
def test_parse_refuses_a_message_that_is_not_utf8(name: str) -> None:
    """What a text frame carries is UTF-8 or nothing: parse must not guess another encoding."""
    data = NOT_UTF8[name]
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the premise: websockets' recv() would refuse it (1007)
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(data)


@pytest.mark.parametrize("name", sorted(NOT_UTF8))
async def test_a_text_frame_that_is_not_utf8_closes_1007_and_is_not_delivered(name: str) -> None:
    """After start (the socket cuts frames), a DTMF text frame that is not UTF-8: websockets
    fails the connection with 1007 for such a frame; the cut path hands it to the agent and
    keeps the connection open."""
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-utf8", extra_headers=headers_for("call-utf8"))
        async with signed_connect(server) as ws:
            await start_cutting(ws, sim, agent)  # the socket now cuts frames itself
            await ws.send(NOT_UTF8[name], text=True)  # the real client: a masked text frame
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(20):  # bounded
                    pong = await ws.ping(b"after")
                    await asyncio.wait_for(pong, 10)
                    await asyncio.sleep(0.1)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    assert agent.digits == []
    assert isinstance(agent.sockets[0], StreamConnection)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "Infinity", "-Infinity"])
def test_a_media_timestamp_beyond_int_is_no_timestamp(number: str) -> None:
    """Plivo documents the timestamp as a string of epoch ms; any unusable one is None (as for
    "abc" or NaN), never an OverflowError out of parse."""
    text = '{"event": "media", "media": {"payload": "AAAA", "timestamp": ' + number + '}}'
    msg = protocol.parse(text)
    assert isinstance(msg, protocol.Media)
    assert msg.timestamp_ms is None


async def test_a_media_message_with_an_infinite_timestamp_costs_that_message_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One media message with ``"timestamp": 1e999`` after start: the call goes on, the next
    media arrives, stop ends it, and nothing is logged with a traceback.
    """
    agent = Recorder()
    caplog.set_level(logging.WARNING)
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-inf", extra_headers=headers_for("call-inf"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)
            await ws.send(sim.media_message(tone(20), 1))
            bad = json.loads(sim.media_message(tone(20), 2))
            bad_text = json.dumps(bad).replace(json.dumps(bad["media"]["timestamp"]), "1e999")
            assert "1e999" in bad_text
            await ws.send(bad_text)
            await ws.send(sim.media_message(tone(20), 3))
            await ws.send(json.dumps({"event": "stop"}))
            await agent.until_ended()
    assert agent.ended == ["stop"]
    assert len(agent.frames) == 3
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_dtmf_flood_is_bounded_while_the_agent_does_not_read() -> None:
    """A peer floods DTMF while the agent reads nothing (busy in a turn): the leg's event
    channel keeps at most its digit bound (the newest are dropped and counted), so memory does
    not grow with what the peer sends (nothing pauses the socket: the fast path bypasses
    websockets' max_queue)."""
    agent = Recorder(read=False)  # reads no event
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-flood", extra_headers=headers_for("call-flood"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)
            msg = json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}})
            for _ in range(20):
                for _ in range(1000):
                    ws.protocol.send_text(msg.encode())
                assert ws.transport is not None
                ws.transport.write(b"".join(ws.protocol.data_to_send()))
                await asyncio.sleep(0)
            pong = await ws.ping(b"end")
            await asyncio.wait_for(pong, 30)
            held = len(agent.legs[0]._channel._items)  # type: ignore[attr-defined]
            await ws.send(json.dumps({"event": "stop"}))
    assert held <= 1000, f"{held} events held for an agent that reads none"
