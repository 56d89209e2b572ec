"""The simulated call: answer webhook -> XML -> stream or SIP call -> hangup webhook, with
Plivo's documented behaviour on by default: the answer webhook carries the parameters Plivo
sends (ALegUUID, ALegRequestUUID, Direction, machine-detection fields on outbound calls), the
stream upgrade is signed, StartStream is posted once audio flows and DroppedStream when the
socket dies or is refused, the elements after <Stream> run once the stream ends, and the SIP
leg of <Dial><User> comes from an address the bridge should not trust, answering its digest
challenge with the <User>'s sipAuthUsername/sipAuthPassword (trusted_source: from 127.0.0.1)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.privacy import mask_number
from bridge.simulator.plivo import rules, xmlplan
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.stream_client import PlivoStreamClient, StreamCallResult
from bridge.simulator.plivo.webhook import WebhookReply, post_webhook, sibling_url

Printer = Callable[[str], None]


@dataclass
class SimulatedCall:
    call_uuid: str
    answer: WebhookReply | None = None
    plan: xmlplan.Plan | None = None
    stream: StreamCallResult | None = None
    sip_answered: bool | None = None
    sip_detail: str = ""
    sip_challenged: bool = False  # the bridge sent a digest challenge to the SIP leg
    sip_refused: int | None = None  # the status that refused the SIP leg (401, 403, ...)
    followups: list[tuple[str, int]] = field(default_factory=list)  # (url, status)
    stream_events: list[str] = field(default_factory=list)  # StartStream, StopStream, DroppedStream
    stream_error: str = ""  # the stream could not be opened or was refused
    after_stream: xmlplan.SpeakPlan | xmlplan.HangupPlan | None = None  # what Plivo ran next
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class CallSpec:
    answer_url: str
    from_number: str = "+919876543210"
    to_number: str = "918035735100"
    caller_pcm: bytes = b""
    auth_token: str | None = None
    method: str = "POST"
    hangup_url: str = ""  # default: <answer URL's base>/hangup
    tail_s: float = 2.0  # after the caller's audio: silence, then the caller hangs up
    max_s: float = 120.0
    call_uuid: str = ""
    on_stream_tick: Callable[[PlivoStreamClient, int], None] | None = None
    direction: str = "inbound"  # "outbound": a call placed through the REST API
    request_uuid: str = ""  # outbound: the request_uuid calls.create returned
    machine_detection: str = ""  # outbound: "human" | "machine" (Plivo's Machine parameter)
    network: NetworkProfile | None = None  # stream latency/jitter (None: Plivo-like default)
    header_value_limit: int = rules.STRICT_VALUE_LIMIT  # X-PH- value limit Plivo applies
    trusted_source: bool = False  # SIP leg from 127.0.0.1 (trusted by default) instead of 127.0.0.2


async def simulate_call(spec: CallSpec, printer: Printer = print) -> SimulatedCall:
    call = SimulatedCall(spec.call_uuid or str(uuid.uuid4()))
    params = answer_params(spec, call.call_uuid)
    started = time.monotonic()
    printer(f"call {call.call_uuid}: {mask_number(spec.from_number)} -> {spec.to_number}")
    reply = await post_webhook(spec.answer_url, params, spec.auth_token, spec.method)
    call.answer = reply
    printer(f"{spec.method} {spec.answer_url} -> {reply.status} ({len(reply.body)} bytes)")
    if reply.status != 200:
        call.error = f"answer URL returned {reply.status}"
        printer(f"call failed: {call.error}")
        return call
    printer(f"XML: {_masked(reply.body.strip())}")
    try:
        call.plan = plan = xmlplan.plan(reply.body, spec.header_value_limit)
    except xmlplan.XmlError as exc:
        call.error = str(exc)
        printer(f"call failed: {exc}")
        return call
    if isinstance(plan, xmlplan.StreamPlan):
        await _follow_stream(spec, call, plan, printer)
    elif isinstance(plan, xmlplan.DialPlan):
        await _follow_dial(spec, call, plan, printer)
    elif isinstance(plan, xmlplan.SpeakPlan):
        printer(f"Plivo speaks: {plan.text!r}" + (" and hangs up" if plan.hangup else ""))
    else:
        printer("Plivo hangs up")
    duration = int(time.monotonic() - started)
    hangup = {**params, "CallStatus": "completed", "Event": "Hangup", "HangupCause": "NORMAL_CLEARING",
              "Duration": str(duration), "BillDuration": str(duration)}
    url = spec.hangup_url or sibling_url(spec.answer_url, "hangup")
    done = await post_webhook(url, hangup, spec.auth_token, "POST")
    call.followups.append((url, done.status))
    printer(f"POST {url} (hangup) -> {done.status}")
    return call


def _masked(xml_text: str) -> str:
    """The XML as printed: sipAuthPassword is a secret."""
    return re.sub(r'(sipAuthPassword=)("[^"]*"|\'[^\']*\')', r'\1"***"', xml_text)


def answer_params(spec: CallSpec, call_uuid: str) -> dict[str, str]:
    """What Plivo POSTs to the answer URL (https://docs.plivo.com/docs/voice/xml/request)."""
    params = {
        "CallUUID": call_uuid,
        "From": spec.from_number,
        "To": spec.to_number,
        "Direction": spec.direction,
        "CallStatus": "ringing" if spec.direction == "inbound" else "in-progress",
        "Event": "StartApp",
        "CallerName": "Simulated Caller",
        "ForwardedFrom": "",
        # On a call with no other leg the A leg is the call itself.
        "ALegUUID": call_uuid,
        "ALegRequestUUID": spec.request_uuid or call_uuid,
        "BillRate": "0.0035",
        "STIRVerification": "Not Applicable",
    }
    if spec.direction == "outbound":
        params["RequestUUID"] = spec.request_uuid or call_uuid
        if spec.machine_detection:
            params["Machine"] = "true" if spec.machine_detection == "machine" else "false"
    return params


async def _follow_stream(spec: CallSpec, call: SimulatedCall, plan: xmlplan.StreamPlan,
                         printer: Printer) -> None:
    if not plan.bidirectional:
        printer("note: stream is not bidirectional; the agent cannot be heard")
    printer(f"opening audio stream {plan.url} ({plan.content_type})")
    client = PlivoStreamClient(plan.url, call_uuid=call.call_uuid, extra_headers=plan.extra_headers,
                               encoding=plan.encoding, sample_rate=plan.sample_rate, printer=printer,
                               auth_token=spec.auth_token, network=spec.network)
    posts: list[asyncio.Task[None]] = []

    def tick(c: PlivoStreamClient, n: int) -> None:
        if n == 0 and plan.status_url:  # audio flows from the first media frame: StartStream
            posts.append(asyncio.get_running_loop().create_task(
                _status(spec, call, plan.status_url, "StartStream", client.stream_id, printer)))
        if spec.on_stream_tick is not None:
            spec.on_stream_tick(c, n)

    try:
        call.stream = await client.run(spec.caller_pcm, tail_s=spec.tail_s, max_s=spec.max_s, on_tick=tick)
    except Exception as exc:  # refused, bad handshake, timeout: Plivo reports a dropped stream
        call.stream_error = f"{type(exc).__name__}: {exc}"
        printer(f"stream failed: {call.stream_error}")
        if plan.status_url:
            await _status(spec, call, plan.status_url, "DroppedStream", client.stream_id, printer)
        _after_stream(call, plan, printer)
        return
    for post in posts:
        await post
    s = call.stream
    first = f"{s.first_audio_tick * 20} ms" if s.first_audio_tick is not None else "never"
    printer(f"caller heard {s.agent_audio_ms} ms of agent audio (first at {first}); "
            f"playAudio={s.received['playAudio']} checkpoints={s.received['checkpoint']} "
            f"clearAudio={s.clears} sendDTMF={len(s.dtmf_received)}")
    if plan.status_url:
        # A socket the bridge closed abnormally is a dropped stream; otherwise it stopped.
        dropped = s.ended_by == "bridge" and s.close_code not in (1000, None)
        await _status(spec, call, plan.status_url, "DroppedStream" if dropped else "StopStream",
                      client.stream_id, printer)
    if s.ended_by == "bridge":
        _after_stream(call, plan, printer)


def _after_stream(call: SimulatedCall, plan: xmlplan.StreamPlan, printer: Printer) -> None:
    """Plivo runs the next element once the stream ends (keepCallAlive)."""
    call.after_stream = plan.after
    if isinstance(plan.after, xmlplan.SpeakPlan):
        printer(f"after the stream Plivo speaks: {plan.after.text!r}"
                + (" and hangs up" if plan.after.hangup else ""))
    elif plan.after is None and call.stream_error:
        call.error = f"stream failed: {call.stream_error}"  # nothing after: the caller hears silence


async def _status(spec: CallSpec, call: SimulatedCall, url: str, event: str, stream_id: str,
                  printer: Printer) -> None:
    # Plivo's stream status callback: Event plus the call and stream identifiers.
    params = {"CallUUID": call.call_uuid, "Event": event, "StreamID": stream_id,
              "From": spec.from_number, "To": spec.to_number, "Direction": spec.direction}
    if event == "DroppedStream" and call.stream_error:
        params["Error"] = call.stream_error[:200]
    reply = await post_webhook(url, params, spec.auth_token, "POST")
    call.followups.append((url, reply.status))
    call.stream_events.append(event)
    printer(f"POST {url} ({event}) -> {reply.status}")


async def _follow_dial(spec: CallSpec, call: SimulatedCall, plan: xmlplan.DialPlan, printer: Printer) -> None:
    from bridge.simulator.plivo.sip_call import TRUSTED_SOURCE, UNTRUSTED_SOURCE, SipAuth, place_sip_call

    source = TRUSTED_SOURCE if spec.trusted_source else UNTRUSTED_SOURCE
    # Plivo answers a challenge only with credentials the <User> carries.
    auth = SipAuth(plan.sip_auth_username, plan.sip_auth_password) \
        if plan.sip_auth_username and plan.sip_auth_password else None
    printer(f"dialling {plan.user} from {source} with X-PH headers {sorted(plan.sip_headers)}"
            f"{'' if auth else ' and no sipAuth credentials'}")
    for pair in plan.dropped_headers:
        printer(f"Plivo would not send sipHeaders pair {pair}")
    pause_ms = int(len(spec.caller_pcm) / 16 + spec.tail_s * 1000)
    try:
        result = await asyncio.to_thread(place_sip_call, plan.user, plan.sip_headers, spec.from_number,
                                         spec.caller_pcm or bytes(3200), pause_ms, spec.max_s, auth, source)
    except (RuntimeError, ValueError) as exc:
        call.error = str(exc)
        printer(f"dial failed: {exc}")
        return
    call.sip_answered, call.sip_detail = result.answered, result.detail
    call.sip_challenged, call.sip_refused = result.challenged, result.refused
    if result.challenged:
        printer("the bridge challenged the SIP leg" + (": answered with the <User>'s sipAuth credentials"
                                                        if auth else ""))
    elif not spec.trusted_source and result.answered:
        printer(f"note: the bridge took the call from {source} without a challenge: it trusts that "
                "address, which a real Plivo edge address would not be unless listed in sip.trust")
    printer("SIP call answered and ended" if result.answered
            else f"SIP call failed: {result.detail or f'SIPp exited {result.returncode}'}")
    if result.refused is not None:
        call.error = f"SIP call refused with {result.refused}"
    if plan.action_url:
        status = "completed" if result.answered else "failed"
        params = {"CallUUID": call.call_uuid, "DialStatus": status, "DialAction": "hangup",
                  "DialHangupCause": "NORMAL_CLEARING" if result.answered else "CALL_REJECTED"}
        reply = await post_webhook(plan.action_url, params, spec.auth_token, "POST")
        call.followups.append((plan.action_url, reply.status))
        printer(f"POST {plan.action_url} (dial action {status}) -> {reply.status}: {reply.body.strip()}")
