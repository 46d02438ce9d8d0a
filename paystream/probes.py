"""The small HTTP server every long-running process (fetch, archive, process) exposes for operations.

``GET /healthz`` — the process is alive (never depends on Kafka: a broker outage must not restart pods);
``GET /readyz`` — the process is connected and doing its work (the caller's ``ready`` callback: ``True``
when ready; ``False`` or a short reason, shown in the 503 body, when not);
``GET /metrics`` — Prometheus. Served on ``Settings.metrics_port``; port 0 disables it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from paystream import metrics
from paystream.config import Settings
from paystream.logs import get_logger

log = get_logger(__name__)


Ready = Callable[[], bool | str]


def build_app(ready: Ready, settings: Settings) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        answer = ready()
        if answer is True:
            return web.json_response({"status": "ready"})
        detail = answer if isinstance(answer, str) else "not connected yet"
        return web.json_response({"error": "not_ready", "detail": detail}, status=503)

    async def metrics_page(_request: web.Request) -> web.Response:
        body = metrics.exposition(settings.metrics_multiproc_dir)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


@contextlib.asynccontextmanager
async def probe_server(settings: Settings, ready: Ready, *, host: str = "0.0.0.0") -> AsyncIterator[None]:  # noqa: S104 (pods are reached from outside)
    if not settings.metrics_port:
        yield
        return
    runner = web.AppRunner(build_app(ready, settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, settings.metrics_port)
    await site.start()
    log.info("probe_server_started", port=settings.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()
