"""Call control on the stream path through Plivo's REST API, with the real plivo SDK against the
local fake Plivo API (module constants pointed at it): hang-up deletes the call; a transfer is
answered 202 like Plivo and the transferred call is never hung up afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import plivo.rest.client as plivo_client
import pytest

from bridge.callmodel import CallInfo
from bridge.leg import AudioLeg
from bridge.settings import Secrets
from bridge.simulator.plivo.stream_client import PlivoStreamClient, StreamCallResult
from bridge.stream.server import StreamServer
from bridge.supervisor import AgentRunner as Agent
from devkit.fake_plivo_api import FakePlivoApi
from tests.stream.support import SECRET, headers_for, settings, supervisor


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePlivoApi]:
    with FakePlivoApi() as fake:
        base = f"{fake.base_url}/v1/Account"
        for name in ("PLIVO_API_BASE_URI", "API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1",
                     "API_VOICE_BASE_URI_FALLBACK_2"):
            monkeypatch.setattr(plivo_client, name, base)
        yield fake


async def _call(api: FakePlivoApi, agent: Agent, call_uuid: str, **plivo: object) -> StreamCallResult:
    api.calls[call_uuid] = {"call_uuid": call_uuid, "call_status": "in-progress"}
    secrets = Secrets(stream_secret=SECRET, plivo_auth_id=api.auth_id, plivo_auth_token=api.auth_token)
    # The same PLIVO_AUTH_TOKEN signs the REST calls and (in the simulator) the stream upgrade.
    server = StreamServer(settings(**plivo), secrets, supervisor(agent))
    await server.start()
    try:
        client = PlivoStreamClient(f"ws://127.0.0.1:{server.bound_port}/stream", call_uuid=call_uuid,
                                   auth_token=api.auth_token,
                                   extra_headers=headers_for(call_uuid))
        return await client.run(b"", tail_s=5.0)
    finally:
        await server.stop(drain_timeout_s=5.0)


async def test_agent_hangup_deletes_the_call_over_rest(api: FakePlivoApi) -> None:
    call_uuid = str(uuid.uuid4())

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        await leg.hangup("goodbye")

    result = await _call(api, agent, call_uuid)
    deletes = [r for r in api.requests if r.method == "DELETE"]
    assert [(r.path, r.status) for r in deletes] == [(f"/v1/Account/{api.auth_id}/Call/{call_uuid}/", 204)]
    assert api.calls[call_uuid]["call_status"] == "completed"
    assert result.ended_by == "bridge" and result.close_code == 1000


async def test_transfer_is_accepted_and_the_transferred_call_is_not_hung_up(api: FakePlivoApi) -> None:
    call_uuid = str(uuid.uuid4())
    outcome: list[bool] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        outcome.append(await leg.transfer("+919812345678"))
        # The agent returns, as the conversation engine does after "transferred".

    result = await _call(api, agent, call_uuid, public_base_url="https://vb.example.com")
    assert outcome == [True]
    posts = [r for r in api.requests if r.method == "POST"]
    assert [(r.path, r.status) for r in posts] == [(f"/v1/Account/{api.auth_id}/Call/{call_uuid}/", 202)]
    body = posts[0].body
    assert body["legs"] == "aleg" and body["aleg_method"] == "POST"
    assert body["aleg_url"] == "https://vb.example.com/transfer?to=%2B919812345678"
    assert not [r for r in api.requests if r.method == "DELETE"]
    assert api.calls[call_uuid]["call_status"] == "in-progress"
    assert result.close_reason == "transferred"


async def test_transfer_of_an_ended_call_fails_like_plivo(api: FakePlivoApi) -> None:
    call_uuid = str(uuid.uuid4())
    outcome: list[bool] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        api.calls[call_uuid]["call_status"] = "completed"  # the caller hung up meanwhile
        outcome.append(await leg.transfer("+919812345678"))
        await leg.hangup("done")

    await _call(api, agent, call_uuid, public_base_url="https://vb.example.com")
    assert outcome == [False]
    assert [r.status for r in api.requests if r.method == "POST"] == [404]


def test_fake_api_answers_send_digits_like_plivo(api: FakePlivoApi) -> None:
    import plivo

    call_uuid = str(uuid.uuid4())
    api.calls[call_uuid] = {"call_uuid": call_uuid, "call_status": "in-progress"}
    client = plivo.RestClient(api.auth_id, api.auth_token)
    reply = client.calls.send_digits(call_uuid, "12#", leg="aleg")
    assert reply["message"] == "digits sent"
    assert api.requests[-1].status == 202 and api.requests[-1].path.endswith(f"/Call/{call_uuid}/DTMF/")
    with pytest.raises(plivo.exceptions.PlivoRestError):
        client.calls.send_digits(call_uuid, "x!", leg="aleg")
    assert api.requests[-1].status == 400
