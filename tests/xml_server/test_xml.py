"""Every answer mode's XML parsed back and checked element by element."""

from __future__ import annotations

from urllib.parse import urlencode

from bridge.callfacts import token_valid
from bridge.settings import Settings
from bridge.simulator.plivo import xmlplan
from bridge.simulator.plivo.rules import extra_headers_as_delivered, sip_headers_as_sent
from bridge.stream.callfacts import parse_extra_headers
from tests.xml_server.support import BASE, CALL, STREAM_SECRET, TOKEN, app, parse, signed_post
from xml_server import create_app


def test_sip_mode_dials_the_bridge_with_call_facts() -> None:
    client = app(mode="sip", sip_uri="sip:agent@10.0.0.5:5070", caller_id="+918035735100",
                 dial_timeout_s=25, time_limit_s=600).test_client()
    resp = signed_post(client, "/answer", CALL)
    assert resp.status_code == 200 and resp.mimetype == "application/xml"
    root = parse(resp.data)
    (dial,) = list(root)
    assert dial.tag == "Dial"
    assert dial.attrib["timeout"] == "25"
    assert dial.attrib["timeLimit"] == "600"
    assert dial.attrib["callerId"] == "+918035735100"
    assert dial.attrib["action"] == "http://localhost/dial-action"
    assert dial.attrib["method"] == "POST"
    (user,) = list(dial)
    assert user.tag == "User" and user.text == "sip:agent@10.0.0.5:5070"
    raw = dial.attrib["sipHeaders"]
    # Plivo's rules (names X-PH-Capital+lowercase <= 24, values alnum+% <= 48): nothing dropped.
    sent = sip_headers_as_sent(raw)
    assert sent.dropped == () and len(sent.sent) == 4
    facts = parse_extra_headers(raw)
    assert facts == {"Calluuid": CALL["CallUUID"], "From": CALL["From"], "To": CALL["To"],
                     "Direction": "inbound"}


def test_stream_mode_bidirectional_stream_with_token() -> None:
    client = app(mode="stream", stream_url="wss://vb.example.com/stream").test_client()
    body = signed_post(client, "/answer", CALL).data
    root = parse(body)
    stream, speak, hangup = list(root)
    # Plivo runs what follows <Stream> once the stream ends: a failed stream ends in words.
    assert (speak.tag, hangup.tag) == ("Speak", "Hangup") and speak.text
    after = xmlplan.plan(body.decode())
    assert isinstance(after, xmlplan.StreamPlan) and isinstance(after.after, xmlplan.SpeakPlan)
    assert after.after.hangup
    assert stream.tag == "Stream"
    assert stream.text == "wss://vb.example.com/stream"
    assert stream.attrib["bidirectional"] == "true"
    assert stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["audioTrack"] == "inbound"
    assert stream.attrib["contentType"] == "audio/x-mulaw;rate=8000"
    assert stream.attrib["statusCallbackUrl"] == "http://localhost/stream-status"
    raw = stream.attrib["extraHeaders"]
    delivered = extra_headers_as_delivered(raw)  # <= 512 bytes, or this raises
    assert sip_headers_as_sent(raw).dropped == ()
    facts = parse_extra_headers(delivered)
    token = facts.pop("Token")
    assert facts == {"From": CALL["From"], "To": CALL["To"], "Direction": "inbound"}
    assert token_valid(STREAM_SECRET, CALL["CallUUID"], token, facts)
    assert not token_valid(STREAM_SECRET, "another-call", token, facts)
    assert not token_valid(STREAM_SECRET, CALL["CallUUID"], token, {**facts, "From": "+14155550100"})


def test_routes_by_called_number() -> None:
    client = app(
        mode="sip",
        routes=[
            {"to": "+91 80 3573 5100", "agent": "sales", "sip_uri": "sip:sales@10.0.0.7"},
            {"to": "+14155550100", "agent": "support"},
        ],
    ).test_client()
    dial = parse(signed_post(client, "/answer", CALL).data)[0]
    assert dial[0].text == "sip:sales@10.0.0.7"
    assert parse_extra_headers(dial.attrib["sipHeaders"])["Agent"] == "sales"
    other = {**CALL, "To": "14155550100"}
    dial = parse(signed_post(client, "/answer", other).data)[0]
    assert dial[0].text == "sip:agent@127.0.0.1:5060"  # default URI, route's agent
    assert parse_extra_headers(dial.attrib["sipHeaders"])["Agent"] == "support"
    unrouted = {**CALL, "To": "442071234567"}
    dial = parse(signed_post(client, "/answer", unrouted).data)[0]
    assert "Agent" not in parse_extra_headers(dial.attrib["sipHeaders"])


