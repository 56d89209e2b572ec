"""One call supervisor for both transports (DESIGN.md, "Call lifecycle").

A transport (the SIP CallApp in ``bridge/daemon/calls.py``, the stream server in
``bridge/stream/server.py``) admits a call here, opens its leg and hands both over; from then
on the supervisor owns the call's end:

- it runs the agent on the leg (one task, the call's log context);
- legs only report how they ended (``LegEnded.by``): ``agent`` (hang-up) and ``media`` (media
  timeout) mean the call is still up on the wire, so the supervisor ends it there, once, with
  the transport's ``end`` (SIP BYE, stream REST hang-up / close); ``peer`` means the transport
  already ended it (BYE received, socket closed): nothing is sent;
- when the agent returns on a live call, it ends the call itself (``agent-finished``, or after
  a transfer the peer's own end, waited for up to the transport's grace);
- it then closes the leg, gives the agent a grace to wind down, releases the capacity slot and
  counts ``voice_bridge_calls_total{transport, outcome}`` with the bounded ``EndReason``.

One end reason per call, here: the first LegEnded's. Transport-free: it knows the transport
only through ``TransportCall``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bridge import callcontext
from bridge.admission import Admission
from bridge.callfacts import CALL_UUID
from bridge.callmodel import CallInfo
from bridge.endreason import EndReason, end_reason
from bridge.leg import AudioLeg, EndedBy, LegEnded, SupervisedLeg
from bridge.metrics import CALLS_ACTIVE, CALLS_TOTAL

log = logging.getLogger(__name__)

AgentRunner = Callable[[AudioLeg, CallInfo], Awaitable[None]]
AGENT_GRACE_S = 5.0  # after the call ended, the agent gets this long to wind down


class TransportCall(Protocol):
    """What the supervisor needs of one call's transport."""

    @property
    def transport(self) -> str:
        """"sip" | "stream": the metrics label."""
        ...

    @property
    def transferred_grace_s(self) -> float:
        """After a transfer the peer ends the call itself; after this long without that, we do."""
        ...

    @property
    def transferred(self) -> bool:
        """The peer accepted a transfer of this call."""
        ...

    async def end(self, ended: LegEnded) -> None:
        """End the call on the wire because of ``ended`` (by agent, media or owner). Once."""
        ...

    def summary(self) -> dict[str, Any]:
        """The transport's fields for the call's end line (counters, codec)."""
        ...


