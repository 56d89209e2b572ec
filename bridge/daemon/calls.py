"""The daemon's CallApp: admits calls, binds an RTP leg per call, runs the agent on it, and
makes sure nothing (task, leg, port) outlives its call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from bridge import callcontext
from bridge.admission import Admission
from bridge.callfacts import CALL_UUID, decode_value
from bridge.callmodel import CallInfo
from bridge.daemon.agents import AgentRunner
from bridge.daemon.transfer import TRANSFERRED_BYE_GRACE_S, RestTransfer, transfer_for
from bridge.endreason import EndReason, end_reason
from bridge.media.ports import PortAllocator
from bridge.media.rtp_leg import RtpLeg
from bridge.metrics import CALLS_ACTIVE, CALLS_REFUSED, CALLS_TOTAL, DTMF_PER_CALL
from bridge.privacy import mask_phone_numbers
from bridge.pseudonym import call_subject
from bridge.settings import Settings
from bridge.sip.call import SipCall

log = logging.getLogger(__name__)


@dataclass
class _Call:
    sip: SipCall
    leg: RtpLeg
    started: float = field(default_factory=time.monotonic)
    agent_task: asyncio.Task[None] | None = None


class DaemonCallApp:
    """Implements bridge.sip.app.CallApp for the daemon."""

    def __init__(
        self, settings: Settings, agent: AgentRunner, bind_host: str, admission: Admission | None = None,
        rest: RestTransfer | None = None,
    ) -> None:
        self._settings = settings
        # Shared with the stream server when both run: one capacity for the process.
        self.admission = admission or Admission(settings.sip.max_calls)
        self._rest = rest  # Plivo's REST API: transfers of calls from Plivo's XML application
        self._agent = agent
        self._bind_host = bind_host
        self._ports = PortAllocator(settings.media.rtp_port_min, settings.media.rtp_port_max)
        self._calls: dict[str, _Call] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what the daemon reads ----------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self.admission.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.admission.draining = value

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def ports_in_use(self) -> int:
        return self._ports.in_use

    async def hangup_all(self, reason: str) -> None:
        await asyncio.gather(
            *(c.sip.hangup(reason) for c in list(self._calls.values())), return_exceptions=True
        )

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until no call is left (True) or limit_s passes (False)."""
        if self._calls:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), limit_s)
        return not self._calls

    # -- CallApp ---------------------------------------------------------------------------
    def admit(self, info: CallInfo) -> tuple[int, str] | None:
        # The XML server %-encodes header values (Plivo's documented escape): decode them here,
        # once, so the agent sees the caller's number and Plivo's CallUUID as they were.
        info.plivo_headers = {k: decode_value(v) for k, v in info.plivo_headers.items()}
        why = self.unavailable()
        if why is None:
            return None
        CALLS_REFUSED.labels("sip", why).inc()
        return (503, f"Service Unavailable ({why})")

    def unavailable(self) -> str | None:
        # Also asked by OPTIONS, so a dispatcher stops sending calls here while draining/full/late.
        return self.admission.refusal() or None

    async def prepare(self, call: SipCall) -> tuple[str, int]:
        # The slot is taken here, not in admit(): an INVITE refused later (488, 415) never
        # reaches ended(), a prepared call always does.
        if not self.admission.take():
            raise RuntimeError(f"no capacity ({self.admission.refusal()})")
        try:
            leg = await RtpLeg.open(
                call.info.call_id, self._bind_host, self._ports, self._settings.media,
                signalling_ip=call.info.source[0] if call.info.source else None,
            )
        except BaseException:
            self.admission.release()
            raise
        callcontext.bind(call.info.call_id, call.info.plivo_headers.get(CALL_UUID, ""))
        leg.on_hangup = call.hangup
        leg.on_transfer = transfer_for(call, self._rest)
        if self._settings.media.recordings_dir:
            info, s = call.info, self._settings
            try:  # the recording's sidecar names the person by pseudonym (forget, retention)
                leg.subject = call_subject(s.daemon.data_dir, s.compliance.default_region,
                                           info.direction, info.from_uri, info.to_uri, info.plivo_headers)
            except OSError as exc:
                log.error("recording subject id unavailable (key file): %s", exc)
        self._calls[call.info.call_id] = _Call(sip=call, leg=leg)
        self._idle.clear()
        CALLS_ACTIVE.labels("sip").inc()
        log.info(
            "call setup",
            extra={
                "call_id": call.info.call_id,
                "from": mask_phone_numbers(call.info.from_uri),
                "to": mask_phone_numbers(call.info.to_uri),
                "rtp_port": leg.local_port,
            },
        )
        return self._bind_host, leg.local_port

    def established(self, call: SipCall) -> None:
        rec = self._calls.get(call.info.call_id)
        if rec is None or call.media is None:
            return
        rec.leg.start(call.media)
        rec.agent_task = asyncio.get_running_loop().create_task(
            self._run_agent(rec), name=f"agent-{call.info.call_id}"
        )

    def media_changed(self, call: SipCall) -> None:
        rec = self._calls.get(call.info.call_id)
        if rec is not None and call.media is not None:
            rec.leg.update(call.media)

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        rec = self._calls.get(call.info.call_id)
        if rec is not None:
            rec.leg.inject_dtmf(digit, duration_ms)

    def ended(self, call: SipCall, reason: str) -> None:
        rec = self._calls.pop(call.info.call_id, None)
        if rec is None:
            return
        self.admission.release()
        if not self._calls:
            self._idle.set()
        CALLS_ACTIVE.labels("sip").dec()
        CALLS_TOTAL.labels("sip", end_reason(reason).value).inc()
        stats = rec.leg.stats()
        log.info(
            "call ended",
            extra={
                "call_id": call.info.call_id,
                "reason": reason,
                "duration_s": round(time.monotonic() - rec.started, 2),
                "codec": stats.get("codec"),
                "packets_in": stats.get("packets_in"),
                "packets_out": stats.get("packets_out"),
                "rtp_rejected": stats.get("foreign"),
                "dtmf_in": stats.get("dtmf_in"),
                "dtmf_out": stats.get("dtmf_out"),
            },
        )
        DTMF_PER_CALL.observe(stats.get("dtmf_in") or 0)
        asyncio.get_running_loop().create_task(self._teardown(rec), name=f"teardown-{call.info.call_id}")

    # -- internals ---------------------------------------------------------------------------
    async def _run_agent(self, rec: _Call) -> None:
        callcontext.enter(rec.sip.info.call_id)  # this task and its children log the CallUUID
        try:
            await self._agent(rec.leg, rec.sip.info)
        except asyncio.CancelledError:
            raise
        except Exception:
            # An agent bug must not leave the caller in dead air: end the call cleanly.
            log.exception("agent failed", extra={"call_id": rec.sip.info.call_id})
        if rec.sip.transferred:
            # Plivo (REST transfer) or the trunk (REFER) ends this leg itself: a BYE of ours
            # could race its own; only if it does not come do we hang up.
            for _ in range(int(TRANSFERRED_BYE_GRACE_S * 10)):
                if rec.sip.info.call_id not in self._calls:
                    return
                await asyncio.sleep(0.1)
            if rec.sip.info.call_id in self._calls:
                await rec.sip.hangup(EndReason.TRANSFERRED.value)
            return
        if rec.sip.info.call_id in self._calls:
            await rec.sip.hangup(EndReason.AGENT_FINISHED.value)

    async def _teardown(self, rec: _Call) -> None:
        await rec.leg.close()  # emits LegEnded, so the agent finishes on its own
        task = rec.agent_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        callcontext.unbind(rec.sip.info.call_id)

