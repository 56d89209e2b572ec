"""The stream socket's own frame cutting (bridge/stream/frames.py, connection.py) against the
real websockets client: frames websockets serialises, split across TCP reads anywhere, control
frames and fragments in between, protocol errors still answered by websockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from bridge.audio.g711 import pcm_to_ulaw, ulaw_to_pcm
from bridge.stream.connection import StreamConnection
from bridge.stream.frames import fragment_state, frame_bounds
from tests.stream.support import (
    Recorder,
    headers_for,
    running_server,
    signed_connect,
    sim_client,
    start_stream,
    tone,
)


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 400, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [True, False])
def test_frame_bounds_match_websockets_serialisation(length: int, mask: bool) -> None:
    data = bytes(i % 251 for i in range(length))
    wire = Frame(Opcode.TEXT, data).serialize(mask=mask)
    header = len(wire) - length
    # every prefix shorter than the header: not enough to tell
    for cut in range(header):
        assert frame_bounds(wire[:cut], 0) is None
    # the header alone: where the payload lies, though it has not come yet
    assert frame_bounds(wire[:header], 0) == (header, len(wire), mask)
    # behind other bytes, at an offset
    assert frame_bounds(b"xyz" + wire, 3) == (header + 3, len(wire) + 3, mask)


def test_fragment_state_follows_data_frames_only() -> None:
    text_start = Frame(Opcode.TEXT, b"a", fin=False).serialize(mask=True)[0]
    cont_more = Frame(Opcode.CONT, b"b", fin=False).serialize(mask=True)[0]
    cont_last = Frame(Opcode.CONT, b"c", fin=True).serialize(mask=True)[0]
    ping = Frame(Opcode.PING, b"").serialize(mask=True)[0]
    whole = Frame(Opcode.TEXT, b"d").serialize(mask=True)[0]
    state = fragment_state(text_start, False)
    assert state is True
    assert fragment_state(ping, state) is True  # a control frame between fragments
    assert fragment_state(cont_more, state) is True
    assert fragment_state(cont_last, state) is False
    assert fragment_state(whole, False) is False
    assert fragment_state(ping, False) is False


async def test_media_cut_from_the_byte_stream_however_split_with_pings_and_fragments() -> None:
    """After start the server cuts whole text frames itself; the bytes come in pieces of every
    size (a frame split in its header, its mask, its payload; several frames in one read),
    with pings and a fragmented message (a ping inside it) between them. Every frame reaches
    the leg in order, the pings are answered, stop ends the call."""
    agent = Recorder()
    sent = [tone(20, freq=300.0 + 37 * i) for i in range(24)]
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-cut", extra_headers=headers_for("call-cut"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)
            await ws.send(sim.media_message(sent[0], 1))  # whole, as websockets writes it
            await asyncio.sleep(0.1)
            proto = ws.protocol
            for i, pcm in enumerate(sent[1:], start=2):
                text = sim.media_message(pcm, i).encode()
                if i == 7:
                    proto.send_text(text[:50], fin=False)
                    proto.send_ping(b"in-between")
                    proto.send_continuation(text[50:], fin=True)
                else:
                    if i % 5 == 0:
                        proto.send_ping(b"p%d" % i)
                    proto.send_text(text)
            wire = b"".join(proto.data_to_send())
            assert ws.transport is not None
            sizes = [1, 1, 3, 7, 100, 393, 2, 1000, 5]
            pos = n = 0
            while pos < len(wire):
                size = sizes[n % len(sizes)]
                ws.transport.write(wire[pos:pos + size])
                pos += size
                n += 1
                await asyncio.sleep(0.002)  # separate reads, most of the time
            pong = await ws.ping(b"last")
            await asyncio.wait_for(pong, 10)  # the server answered through all of it
            await ws.send(json.dumps({"event": "stop"}))
            await agent.until_ended()
    assert agent.ended == ["stop"]
    assert agent.frames == [ulaw_to_pcm(pcm_to_ulaw(p)) for p in sent]
    conn = agent.sockets[0]
    assert isinstance(conn, StreamConnection)
    assert conn.frames_cut >= len(sent) - 3  # cut here, not parsed by websockets


async def test_an_unmasked_frame_is_still_a_protocol_error() -> None:
    """A client frame without a mask (RFC 6455: the server must fail the connection) goes to
    websockets, which closes with 1002, as without the cutting."""
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-nomask", extra_headers=headers_for("call-nomask"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)
            await ws.send(sim.media_message(tone(20), 1))
            assert ws.transport is not None
            unmasked = Frame(Opcode.TEXT, sim.media_message(tone(20), 2).encode())
            ws.transport.write(unmasked.serialize(mask=False))
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(50):
                    await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1002


async def test_a_frame_over_max_size_after_start_closes_1009_even_when_cut_in_pieces() -> None:
    agent = Recorder()
    async with running_server(agent, stream_max_message_bytes=4096) as server:
        sim = sim_client(server, call_uuid="call-huge", extra_headers=headers_for("call-huge"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)
            await ws.send(sim.media_message(tone(20), 1))
            await asyncio.sleep(0.05)
            huge = json.dumps({"event": "media", "media": {"payload": "A" * 100000}})
            big = Frame(Opcode.TEXT, huge.encode())
            wire = big.serialize(mask=True)
            assert ws.transport is not None
            for pos in range(0, len(wire), 30000):
                if ws.transport.is_closing():
                    break  # refused on its header already
                ws.transport.write(wire[pos:pos + 30000])
                await asyncio.sleep(0.01)
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(50):
                    await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_a_drop_in_the_middle_of_a_frame_ends_the_call_as_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The socket dies with half a frame held here: websockets sees the same bytes and the same
    end (no close frame: Plivo's DroppedStream), the call ends as dropped, nothing raises."""
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-drop", extra_headers=headers_for("call-drop"))
        async with signed_connect(server) as ws:
            await start_stream(ws, sim, agent)
            await ws.send(sim.media_message(tone(20), 1))
            await asyncio.sleep(0.05)
            wire = Frame(Opcode.TEXT, sim.media_message(tone(20), 2).encode()).serialize(mask=True)
            assert ws.transport is not None
            ws.transport.write(wire[:100])
            await asyncio.sleep(0.05)
            ws.transport.abort()
            await agent.until_ended()
    assert agent.ended == ["dropped"]
    assert not [r for r in caplog.records if r.exc_info]
