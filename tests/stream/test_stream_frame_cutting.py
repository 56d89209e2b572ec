"""The stream socket cuts whole masked text frames itself (bridge/stream/frames.py): the
protocol rules it must still enforce or leave to websockets (RSV bits and reserved opcodes
1002, a whole text frame inside a fragmented message 1002, nothing delivered after a close
frame, max_size exact and +1 -> 1009), checked against the real websockets client."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

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


async def _closed_code(ws: object) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(20):  # bounded
            pong = await ws.ping(b"after")  # type: ignore[attr-defined]
            await asyncio.wait_for(pong, 10)
            await asyncio.sleep(0.1)
    return info.value.rcvd.code if info.value.rcvd is not None else None


@pytest.mark.parametrize("first_byte", [0xC1, 0xA1, 0x91, 0x83, 0x8B])
async def test_rsv_bits_and_reserved_opcodes_still_close_1002(first_byte: int) -> None:
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-rsv", extra_headers=headers_for("call-rsv"))
        async with signed_connect(server) as ws:
            await start_cutting(ws, sim, agent)
            wire = bytearray(Frame(Opcode.TEXT, sim.media_message(tone(20), 2).encode()).serialize(mask=True))
            wire[0] = first_byte
            assert ws.transport is not None
            ws.transport.write(bytes(wire))
            assert await _closed_code(ws) == 1002
    assert len(agent.frames) == 1
    assert isinstance(agent.sockets[0], StreamConnection) and agent.sockets[0].frames_cut >= 0


@pytest.mark.parametrize("with_start", [False, True])
async def test_a_whole_text_frame_inside_a_fragmented_message_is_1002(with_start: bool) -> None:
    """The reader's recv() holds the first fragment (websockets' current_size is set, its queue
    empty); a whole text frame then is a protocol error, not a message to take. ``with_start``:
    the fragment comes in the start message's write, so websockets parsed it before the socket
    began cutting (the fragment state is read from websockets' current_size)."""
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-frag", extra_headers=headers_for("call-frag"))
        async with signed_connect(server) as ws:
            proto = ws.protocol
            assert ws.transport is not None
            if with_start:
                proto.send_text(sim.start_message().encode())
            else:
                await start_stream(ws, sim, agent)
            proto.send_text(b'{"event": "unknown-x", ', fin=False)
            ws.transport.write(b"".join(proto.data_to_send()))
            await agent.until_socket()
            await asyncio.sleep(0.2)  # the reader takes the first fragment, waits for the rest
            # websockets' client refuses to send it: the frame serialised by hand
            whole = Frame(Opcode.TEXT, sim.media_message(tone(20), 2).encode())
            ws.transport.write(whole.serialize(mask=True))
            assert await _closed_code(ws) == 1002
    assert agent.frames == []
    assert isinstance(agent.sockets[0], StreamConnection)


async def test_media_after_a_close_frame_in_the_same_read_is_not_delivered() -> None:
    agent = Recorder()
    async with running_server(agent) as server:
        sim = sim_client(server, call_uuid="call-close", extra_headers=headers_for("call-close"))
        async with signed_connect(server) as ws:
            await start_cutting(ws, sim, agent)
            proto = ws.protocol
            proto.send_text(sim.media_message(tone(20), 2).encode())
            proto.send_close(1000, "bye")
            wire = b"".join(proto.data_to_send())
            wire += Frame(Opcode.TEXT, sim.media_message(tone(20), 3).encode()).serialize(mask=True)
            assert ws.transport is not None
            ws.transport.write(wire)
            for _ in range(250):
                if ws.transport.is_closing():
                    break
                await asyncio.sleep(0.02)
    assert len(agent.frames) == 2  # the one before the close, not the one after


@pytest.mark.parametrize(("size_over", "code"), [(0, None), (1, 1009)])
async def test_a_frame_at_max_size_is_taken_one_byte_more_is_1009(size_over: int, code: int | None) -> None:
    agent = Recorder()
    async with running_server(agent, stream_max_message_bytes=4096) as server:
        sim = sim_client(server, call_uuid="call-max", extra_headers=headers_for("call-max"))
        async with signed_connect(server) as ws:
            await start_cutting(ws, sim, agent)
            head = '{"event": "dtmf", "dtmf": {"digit": "7"}, "pad": "'
            text = head + "x" * (4096 + size_over - len(head) - 2) + '"}'
            assert len(text) == 4096 + size_over
            await ws.send(text)
            if code is None:
                pong = await ws.ping(b"x")
                await asyncio.wait_for(pong, 10)
                for _ in range(100):
                    if agent.digits:
                        break
                    await asyncio.sleep(0.02)
                assert agent.digits == ["7"]
            else:
                assert await _closed_code(ws) == 1009
