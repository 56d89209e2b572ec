"""The daemon's HTTP side: GET /healthz (JSON) and GET /metrics (Prometheus), plus extra
routes mounted by other parts (e.g. the outbound POST /calls API)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.metrics import REGISTRY

HealthFn = Callable[[], dict[str, Any]]


def build_http_app(health: HealthFn, extra_routes: Iterable[web.RouteDef] = ()) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        body = health()
        # 503 while draining, shedding load or not bound, so a load balancer stops sending new calls.
        shedding = bool(body.get("load", {}).get("shedding", False))
        ok = body.get("sip_bound", False) and not body.get("draining", False) and not shedding
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(REGISTRY))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/metrics", metrics), *extra_routes])
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # runner.addresses holds the real bound address (port 0 -> an ephemeral port)
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound
