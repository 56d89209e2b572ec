"""What the daemon's two transports share: one capacity, one end-reason vocabulary in the
calls metric and transcripts, and Plivo's CallUUID on a call's log lines and transcript."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from bridge import callcontext
from bridge.admission import Admission
from bridge.agents.echo import run_echo
from bridge.callfacts import CALL_UUID
from bridge.callmodel import CallInfo
from bridge.conversation.transcript import TranscriptWriter
from bridge.daemon.calls import DaemonCallApp
from bridge.endreason import EndReason, end_reason
from bridge.leg import AudioLeg
from bridge.metrics import REGISTRY
from bridge.settings import Secrets, Settings
from bridge.simulator.plivo.stream_client import PlivoStreamClient
from bridge.stream.server import StreamServer
from bridge.supervisor import CallSupervisor
from tests.stream.support import AUTH_TOKEN, SECRET, headers_for, tone

log = logging.getLogger("tests.supervision")


def _settings(**extra: object) -> Settings:
    return Settings.model_validate({"sip": {"max_calls": 1}, "daemon": {"stream_listen": "127.0.0.1:0"},
                                    "plivo": {"nonce_db": ":memory:"}, **extra})


async def _until(cond: object, limit_s: float = 10.0) -> None:
    for _ in range(int(limit_s / 0.02)):  # bounded
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def echo(leg: AudioLeg, info: CallInfo) -> None:
    log.info("agent running", extra={"call_id": info.call_id})
    await run_echo(leg)


def _info(call_id: str = "sip-1") -> CallInfo:
    return CallInfo(call_id, "sip:+14155550123@plivo", "sip:agent@bridge", ("127.0.0.1", 5060))


async def test_a_stream_call_and_a_sip_call_count_against_one_capacity() -> None:
    settings = _settings()
    admission = Admission(settings.sip.max_calls)
    calls = CallSupervisor(echo, admission)
    app = DaemonCallApp(settings, calls, "127.0.0.1")
    server = StreamServer(settings, Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN), calls)
    await server.start()
    try:
        assert app.admit(_info()) is None  # nothing up yet
        client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid="uuid-cap",
                                   extra_headers=headers_for("uuid-cap"), auth_token=AUTH_TOKEN)
        call = asyncio.create_task(client.run(tone(200), tail_s=2.0))
        await _until(lambda: server.active_calls == 1)
        # max_calls = 1 and the stream call holds it: the SIP path refuses (before: it admitted).
        assert app.admit(_info()) == (503, "Service Unavailable (at capacity)")
        await call
        await _until(lambda: server.active_calls == 0)
        assert app.admit(_info()) is None
        # ... and the other way round: a slot taken (as DaemonCallApp.prepare takes it) -> 503.
        assert admission.take()
        second = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid="uuid-2",
                                   extra_headers=headers_for("uuid-2"), auth_token=AUTH_TOKEN)
        with pytest.raises(Exception, match="503"):
            await second.run(b"", tail_s=0.1)
        admission.release()
    finally:
        await server.stop()


def _count(transport: str, outcome: str) -> float:
    labels = {"transport": transport, "outcome": outcome}
    value = REGISTRY.get_sample_value("voice_bridge_calls_total", labels)
    return value or 0.0


async def test_the_stream_path_counts_outcomes_in_the_shared_vocabulary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings()
    server = StreamServer(settings, Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN),
                          CallSupervisor(echo, Admission(settings.sip.max_calls)))
    await server.start()
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(callcontext.CallContextFilter())
    before = _count("stream", "bye")
    try:
        client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid="uuid-vocab",
                                   extra_headers=headers_for("uuid-vocab", Calluuid="uuid-vocab"),
                                   auth_token=AUTH_TOKEN)
        await client.run(tone(100), tail_s=0.2)
        await _until(lambda: server.active_calls == 0)
    finally:
        await server.stop()
    # The caller hung up: "bye" on both paths (the stream said "normal" for "socket closed").
    assert _count("stream", "bye") == before + 1
    assert _count("stream", "normal") == 0
    mine = [r for r in caplog.records if getattr(r, "call_id", "") == "uuid-vocab" or r.name == log.name]
    assert mine and all(getattr(r, "call_uuid", "") == "uuid-vocab" for r in mine)


def test_both_vocabularies_map_to_one_bounded_set() -> None:
    assert end_reason("socket closed") is end_reason("bye") is EndReason.BYE
    assert end_reason("media timeout") is end_reason("rtp-timeout") is EndReason.MEDIA_TIMEOUT
    assert end_reason("agent finished") is end_reason("agent-finished") is EndReason.AGENT_FINISHED
    assert end_reason("anything a peer made up") is EndReason.OTHER


async def test_sip_lines_of_a_call_carry_plivos_call_uuid(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(callcontext.CallContextFilter())
    callcontext.bind("sip-call-id@host", "plivo-uuid-1")
    try:
        log.info("a line of the SIP layer", extra={"call_id": "sip-call-id@host"})  # another task

        async def agent_task() -> None:
            callcontext.enter("sip-call-id@host")
            log.info("a line of the conversation")  # no call_id extra: the task's context

        await asyncio.create_task(agent_task())
        log.info("a line of another call", extra={"call_id": "other"})
    finally:
        callcontext.unbind("sip-call-id@host")
    uuids = [getattr(r, "call_uuid", None) for r in caplog.records]
    assert uuids == ["plivo-uuid-1", "plivo-uuid-1", None]


def test_the_transcript_names_the_call_uuid_and_the_shared_end_reason(tmp_path: Path) -> None:
    settings = Settings.model_validate({"conversation": {"transcripts_dir": str(tmp_path)}})
    info = _info("sip-2")
    info.plivo_headers = {CALL_UUID: "8f3c1a2e-1234-4b5c-9d0e-123456789012"}
    writer = TranscriptWriter.for_call(settings, info)
    writer.write("call_end", reason="socket closed")
    writer.close()
    assert writer.path is not None
    lines = [json.loads(x) for x in writer.path.read_text().splitlines()]
    assert lines[0]["call_uuid"] == "8f3c1a2e-1234-4b5c-9d0e-123456789012"  # not masked as a number
    assert lines[-1]["reason"] == "bye" and lines[-1]["detail"] == "socket closed"


def test_the_call_uuid_log_field_is_not_masked_as_a_phone_number() -> None:
    from bridge.logs import MaskingFilter

    uuid = "8f3c1a2e-1234-4b5c-9d0e-123456789012"
    number = "+919876543210"
    record = logging.makeLogRecord({"msg": f"call from {number}", "call_uuid": uuid, "caller": number})
    MaskingFilter().filter(record)
    assert record.call_uuid == uuid  # joins the XML server's lines
    assert "9876543210" not in record.getMessage() and "9876543210" not in record.caller
