"""The simulator plays Plivo's documented rules, not the project's assumptions: each rule is
checked here against the documented behaviour, and the XML/stream tests run the project's own
output through the same rules (so a header the project names wrongly is dropped there too)."""

from __future__ import annotations

import pytest

from bridge.simulator.plivo import rules, xmlplan
from bridge.simulator.plivo.simulator import CallSpec, answer_params


def test_sip_headers_that_break_plivos_rules_are_not_sent() -> None:
    raw = ("Calluuid=3b5a1a64%2D8e3e,CallUUID=x,vbcall=y,Plivoid=z,Averyveryverylongname1=v,"
           f"Long={'a' * 49},Ok={'a' * 48},Bad=a-b")
    sent = rules.sip_headers_as_sent(raw)
    assert sent.sent == {"Calluuid": "3b5a1a64%2D8e3e", "Ok": "a" * 48}
    dropped = [d.split(":")[0] for d in sent.dropped]
    assert dropped == ["CallUUID", "vbcall", "Plivoid", "Averyveryverylongname1", "Long", "Bad"]
    # the newer article's 120-character limit, when the simulator is told to play it
    assert "Long" in rules.sip_headers_as_sent(raw, rules.NEWER_VALUE_LIMIT).sent


def test_extra_headers_arrive_semicolon_separated_and_over_512_bytes_are_refused() -> None:
    assert rules.extra_headers_as_delivered("From=%2B91,Token=ab") == "From=%2B91;Token=ab"
    with pytest.raises(rules.ExtraHeadersError):
        rules.extra_headers_as_delivered("A=" + "x" * 511)
    xml = ('<Response><Stream bidirectional="true" contentType="audio/x-l16;rate=16000" '
           'extraHeaders="From=%2B91,To=91">wss://h/stream</Stream><Speak>sorry</Speak></Response>')
    plan = xmlplan.plan(xml)
    assert isinstance(plan, xmlplan.StreamPlan)
    assert plan.extra_headers == "From=%2B91;To=91" and plan.sample_rate == 16000
    assert isinstance(plan.after, xmlplan.SpeakPlan) and plan.after.text == "sorry"
    with pytest.raises(xmlplan.XmlError):
        xmlplan.plan('<Response><Stream contentType="audio/opus">wss://h/s</Stream></Response>')


def test_answer_webhook_carries_plivos_parameters() -> None:
    inbound = answer_params(CallSpec(answer_url="http://h/answer"), "uuid-1")
    assert inbound["ALegUUID"] == "uuid-1" and inbound["ALegRequestUUID"] == "uuid-1"
    assert inbound["Direction"] == "inbound" and "Machine" not in inbound
    spec = CallSpec(answer_url="http://h/answer", direction="outbound", request_uuid="req-9",
                    machine_detection="machine")
    outbound = answer_params(spec, "uuid-2")
    assert outbound["Direction"] == "outbound" and outbound["ALegRequestUUID"] == "req-9"
    assert outbound["RequestUUID"] == "req-9" and outbound["Machine"] == "true"
