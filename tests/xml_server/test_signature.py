"""V3 signatures made exactly as Plivo makes them are accepted; everything else gets 403 and
runs nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.plivo_signature import NonceStore
from bridge.simulator.plivo.signing import sign_v3
from tests.xml_server.support import BASE, CALL, TOKEN, app, parse, settings, signed_post
from xml_server import create_app
from xml_server.app import ConfigError


def test_good_signature_accepted() -> None:
    assert signed_post(app().test_client(), "/answer", CALL).status_code == 200


def test_missing_signature_rejected(caplog: pytest.LogCaptureFixture) -> None:
    client = app().test_client()
    with caplog.at_level(logging.WARNING, logger="xml_server"):
        resp = client.post("/answer", data=CALL)
    assert resp.status_code == 403
    assert "missing signature" in caplog.text


def test_missing_nonce_rejected() -> None:
    sig = sign_v3(TOKEN, "POST", BASE + "/answer", CALL)
    del sig["X-Plivo-Signature-V3-Nonce"]
    assert app().test_client().post("/answer", data=CALL, headers=sig).status_code == 403


def test_wrong_token_rejected() -> None:
    resp = signed_post(app().test_client(), "/answer", CALL, token="not-the-token")
    assert resp.status_code == 403


def test_body_changed_after_signing_rejected() -> None:
    sig = sign_v3(TOKEN, "POST", BASE + "/answer", CALL)
    tampered = {**CALL, "From": "+911111111111"}
    assert app().test_client().post("/answer", data=tampered, headers=sig).status_code == 403


def test_signature_for_another_url_rejected() -> None:
    client = app().test_client()
    assert signed_post(client, "/answer", CALL, url=BASE + "/fallback").status_code == 403
    assert signed_post(client, "/answer", CALL, url="https://evil.example/answer").status_code == 403


def test_replayed_request_rejected() -> None:
    client = app().test_client()
    sig = sign_v3(TOKEN, "POST", BASE + "/answer", CALL)
    assert client.post("/answer", data=CALL, headers=sig).status_code == 200
    assert client.post("/answer", data=CALL, headers=sig).status_code == 403


def test_replay_check_can_be_disabled() -> None:
    client = app(replay_window_s=0).test_client()
    sig = sign_v3(TOKEN, "POST", BASE + "/answer", CALL)
    assert client.post("/answer", data=CALL, headers=sig).status_code == 200
    assert client.post("/answer", data=CALL, headers=sig).status_code == 200


def test_one_of_several_signatures_may_match() -> None:
    sig = sign_v3(TOKEN, "POST", BASE + "/answer", CALL)
    sig["X-Plivo-Signature-V3"] = "bm90LWl0," + sig["X-Plivo-Signature-V3"]
    assert app().test_client().post("/answer", data=CALL, headers=sig).status_code == 200


def test_get_webhook_with_query() -> None:
    client = app().test_client()
    query = "&".join(f"{k}={v}" for k, v in CALL.items() if k != "From")
    sig = sign_v3(TOKEN, "GET", f"{BASE}/answer?{query}")
    assert client.get(f"/answer?{query}", headers=sig).status_code == 200
    assert client.get(f"/answer?{query}&extra=1", headers=sig).status_code == 403


def test_post_with_query_string() -> None:
    client = app().test_client()
    sig = sign_v3(TOKEN, "POST", BASE + "/answer?agent=sales&b=2", CALL)
    assert client.post("/answer?b=2&agent=sales", data=CALL, headers=sig).status_code == 200


def test_behind_proxy_with_configured_base_url() -> None:
    client = app(public_base_url="https://vb.example.com/").test_client()
    public = "https://vb.example.com/answer"
    assert signed_post(client, "/answer", CALL, url=public).status_code == 200
    # signed for the internal URL Plivo never called: wrong
    assert signed_post(client, "/answer", CALL, url=BASE + "/answer").status_code == 403


def test_behind_proxy_rebuilt_from_forwarded_headers() -> None:
    client = app().test_client()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "vb.example.com",
               "X-Forwarded-Prefix": "/plivo"}
    resp = signed_post(client, "/answer", CALL, url="https://vb.example.com/plivo/answer", headers=headers)
    assert resp.status_code == 200
    assert parse(resp.data)[0].attrib["action"] == "https://vb.example.com/plivo/dial-action"


def test_every_webhook_is_checked() -> None:
    client = app().test_client()
    paths = ("/answer", "/hangup", "/status", "/fallback", "/dial-action", "/stream-status", "/recording")
    for path in paths:
        assert client.post(path, data=CALL).status_code == 403, path


def test_checks_off_is_explicit_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="xml_server"):
        client = create_app(settings(validate_signatures=False), None).test_client()
    assert "signature checks are OFF" in caplog.text
    assert client.post("/answer", data=CALL).status_code == 200


def test_missing_auth_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PLIVO_AUTH_TOKEN"):
        create_app(settings(), None)
    with pytest.raises(ConfigError, match="VOICE_BRIDGE_STREAM_SECRET"):
        create_app(settings(mode="stream"), TOKEN, None)


def test_numbers_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="xml_server"):
        signed_post(app().test_client(), "/answer", CALL)
    record = next(r for r in caplog.records if r.getMessage() == "answer")
    assert "9876543210" not in str(record.__dict__["from"])


def test_subaccount_apps_signed_with_the_main_accounts_token_are_accepted() -> None:
    sig = sign_v3(TOKEN, "POST", BASE + "/answer", CALL)
    headers = {"X-Plivo-Signature-Ma-V3": sig["X-Plivo-Signature-V3"],
               "X-Plivo-Signature-V3": "c3ViYWNjb3VudC1zaWduYXR1cmU=",  # signed with the other token
               "X-Plivo-Signature-V3-Nonce": sig["X-Plivo-Signature-V3-Nonce"]}
    assert app().test_client().post("/answer", data=CALL, headers=headers).status_code == 200


def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    forged_url = "https://evil.example/answer"
    untrusted = app(trusted_proxies=["10.9.9.9/32"]).test_client()  # the test client is 127.0.0.1
    assert signed_post(untrusted, "/answer", CALL, url=forged_url, headers=headers).status_code == 403
    trusted = app(trusted_proxies=["127.0.0.0/8"]).test_client()
    assert signed_post(trusted, "/answer", CALL, url=forged_url, headers=headers).status_code == 200


def test_no_public_url_and_no_trusted_proxies_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="public_base_url"):
        create_app(settings(trusted_proxies=[]), TOKEN)
    create_app(settings(trusted_proxies=[], public_base_url="https://vb.example.com"), TOKEN)
    create_app(settings(trusted_proxies=[], validate_signatures=False), None)


def test_nonces_are_shared_between_workers_and_kept_for_the_window(tmp_path: Path) -> None:
    path = tmp_path / "nonces.sqlite"
    worker1, worker2 = NonceStore(300, path), NonceStore(300, path)  # two gunicorn workers
    assert not worker1.seen_before("n1", now=1000.0)
    assert worker2.seen_before("n1", now=1001.0)  # the replay reaches the other worker
    assert worker2.seen_before("n1", now=1299.0)  # still inside the window
    assert not worker2.seen_before("n1", now=1300.5)  # expired: remembered again from now
    assert worker1.seen_before("n1", now=1301.0)


def test_a_route_agent_too_long_for_plivos_header_rules_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="agent"):
        create_app(settings(routes=[{"to": "+14155550100", "agent": "a very long agent name, with spaces"}]),
                   TOKEN)


def test_dropped_and_degraded_streams_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    client = app(mode="stream").test_client()
    with caplog.at_level(logging.INFO, logger="xml_server"):
        for event in ("StartStream", "DroppedStream", "DegradedStream"):
            data = {"CallUUID": CALL["CallUUID"], "Event": event, "StreamID": "s-1"}
            assert signed_post(client, "/stream-status", data).status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["stream dropped", "stream degraded"]
    assert all(r.__dict__["stream_id"] == "s-1" for r in warnings)
