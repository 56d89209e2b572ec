"""Run the daemon: SIP + HTTP (+ Plivo stream server), registration, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Any

from bridge.daemon.agents import build_agent
from bridge.daemon.calls import DaemonCallApp
from bridge.daemon.http_api import build_http_app, start_http
from bridge.daemon.load import LoadMonitor
from bridge.daemon.notify import Notifier
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)


def _open_outbound(settings: Settings, secrets: Secrets, sip: Any) -> Any:
    """POST /calls is served only when an API token is set (it places real calls)."""
    if secrets.api_token is None:
        return None
    from bridge.daemon.trunk_dialer import SipTrunkDialer
    from bridge.outbound.wiring import open_outbound

    trunk = SipTrunkDialer(sip, settings, secrets) if settings.outbound.trunk.host else None
    return open_outbound(settings, secrets, agent=settings.daemon.agent, sip_trunk=trunk)


async def serve(settings: Settings, secrets: Secrets) -> int:
    from bridge.sip.registration import RegistrationClient
    from bridge.sip.server import SipServer

    notifier = Notifier()
    agent = await build_agent(settings, secrets)
    bind_host = settings.sip.listen_host
    app = DaemonCallApp(settings, agent, bind_host="0.0.0.0" if bind_host in ("", "0.0.0.0") else bind_host)
    sip = SipServer(settings.sip, app, secrets)
    registration = RegistrationClient(settings.sip, secrets, sip)
    stream = None
    if settings.daemon.stream_listen:  # Plivo audio-stream WebSocket server
        from bridge.stream.server import StreamServer

        stream = StreamServer(settings, secrets, agent)
    state: dict[str, Any] = {"sip_bound": False}
    load = LoadMonitor(settings.daemon.shed_loop_lag_ms)
    app.overloaded = load.overloaded
    if stream is not None:
        stream.overloaded = load.overloaded

    def health() -> dict[str, Any]:
        # "load" is what a dispatcher or an operator compares across instances
        return {
            "status": "draining" if app.draining else "overloaded" if load.shedding else "ok",
            "sip_bound": state["sip_bound"],
            "sip_port": state.get("sip_port"),
            "registration": registration.state,
            "active_calls": app.active_calls,
            "rtp_ports_in_use": app.ports_in_use,
            "draining": app.draining,
            "agent": settings.daemon.agent,
            "stream_calls": stream.active_calls if stream is not None else None,
            "load": {"calls": app.active_calls + (stream.active_calls if stream is not None else 0),
                     **load.snapshot()},
        }

    outbound = _open_outbound(settings, secrets, sip)
    routes: list[Any] = []
    if outbound is not None:
        from bridge.outbound.http_api import calls_routes

        token = secrets.require("api_token")
        ids = settings.compliance.registered_caller_ids
        routes = calls_routes(
            outbound.service, token, settings.outbound.via, ids[0] if ids else "", outbound.unavailable
        )
    runner, http_port = await start_http(
        build_http_app(health, routes), settings.http.listen_host, settings.http.listen_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # No live reload: a stray SIGHUP (a closed terminal, `kill -HUP`) must not end the calls.
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.warning("SIGHUP ignored: restart the daemon to apply new settings")
    )

    load.start()
    await sip.start()
    state.update(sip_bound=True, sip_port=sip.bound_port)
    await registration.start()
    if stream is not None:
        await stream.start()
    log.info(
        "voice-bridge ready",
        extra={
            "sip": f"{settings.sip.listen_host}:{sip.bound_port}",
            "http": f"{settings.http.listen_host}:{http_port}",
            "agent": settings.daemon.agent,
            "max_calls": settings.sip.max_calls,
        },
    )
    # Machine-readable line for supervisors and tests that start us on port 0.
    print(f"READY sip_port={sip.bound_port} http_port={http_port}", flush=True)
    notifier.ready(f"sip on {sip.bound_port}, http on {http_port}")
    notifier.start_watchdog()
    from bridge.daemon.retention import run_retention

    retention = asyncio.get_running_loop().create_task(run_retention(settings), name="retention")
    # Everything built so far lives as long as the process: keep it out of the cyclic GC's
    # scans, which otherwise walk the SDKs' and models' objects during calls.
    gc.freeze()

    await stop.wait()
    retention.cancel()
    # Drain: refuse new calls, leave the registrar, let calls finish up to the drain timeout.
    log.info(
        "draining",
        extra={"active_calls": app.active_calls, "drain_timeout_s": settings.daemon.drain_timeout_s},
    )
    notifier.stopping()
    app.draining = True
    sip.set_draining(True)
    if stream is not None:
        stream.begin_drain()
    with contextlib.suppress(Exception):
        await registration.stop()
    if not await app.wait_idle(settings.daemon.drain_timeout_s):
        log.info("drain timeout: hanging up remaining calls", extra={"active_calls": app.active_calls})
        await app.hangup_all("drain")
        await app.wait_idle(5.0)
    if stream is not None:
        await stream.stop(settings.daemon.drain_timeout_s)
    await sip.stop()
    await runner.cleanup()
    await load.stop()
    if outbound is not None:
        outbound.close()
    await notifier.stop()
    log.info("voice-bridge stopped")
    return 0
