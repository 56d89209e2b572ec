"""The daemon's CallApp: admits calls, binds an RTP leg per call, runs the agent on it, and
makes sure nothing (task, leg, port) outlives its call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.callfacts import decode_value
from bridge.callmodel import CallInfo
from bridge.daemon.agents import AgentRunner
from bridge.media.ports import PortAllocator
from bridge.media.rtp_leg import RtpLeg
from bridge.metrics import CALLS_ACTIVE, CALLS_REFUSED, CALLS_TOTAL
from bridge.privacy import mask_phone_numbers
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

    def __init__(self, settings: Settings, agent: AgentRunner, bind_host: str) -> None:
        self._settings = settings
        self._agent = agent
        self._bind_host = bind_host
        self._ports = PortAllocator(settings.media.rtp_port_min, settings.media.rtp_port_max)
        self._calls: dict[str, _Call] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False
        self.max_calls = settings.sip.max_calls
        # set by the daemon to its LoadMonitor's: True while new calls are shed
        self.overloaded: Callable[[], bool] = lambda: False

    # -- what the daemon reads ----------------------------------------------------------
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
        # The XML server hex-encodes header values Plivo would refuse (ZZ+hex): decode them here,
        # once, so the agent sees the caller's number and Plivo's CallUUID as they were.
        info.plivo_headers = {k: decode_value(v) for k, v in info.plivo_headers.items()}
        why = self.unavailable()
        if why is None:
            return None
        CALLS_REFUSED.labels("sip", why).inc()
        return (503, f"Service Unavailable ({why})")

    def unavailable(self) -> str | None:
        if self.draining:
            return "draining"
        if len(self._calls) >= self.max_calls:
            return "at capacity"
        if self.overloaded():
            return "overloaded"
        return None

    async def prepare(self, call: SipCall) -> tuple[str, int]:
        leg = await RtpLeg.open(call.info.call_id, self._bind_host, self._ports, self._settings.media)
        leg.on_hangup = call.hangup
        leg.on_transfer = call.refer
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
        if not self._calls:
            self._idle.set()
        CALLS_ACTIVE.labels("sip").dec()
        CALLS_TOTAL.labels("sip", _outcome(reason)).inc()
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
            },
        )
        asyncio.get_running_loop().create_task(self._teardown(rec), name=f"teardown-{call.info.call_id}")

    # -- internals ---------------------------------------------------------------------------
    async def _run_agent(self, rec: _Call) -> None:
        try:
            await self._agent(rec.leg, rec.sip.info)
        except asyncio.CancelledError:
            raise
        except Exception:
            # An agent bug must not leave the caller in dead air: end the call cleanly.
            log.exception("agent failed", extra={"call_id": rec.sip.info.call_id})
        if rec.sip.info.call_id in self._calls:
            await rec.sip.hangup("agent-finished")

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


def _outcome(reason: str) -> str:
    # A small fixed label set keeps metric cardinality bounded.
    known = {"bye", "cancel", "ack-timeout", "rtp-timeout", "agent-finished", "agent-ended", "transferred",
             "silence", "max-duration", "provider-failure", "normal", "drain", "shutdown", "error",
             "busy", "no-answer"}
    return reason if reason in known else "other"
