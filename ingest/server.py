"""``paystream ingest``: serve the ingest app with uvicorn (uvloop + httptools).

One process per core by default in production (``--workers``); Kubernetes usually runs one worker per
pod and scales pods instead. With several workers, Prometheus metrics are aggregated through a
multiprocess directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import uvicorn

from ingest.http_protocol import GuardedHttpToolsProtocol
from paystream.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: PAYSTREAM_HTTP__HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PAYSTREAM_HTTP__PORT, 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (default: PAYSTREAM_HTTP__WORKERS, 1)")


def uvicorn_config(settings: Settings, *, host: str, port: int, workers: int) -> uvicorn.Config:
    return uvicorn.Config(
        "ingest.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools, plus a deadline and a size cap for the request head
        http=GuardedHttpToolsProtocol.configured(settings.http.header_timeout_s, settings.http.max_head_bytes),
        lifespan="on",
        access_log=False,  # one structured line per rejection is ours to write; 2xx are counted
        proxy_headers=False,  # no client address is used; skips a middleware hop per request
        log_config=None,  # structlog owns logging
        timeout_keep_alive=int(settings.http.keepalive_timeout_s),
        timeout_graceful_shutdown=int(settings.kafka.send_timeout_s * 2),
        h11_max_incomplete_event_size=16 * 1024,  # headers larger than this are refused
        limit_concurrency=4096,
        backlog=2048,
    )


def main(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.http.host
    port = args.port if args.port is not None else settings.http.port
    workers = args.workers or settings.http.workers
    if workers > 1 and settings.metrics_multiproc_dir is None:
        # Exported for the worker processes: prometheus_client reads PROMETHEUS_MULTIPROC_DIR itself,
        # our settings read the PAYSTREAM_ twin.
        directory = tempfile.mkdtemp(prefix="paystream-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ["PAYSTREAM_METRICS_MULTIPROC_DIR"] = directory
    server = uvicorn.Server(uvicorn_config(settings, host=host, port=port, workers=workers))
    if workers > 1:
        sock = server.config.bind_socket()
        uvicorn.supervisors.Multiprocess(server.config, sockets=[sock]).run()
    else:
        server.run()
    return 0
