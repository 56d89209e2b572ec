"""Build the outbound pieces from settings and secrets (CLI commands and the daemon share this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bridge.outbound.campaign_store import CampaignStore
from bridge.outbound.compliance import ComplianceGate
from bridge.outbound.dialer import Dialer
from bridge.outbound.dialer_clock import Clock, SystemClock
from bridge.outbound.plivo_dialer import PlivoApiDialer
from bridge.outbound.registry import DndRegistry
from bridge.outbound.service import OutboundService
from bridge.outbound.store import OutboundStore
from bridge.settings import Secrets, Settings
from bridge.settings.secrets import MissingSecretError

# The SIP stack lives in the daemon: outside it, sip-trunk calls go through its POST /calls.
SIP_TRUNK_UNAVAILABLE = (
    "the sip-trunk path places calls through the running daemon's POST /calls: "
    "set VOICE_BRIDGE_API_TOKEN (the same value the daemon has) and outbound.trunk.host"
)


@dataclass
class Outbound:
    settings: Settings
    registry: DndRegistry
    store: OutboundStore
    gate: ComplianceGate
    service: OutboundService
    campaigns: CampaignStore
    unavailable: dict[str, str] = field(default_factory=dict)  # path -> why it has no dialer

    def close(self) -> None:
        for dialer in self.service.dialers.values():
            close = getattr(dialer, "close", None)
            if close is not None:
                close()
        self.registry.close()
        self.store.close()


def data_dir(settings: Settings) -> Path:
    return Path(settings.daemon.data_dir)


def build_dialers(
    settings: Settings, secrets: Secrets, agent: str = "", sip_trunk: Dialer | None = None
) -> tuple[dict[str, Dialer], dict[str, str]]:
    """sip_trunk: the daemon passes its own SIP dialer; elsewhere the daemon's API is used."""
    dialers: dict[str, Dialer] = {}
    unavailable: dict[str, str] = {}
    out = settings.outbound
    token = secrets.optional("api_token") or ""
    if sip_trunk is not None:
        dialers["sip-trunk"] = sip_trunk
    elif token and out.trunk.host:
        from bridge.outbound.daemon_dialer import DaemonApiDialer

        host = settings.http.listen_host if settings.http.listen_host not in ("", "0.0.0.0") else "127.0.0.1"
        dialers["sip-trunk"] = DaemonApiDialer(f"http://{host}:{settings.http.listen_port}", token)
    else:
        unavailable["sip-trunk"] = SIP_TRUNK_UNAVAILABLE
    try:
        if not out.answer_url:
            raise ValueError("outbound.answer_url is not set")
        dialers["plivo-api"] = PlivoApiDialer(
            secrets.require("plivo_auth_id"),
            secrets.require("plivo_auth_token"),
            out.answer_url,
            api_base_url=out.plivo_api_url,
            hangup_url=out.hangup_url,
            ring_timeout_s=out.ring_timeout_s,
            time_limit_s=settings.plivo.time_limit_s,
            machine_detection=out.machine_detection,
            timeout_s=settings.plivo.api_timeout_s,
            agent=agent,
        )
    except (MissingSecretError, ValueError) as exc:
        unavailable["plivo-api"] = f"the plivo-api path is not configured: {exc}"
    except Exception as exc:  # the SDK rejects a malformed auth id with its own error type
        unavailable["plivo-api"] = f"the plivo-api path is not configured: {type(exc).__name__}: {exc}"
    return dialers, unavailable


def open_outbound(
    settings: Settings,
    secrets: Secrets | None = None,
    clock: Clock | None = None,
    dialers: dict[str, Dialer] | None = None,
    agent: str = "",
    sip_trunk: Dialer | None = None,
) -> Outbound:
    """Open the stores and the gate; dialers from settings unless given (tests pass their own)."""
    clock = clock or SystemClock()
    registry = DndRegistry.open(data_dir(settings))
    store = OutboundStore.open(data_dir(settings))
    unavailable: dict[str, str] = {}
    if dialers is None:
        dialers, unavailable = build_dialers(settings, secrets or Secrets.from_env(), agent, sip_trunk)
    gate = ComplianceGate(settings.compliance, registry, store, clock.wall)
    service = OutboundService(gate, store, dialers)
    campaigns = CampaignStore(store.conn, lambda: clock.wall().timestamp())
    return Outbound(settings, registry, store, gate, service, campaigns, unavailable)
