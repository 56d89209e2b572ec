"""The daemon's CallApp: the SIP side of a call. It admits calls against the supervisor's one
capacity, binds an RTP leg per call and hands call and leg to the call supervisor
(``bridge/supervisor.py``), which runs the agent and ends the dialog (``SipCall.hangup``) when
the leg reports the agent's hang-up or the RTP timeout."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from bridge.callfacts import decode_value
from bridge.callmodel import CallInfo
from bridge.daemon.transfer import TRANSFERRED_BYE_GRACE_S, RestTransfer, transfer_for
from bridge.leg import LegEnded
from bridge.media.ports import PortAllocator
from bridge.media.rtp_leg import RtpLeg
from bridge.metrics import CALLS_REFUSED, DTMF_PER_CALL
from bridge.privacy import mask_phone_numbers
from bridge.pseudonym import call_subject
from bridge.settings import Settings
from bridge.sip.call import SipCall
from bridge.supervisor import CallSupervisor, Supervised

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _SipDialog:
    """The supervisor's handle on one SIP dialog (bridge.supervisor.TransportCall)."""

    call: SipCall
    leg: RtpLeg
    transport: ClassVar[str] = "sip"
    transferred_grace_s: ClassVar[float] = TRANSFERRED_BYE_GRACE_S

    @property
    def transferred(self) -> bool:
        return self.call.transferred  # REFER or REST accepted: the peer BYEs us

    async def end(self, ended: LegEnded) -> None:
        await self.call.hangup(ended.reason)  # BYE once the dialog is confirmed

    def summary(self) -> dict[str, Any]:
        stats = self.leg.stats()
        DTMF_PER_CALL.observe(stats.get("dtmf_in") or 0)
        return {
            "codec": stats.get("codec"),
            "packets_in": stats.get("packets_in"),
            "packets_out": stats.get("packets_out"),
            "rtp_rejected": stats.get("foreign"),
            "dtmf_in": stats.get("dtmf_in"),
            "dtmf_out": stats.get("dtmf_out"),
        }


class DaemonCallApp:
    """Implements bridge.sip.app.CallApp for the daemon."""

    def __init__(
        self, settings: Settings, supervisor: CallSupervisor, bind_host: str,
        rest: RestTransfer | None = None,
    ) -> None:
        self._settings = settings
        # Shared with the stream server when both run: one capacity, one drain for the process.
        self.supervisor = supervisor
        self._rest = rest  # Plivo's REST API: transfers of calls from Plivo's XML application
        self._bind_host = bind_host
        self._ports = PortAllocator(settings.media.rtp_port_min, settings.media.rtp_port_max)
        self._legs: dict[str, RtpLeg] = {}  # dialog key -> its leg, while supervised

    # -- what the daemon reads ----------------------------------------------------------
    @property
    def active_calls(self) -> int:
        return self.supervisor.active("sip")

    @property
    def ports_in_use(self) -> int:
        return self._ports.in_use

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
        return self.supervisor.refusal() or None

    async def prepare(self, call: SipCall) -> tuple[str, int]:
        # The slot is taken here, not in admit(): an INVITE refused later (488, 415) never
        # reaches ended(), a prepared call always does.
        if not self.supervisor.take():
            raise RuntimeError(f"no capacity ({self.supervisor.refusal()})")
        try:
            leg = await RtpLeg.open(
                call.info.call_id, self._bind_host, self._ports, self._settings.media,
                signalling_ip=call.info.source[0] if call.info.source else None,
            )
        except BaseException:
            self.supervisor.give_back()
            raise
        leg.on_transfer = transfer_for(call, self._rest)
        if self._settings.media.recordings_dir:
            info, s = call.info, self._settings
            try:  # the recording's sidecar names the person by pseudonym (forget, retention)
                leg.subject = call_subject(s.daemon.data_dir, s.compliance.default_region,
                                           info.direction, info.from_uri, info.to_uri, info.plivo_headers)
            except OSError as exc:
                log.error("recording subject id unavailable (key file): %s", exc)
        call_id = call.info.call_id
        key = _dialog_key(call)  # not the Call-ID alone: two INVITEs may share one
        self._legs[key] = leg
        sup = self.supervisor.supervise(_SipDialog(call, leg), leg, call.info, key=key)
        sup.on_done(lambda: self._forget(key, leg))
        log.info(
            "call setup",
            extra={
                "call_id": call_id,
                "from": mask_phone_numbers(call.info.from_uri),
                "to": mask_phone_numbers(call.info.to_uri),
                "rtp_port": leg.local_port,
            },
        )
        return self._bind_host, leg.local_port

    def established(self, call: SipCall) -> None:
        sup, leg = self._find(call)
        if sup is None or leg is None or call.media is None:
            return
        leg.start(call.media)
        sup.start_agent()

    def media_changed(self, call: SipCall) -> None:
        _, leg = self._find(call)
        if leg is not None and call.media is not None:
            leg.update(call.media)

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        _, leg = self._find(call)
        if leg is not None:
            leg.inject_dtmf(digit, duration_ms)

    def ended(self, call: SipCall, reason: str) -> None:
        sup, _ = self._find(call)
        if sup is not None:
            sup.peer_ended(reason)  # a no-op when the supervisor ended it (its BYE)

    def _forget(self, key: str, leg: RtpLeg) -> None:
        if self._legs.get(key) is leg:
            del self._legs[key]

    def _find(self, call: SipCall) -> tuple[Supervised | None, RtpLeg | None]:
        key = _dialog_key(call)
        return self.supervisor.get("sip", key), self._legs.get(key)


def _dialog_key(call: SipCall) -> str:
    """One SIP call among the live ones: its Call-ID and our To tag (RFC 3261 §12)."""
    return f"{call.info.call_id};{call.local_tag}"
