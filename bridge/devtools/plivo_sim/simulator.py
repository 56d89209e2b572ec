"""The simulated call: answer webhook -> XML -> stream or SIP call -> hangup webhook."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.devtools.plivo_sim import xmlplan
from bridge.devtools.plivo_sim.stream_client import PlivoStreamClient, StreamCallResult
from bridge.devtools.plivo_sim.webhook import WebhookReply, post_webhook, sibling_url
from bridge.privacy import mask_number

Printer = Callable[[str], None]


@dataclass
class SimulatedCall:
    call_uuid: str
    answer: WebhookReply | None = None
    plan: xmlplan.Plan | None = None
    stream: StreamCallResult | None = None
    sip_answered: bool | None = None
    sip_detail: str = ""
    followups: list[tuple[str, int]] = field(default_factory=list)  # (url, status)
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


async def simulate_call(spec: CallSpec, printer: Printer = print) -> SimulatedCall:
    call = SimulatedCall(spec.call_uuid or str(uuid.uuid4()))
    params = {
        "CallUUID": call.call_uuid,
        "From": spec.from_number,
        "To": spec.to_number,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "Event": "StartApp",
        "CallerName": "Simulated Caller",
    }
    started = time.monotonic()
    printer(f"call {call.call_uuid}: {mask_number(spec.from_number)} -> {spec.to_number}")
    reply = await post_webhook(spec.answer_url, params, spec.auth_token, spec.method)
    call.answer = reply
    printer(f"{spec.method} {spec.answer_url} -> {reply.status} ({len(reply.body)} bytes)")
    if reply.status != 200:
        call.error = f"answer URL returned {reply.status}"
        printer(f"call failed: {call.error}")
        return call
    printer(f"XML: {reply.body.strip()}")
    try:
        call.plan = plan = xmlplan.plan(reply.body)
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


async def _follow_stream(spec: CallSpec, call: SimulatedCall, plan: xmlplan.StreamPlan,
                         printer: Printer) -> None:
    if not plan.bidirectional:
        printer("note: stream is not bidirectional; the agent cannot be heard")
    printer(f"opening audio stream {plan.url} ({plan.encoding})")
    client = PlivoStreamClient(plan.url, call_uuid=call.call_uuid, extra_headers=plan.extra_headers,
                               encoding=plan.encoding, printer=printer)
    if plan.status_url:
        await _status(spec, call, plan.status_url, "StartStream", client.stream_id, printer)
    try:
        call.stream = await client.run(spec.caller_pcm, tail_s=spec.tail_s, max_s=spec.max_s,
                                       on_tick=spec.on_stream_tick)
    except Exception as exc:  # refused, bad handshake, timeout: any failure ends the call
        call.error = f"stream failed: {type(exc).__name__}: {exc}"
        printer(call.error)
        return
    s = call.stream
    first = f"{s.first_audio_tick * 20} ms" if s.first_audio_tick is not None else "never"
    printer(f"caller heard {s.agent_audio_ms} ms of agent audio (first at {first}); "
            f"playAudio={s.received['playAudio']} checkpoints={s.received['checkpoint']} "
            f"clearAudio={s.clears}")
    if plan.status_url:
        await _status(spec, call, plan.status_url, "StopStream", client.stream_id, printer)


async def _status(spec: CallSpec, call: SimulatedCall, url: str, event: str, stream_id: str,
                  printer: Printer) -> None:
    params = {"CallUUID": call.call_uuid, "Event": event, "StreamID": stream_id}
    reply = await post_webhook(url, params, spec.auth_token, "POST")
    call.followups.append((url, reply.status))
    printer(f"POST {url} ({event}) -> {reply.status}")


async def _follow_dial(spec: CallSpec, call: SimulatedCall, plan: xmlplan.DialPlan, printer: Printer) -> None:
    from bridge.devtools.plivo_sim.sip_call import place_sip_call

    printer(f"dialling {plan.user} with X-PH headers {sorted(plan.sip_headers)}")
    pause_ms = int(len(spec.caller_pcm) / 16 + spec.tail_s * 1000)
    try:
        result = await asyncio.to_thread(place_sip_call, plan.user, plan.sip_headers, spec.from_number,
                                         spec.caller_pcm or bytes(3200), pause_ms, spec.max_s)
    except (RuntimeError, ValueError) as exc:
        call.error = str(exc)
        printer(f"dial failed: {exc}")
        return
    call.sip_answered, call.sip_detail = result.answered, result.detail
    printer(f"SIP call {'answered and ended' if result.answered else 'failed'} {result.detail}".rstrip())
    if plan.action_url:
        status = "completed" if result.answered else "failed"
        params = {"CallUUID": call.call_uuid, "DialStatus": status, "DialAction": "hangup",
                  "DialHangupCause": "NORMAL_CLEARING" if result.answered else "CALL_REJECTED"}
        reply = await post_webhook(plan.action_url, params, spec.auth_token, "POST")
        call.followups.append((plan.action_url, reply.status))
        printer(f"POST {plan.action_url} (dial action {status}) -> {reply.status}: {reply.body.strip()}")