def test_fallback_speaks_apology_and_hangs_up() -> None:
    client = app(apology_text="Sorry, try later.", voice="MAN").test_client()
    root = parse(signed_post(client, "/fallback", CALL).data)
    assert [el.tag for el in root] == ["Speak", "Hangup"]
    assert root[0].text == "Sorry, try later." and root[0].attrib["voice"] == "MAN"


def test_dial_action_apology_voicemail_and_completed() -> None:
    client = app().test_client()
    done = parse(signed_post(client, "/dial-action", {**CALL, "DialStatus": "completed"}).data)
    assert [el.tag for el in done] == ["Hangup"]
    busy = parse(signed_post(client, "/dial-action", {**CALL, "DialStatus": "busy"}).data)
    assert [el.tag for el in busy] == ["Speak", "Hangup"]
    vm_client = app(dial_failed_action="voicemail", voicemail_max_s=30).test_client()
    vm = parse(signed_post(vm_client, "/dial-action", {**CALL, "DialStatus": "no-answer"}).data)
    assert [el.tag for el in vm] == ["Speak", "Record", "Hangup"]
    assert vm[1].attrib["maxLength"] == "30"
    assert vm[1].attrib["action"] == "http://localhost/recording"


def test_callbacks_answer_empty_response() -> None:
    client = app().test_client()
    for path in ("/hangup", "/status", "/stream-status", "/recording"):
        resp = signed_post(client, path, {**CALL, "HangupCause": "NORMAL_CLEARING"})
        assert resp.status_code == 200, path
        assert parse(resp.data).tag == "Response"


def test_public_base_url_drives_callback_urls() -> None:
    client = app(public_base_url="https://vb.example.com/plivo").test_client()
    resp = signed_post(client, "/answer", CALL, url="https://vb.example.com/plivo/answer")
    assert resp.status_code == 200
    assert parse(resp.data)[0].attrib["action"] == "https://vb.example.com/plivo/dial-action"


def test_healthz_needs_no_signature() -> None:
    resp = app().test_client().get("/healthz")
    assert resp.status_code == 200 and resp.get_json()["status"] == "ok"


def test_transfer_dials_a_number_or_a_sip_uri() -> None:
    client = app().test_client()
    for target, tag in (("+919812345678", "Number"), ("sip:human@pbx.example.com", "User")):
        query = "?" + urlencode({"to": target})
        root = parse(signed_post(client, "/transfer" + query, CALL, url=BASE + "/transfer" + query).data)
        (dial,) = list(root)
        assert dial.tag == "Dial" and dial[0].tag == tag and dial[0].text == target
    root = parse(signed_post(client, "/transfer", CALL).data)
    assert [el.tag for el in root] == ["Speak", "Hangup"]


def test_stream_fallback_can_be_turned_off() -> None:
    client = app(mode="stream", stream_fallback=False).test_client()
    assert [el.tag for el in parse(signed_post(client, "/answer", CALL).data)] == ["Stream"]


def test_user_carries_sip_auth_credentials_for_the_bridges_challenge() -> None:
    settings_ = Settings.model_validate({"plivo": {"mode": "sip", "trusted_proxies": ["127.0.0.1/32"],
                                                   "nonce_db": ":memory:"},
                                         "sip": {"trust": {"inbound_user": "plivo"}}})
    client = create_app(settings_, TOKEN, STREAM_SECRET, "digest-pass").test_client()
    body = signed_post(client, "/answer", CALL).data
    user = parse(body)[0][0]
    assert user.tag == "User" and user.text == "sip:agent@127.0.0.1:5060"
    assert user.attrib["sipAuthUsername"] == "plivo" and user.attrib["sipAuthPassword"] == "digest-pass"
    dial = xmlplan.plan(body.decode())  # and the simulator reads them as Plivo would
    assert isinstance(dial, xmlplan.DialPlan)
    assert (dial.sip_auth_username, dial.sip_auth_password) == ("plivo", "digest-pass")
    # without the password nothing is emitted (and a warning says why)
    client = create_app(settings_, TOKEN, STREAM_SECRET, None).test_client()
    assert "sipAuthUsername" not in parse(signed_post(client, "/answer", CALL).data)[0][0].attrib