class Supervised:
    """One call under supervision. Made by ``CallSupervisor.supervise``."""

    def __init__(self, owner: CallSupervisor, call: TransportCall, leg: SupervisedLeg,
                 info: CallInfo) -> None:
        self.call = call
        self.leg = leg
        self.info = info
        self.reason: str | None = None  # the call's one end reason (the first LegEnded's)
        self.key: tuple[str, str] = (call.transport, info.call_id)  # set by supervise
        self._owner = owner
        self._started = time.monotonic()
        self._agent_task: asyncio.Task[None] | None = None
        self._done: list[Callable[[], None]] = []
        self._task = asyncio.get_running_loop().create_task(self._supervise(),
                                                           name=f"supervise-{info.call_id}")

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def ended(self) -> bool:
        return self.reason is not None

    def start_agent(self) -> None:
        """Run the agent (SIP: on the ACK; stream: at once). At most once, never after the end."""
        if self._agent_task is None and not self.ended:
            self._agent_task = asyncio.get_running_loop().create_task(
                self._run_agent(), name=f"agent-{self.call_id}")

    def peer_ended(self, reason: str) -> None:
        """The transport ended the call (BYE, CANCEL, ACK timeout, socket closed)."""
        self.leg.end(reason, "peer")

    def end(self, reason: str, by: EndedBy = "owner") -> None:
        """End the call from our side (drain, shutdown); ``wait`` for it to be over."""
        self.leg.end(reason, by)

    async def wait(self) -> None:
        """Until the call is over and everything of it released."""
        await asyncio.shield(self._task)

    def on_done(self, callback: Callable[[], None]) -> None:
        self._done.append(callback)

    async def _run_agent(self) -> None:
        callcontext.enter(self.call_id)  # this task and its children log the CallUUID
        try:
            await self._owner.agent(self.leg, self.info)
        except asyncio.CancelledError:
            raise
        except Exception:
            # An agent bug must not leave the caller in dead air: the call is ended below.
            log.exception("agent failed", extra={"call_id": self.call_id})
        if self.ended:
            return
        if self.call.transferred:
            # Plivo (REST transfer) or the trunk (REFER) ends this leg itself: an end of ours
            # could race its own; only if it does not come do we end the call.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.leg.finished(), self.call.transferred_grace_s)
            self.leg.end(EndReason.TRANSFERRED.value, "owner")  # a no-op once the peer ended it
            return
        self.leg.end(EndReason.AGENT_FINISHED.value, "agent")

    async def _supervise(self) -> None:
        ended = await self.leg.finished()
        self.reason = ended.reason
        try:
            if ended.by != "peer":
                try:
                    # Shielded: the wire end (a BYE transaction) completes even at shutdown.
                    await asyncio.shield(self.call.end(ended))
                except Exception:
                    log.exception("ending the call failed", extra={"call_id": self.call_id})
            await self.leg.close(ended.reason)
            await self._stop_agent()
        finally:
            self._owner._forget(self, ended)
            for callback in self._done:
                callback()

    async def _stop_agent(self) -> None:
        task = self._agent_task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait([task], timeout=AGENT_GRACE_S)
        if not done:
            log.warning("agent did not end with the call: cancelled", extra={"call_id": self.call_id})
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class CallSupervisor:
    """The daemon's calls, whatever their transport: one capacity, one drain, one end path."""

    def __init__(self, agent: AgentRunner, admission: Admission) -> None:
        self.agent = agent
        self.admission = admission
        self._calls: dict[tuple[str, str], Supervised] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # -- admission -----------------------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self.admission.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.admission.draining = value

    def refusal(self) -> str:
        """'' when a call may come in, else why not (draining, at capacity, overloaded)."""
        return self.admission.refusal()

    def take(self) -> bool:
        """Take a capacity slot for a call being set up; ``supervise`` or ``give_back`` it."""
        return self.admission.take()

    def give_back(self) -> None:
        """A slot taken for a call whose setup failed before ``supervise``."""
        self.admission.release()

    # -- calls ---------------------------------------------------------------------------
    def supervise(self, call: TransportCall, leg: SupervisedLeg, info: CallInfo,
                  key: str | None = None) -> Supervised:
        """Own a call whose slot was taken: its CallUUID goes on its log lines from now on.
        ``key`` (default: the call id) must be unique among the transport's live calls: SIP
        passes the dialog's (two INVITEs may share a Call-ID)."""
        callcontext.bind(info.call_id, info.plivo_headers.get(CALL_UUID, ""))
        sup = Supervised(self, call, leg, info)
        sup.key = (call.transport, key or info.call_id)
        if sup.key in self._calls:
            raise RuntimeError(f"a {call.transport} call with key {sup.key[1]!r} is already supervised")
        self._calls[sup.key] = sup
        self._idle.clear()
        CALLS_ACTIVE.labels(call.transport).inc()
        # The call is offered (SIP: before the 180/200 go out; stream: at its start): an agent
        # may start work that overlaps the answer (the TTS warm-up). Best effort, not awaited.
        offered = getattr(self.agent, "offered", None)
        if offered is not None:
            offered(info)
        return sup

    def get(self, transport: str, key: str) -> Supervised | None:
        return self._calls.get((transport, key))

    def active(self, transport: str | None = None) -> int:
        if transport is None:
            return len(self._calls)
        return sum(1 for t, _ in self._calls if t == transport)

    def calls(self, transport: str | None = None) -> list[Supervised]:
        return [s for (t, _), s in self._calls.items() if transport is None or t == transport]

    async def end_all(self, reason: str, transport: str | None = None) -> None:
        """End every call (of one transport) from our side and wait until they are over."""
        calls = self.calls(transport)
        for sup in calls:
            sup.end(reason)
        await asyncio.gather(*(s.wait() for s in calls), return_exceptions=True)

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until no call is left (True) or limit_s passes (False)."""
        if self._calls:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), limit_s)
        return not self._calls

    def _forget(self, sup: Supervised, ended: LegEnded) -> None:
        call = sup.call
        if self._calls.get(sup.key) is not sup:
            return  # already forgotten: its slot was released once
        del self._calls[sup.key]
        self.admission.release()
        if not self._calls:
            self._idle.set()
        CALLS_ACTIVE.labels(call.transport).dec()
        outcome = EndReason.TRANSFERRED if call.transferred else end_reason(ended.reason)
        CALLS_TOTAL.labels(call.transport, outcome.value).inc()
        log.info(
            "call ended",
            extra={
                "call_id": sup.call_id,
                "transport": call.transport,
                "reason": ended.reason,
                "ended_by": ended.by,
                "outcome": outcome.value,
                "duration_s": round(time.monotonic() - sup._started, 2),
                **call.summary(),
            },
        )
        callcontext.unbind(sup.call_id)
