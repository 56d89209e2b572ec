"""Hang-up on the stream path goes through Plivo's REST API when credentials are set: the real
plivo SDK against the local fake Plivo API (module constants pointed at it)."""

from __future__ import annotations

import uuid

import plivo.rest.client as plivo_client
import pytest

from bridge.callmodel import CallInfo
from bridge.devtools.fake_plivo_api import FakePlivoApi
from bridge.devtools.plivo_sim.stream_client import PlivoStreamClient
from bridge.leg import AudioLeg
from bridge.settings import Secrets
from bridge.stream.server import StreamServer
from tests.stream.support import SECRET, headers_for, settings


async def test_agent_hangup_deletes_the_call_over_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    call_uuid = str(uuid.uuid4())

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        await leg.hangup("goodbye")

    with FakePlivoApi() as api:
        api.calls[call_uuid] = {"call_uuid": call_uuid, "call_status": "in-progress"}
        base = f"{api.base_url}/v1/Account"
        for name in ("PLIVO_API_BASE_URI", "API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1",
                     "API_VOICE_BASE_URI_FALLBACK_2"):
            monkeypatch.setattr(plivo_client, name, base)
        secrets = Secrets(stream_secret=SECRET, plivo_auth_id=api.auth_id, plivo_auth_token=api.auth_token)
        server = StreamServer(settings(), secrets, agent)
        await server.start()
        try:
            client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid=call_uuid,
                                       extra_headers=headers_for(call_uuid))
            result = await client.run(b"", tail_s=5.0)
        finally:
            await server.stop(drain_timeout_s=5.0)
    deletes = [r for r in api.requests if r.method == "DELETE"]
    assert [(r.path, r.status) for r in deletes] == [(f"/v1/Account/{api.auth_id}/Call/{call_uuid}/", 204)]
    assert api.calls[call_uuid]["call_status"] == "completed"
    assert result.ended_by == "bridge" and result.close_code == 1000
