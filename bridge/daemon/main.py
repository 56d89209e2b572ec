"""Run the daemon: SIP + HTTP (+ Plivo stream server), registration, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable
from typing import Any

from bridge.admission import Admission
from bridge.daemon.agents import build_agent
from bridge.daemon.calls import DaemonCallApp
from bridge.daemon.gc_policy import settle_gc
from bridge.daemon.http_api import build_http_app, start_http
from bridge.daemon.load import LoadMonitor
from bridge.daemon.notify import Notifier
from bridge.event_loop import loop_name
from bridge.settings import Secrets, Settings
from bridge.supervisor import CallSupervisor

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start: ``key: reason`` as `check` prints problems."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")


async def _bind(key: str, where: str, start: Awaitable[Any]) -> Any:
    """Run one listener's start; a port in use or an address not on this machine becomes a
    StartupError naming the setting, not a traceback."""
    try:
        return await start
    except OSError as exc:
        raise StartupError(key, f"cannot listen on {where}: {exc.strerror or exc}") from None


def _open_outbound(settings: Settings, secrets: Secrets, sip: Any) -> Any:
    """POST /calls is served only when an API token is set (it places real calls)."""
    if secrets.api_token is None:
        return None
    from bridge.daemon.trunk_dialer import SipTrunkDialer
    from bridge.outbound.wiring import open_outbound

    trunk = SipTrunkDialer(sip, settings, secrets) if settings.outbound.trunk.host else None
    return open_outbound(settings, secrets, agent=settings.daemon.agent, sip_trunk=trunk)


async def _until_idle_or(idle: Awaitable[bool], hurry: asyncio.Event) -> bool:
    """The drain's wait: True once the calls are over, False at its timeout or when ``hurry``
    is set (a second SIGTERM: the operator does not want to wait)."""
    idle_task = asyncio.ensure_future(idle)
    hurry_task = asyncio.ensure_future(hurry.wait())
    try:
        await asyncio.wait({idle_task, hurry_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurry_task.cancel()
    if idle_task.done():
        return bool(idle_task.result())
    idle_task.cancel()
    return False


async def serve(settings: Settings, secrets: Secrets) -> int:
    from bridge.sip.registration import RegistrationClient
    from bridge.sip.server import SipServer

    notifier = Notifier()
    agent = await build_agent(settings, secrets)
    bind_host = settings.sip.listen_host
    admission = Admission(settings.sip.max_calls)  # SIP and stream calls share the capacity
    calls = CallSupervisor(agent, admission)  # ... and the drain and the end of every call
    rest = None
    if secrets.plivo_auth_id is not None and secrets.plivo_auth_token is not None:
        from bridge.stream.rest import PlivoRestControl

        rest = PlivoRestControl(settings.plivo, secrets)  # transfers of Plivo XML-app calls
    app = DaemonCallApp(settings, calls, bind_host="0.0.0.0" if bind_host in ("", "0.0.0.0") else bind_host,
                        rest=rest)
    sip = SipServer(settings.sip, app, secrets)
    registration = RegistrationClient(settings.sip, secrets, sip)
    stream = None
    if settings.daemon.stream_listen:  # Plivo audio-stream WebSocket server
        from bridge.stream.server import StreamServer

        stream = StreamServer(settings, secrets, calls)
    state: dict[str, Any] = {"sip_bound": False}
    load = LoadMonitor(settings.daemon.shed_loop_lag_ms, settings.daemon.shed_cpu_percent)
    running_loop = loop_name()  # daemon.event_loop, or asyncio when uvloop is missing
    admission.overloaded = load.overloaded  # SIP and stream calls are shed alike

    def health() -> dict[str, Any]:
        # "load" is what a dispatcher or an operator compares across instances
        return {
            "status": "draining" if calls.draining else "overloaded" if load.shedding else "ok",
            "sip_bound": state["sip_bound"],
            "sip_port": state.get("sip_port"),
            "registration": registration.state,
            "active_calls": app.active_calls,
            "rtp_ports_in_use": app.ports_in_use,
            "draining": calls.draining,
            "agent": settings.daemon.agent,
            "event_loop": running_loop,
            "stream_calls": stream.active_calls if stream is not None else None,
            # False while it stepped out of the stream port's group, busy (or draining)
            "stream_listening": stream.listening if stream is not None else None,
            "load": {"calls": calls.active(),
                     **load.snapshot()},
        }

    outbound = _open_outbound(settings, secrets, sip)
    routes: list[Any] = []
    if outbound is not None:
        from bridge.outbound.api_limits import ApiLimits
        from bridge.outbound.http_api import calls_routes

        token = secrets.require("api_token")
        ids = settings.compliance.registered_caller_ids
        out = settings.outbound
        limits = ApiLimits(out.api_calls_per_number, out.api_number_window_s, out.api_bad_tokens,
                           out.api_lockout_s)
        routes = calls_routes(
            outbound.service, token, out.via, ids[0] if ids else "", outbound.unavailable, limits
        )
    http = settings.http
    runner, http_port = await _bind(
        "http.listen_host/listen_port", f"{http.listen_host}:{http.listen_port}",
        start_http(build_http_app(health, routes), http.listen_host, http.listen_port),
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
    try:
        await _bind("sip.listen_host/listen_port", f"{bind_host}:{settings.sip.listen_port}", sip.start())
        state.update(sip_bound=True, sip_port=sip.bound_port)
        await registration.start()
        if stream is not None:
            await _bind("daemon.stream_listen", settings.daemon.stream_listen, stream.start())
    except StartupError:
        with contextlib.suppress(Exception):  # undo what did start; the error is what matters
            await registration.stop()
            await sip.stop()
        await runner.cleanup()
        await load.stop()
        raise
    log.info(
        "voice-bridge ready",
        extra={
            "sip": f"{settings.sip.listen_host}:{sip.bound_port}",
            "http": f"{settings.http.listen_host}:{http_port}",
            "agent": settings.daemon.agent,
            "max_calls": settings.sip.max_calls,
            "event_loop": running_loop,
        },
    )
    # Machine-readable line for supervisors and tests that start us on port 0.
    print(f"READY sip_port={sip.bound_port} http_port={http_port}", flush=True)
    notifier.ready(f"sip on {sip.bound_port}, http on {http_port}")
    notifier.start_watchdog()
    from bridge.daemon.retention import run_retention

    retention = asyncio.get_running_loop().create_task(run_retention(settings), name="retention")
    # Everything built so far lives as long as the process: keep it out of the cyclic GC's
    # scans, which otherwise walk the SDKs' and models' objects during calls (gc_policy.py)
    settle_gc()

    await stop.wait()
    stop.clear()  # from here a second SIGTERM/SIGINT ends the drain at once
    retention.cancel()
    # Drain: refuse new calls, leave the registrar, let calls finish up to the drain timeout.
    log.info(
        "draining",
        extra={"active_calls": calls.active(), "drain_timeout_s": settings.daemon.drain_timeout_s},
    )
    notifier.stopping()
    calls.draining = True
    sip.set_draining(True)
    if stream is not None:
        stream.begin_drain()
    with contextlib.suppress(Exception):
        await registration.stop()
    # One drain time for both transports: the supervisor holds the calls of both.
    drained = await _until_idle_or(calls.wait_idle(settings.daemon.drain_timeout_s), stop)
    if not drained:
        why = "second signal" if stop.is_set() else "drain timeout"
        log.info("%s: hanging up remaining calls", why, extra={"active_calls": calls.active()})
        with contextlib.suppress(TimeoutError):  # a BYE transaction is bounded; so is this wait
            await asyncio.wait_for(calls.end_all("drain"), 5.0 + 5.0)
    if stream is not None:
        await stream.stop(0.0)
    await sip.stop()
    await runner.cleanup()
    await load.stop()
    if outbound is not None:
        outbound.close()
    await notifier.stop()
    log.info("voice-bridge stopped")
    return 0
