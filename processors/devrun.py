"""``paystream run``: every process at once, for local use.

Starts ``ingest``, ``process``, ``fetch`` and ``archive`` as child processes (their JSON logs go to
``.local/run/<name>.log``), waits until ingest is ready, then follows the status stream in the
foreground like ``paystream tail``. Ctrl-C (or SIGTERM) stops every child gracefully, then forcefully
after a grace period; no child outlives it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from paystream.config import Settings

PROCESSES = ("ingest", "process", "fetch", "archive")
GRACE_S = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="+", choices=PROCESSES, default=list(PROCESSES),
                        help="start only these processes (default: all)")
    parser.add_argument("--log-dir", type=Path, default=Path(".local/run"),
                        help="where the children's logs go (default: .local/run)")
    parser.add_argument("--no-tail", action="store_true",
                        help="do not follow the status stream; just keep the processes running")
    parser.add_argument("--ready-timeout", type=float, default=60.0,
                        help="seconds to wait for ingest's /readyz (default: 60)")


@dataclass
class Supervisor:
    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            self.children[name] = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # our Ctrl-C handling decides when they stop
                env=env,
            )
        print(f"[run] started {name} (pid {self.children[name].pid}), log {log_path}", flush=True)

    def failed(self) -> list[str]:
        return [name for name, child in self.children.items() if child.poll() is not None]

    def stop_all(self, grace_s: float = GRACE_S) -> None:
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"[run] {name} did not stop within {grace_s:.0f}s; killing it", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        print("[run] all processes stopped", flush=True)


def wait_ready(url: str, supervisor: Supervisor, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = supervisor.failed()
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during start-up; see {supervisor.log_dir}/")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own loopback URL)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"ingest not ready at {url} after {timeout_s:.0f}s; see {supervisor.log_dir}/ingest.log")


def run_all(settings: Settings, args: argparse.Namespace) -> int:
    supervisor = Supervisor(args.log_dir)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    try:
        for name in args.only:
            supervisor.start(name, [sys.executable, "-m", "paystream.cli", name])
        if "ingest" in args.only:
            host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host  # noqa: S104
            wait_ready(f"http://{host}:{settings.http.port}/readyz", supervisor, args.ready_timeout)
            print(f"[run] ingest ready on http://{host}:{settings.http.port}", flush=True)
        if args.no_tail:
            while not supervisor.failed():
                time.sleep(1)
            print(f"[run] {', '.join(supervisor.failed())} exited; stopping", flush=True)
            return 1
        from processors.tail import main as tail

        return tail(settings, argparse.Namespace(from_beginning=True, payment=None, json=False, max_events=0))
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"[run] {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("[run] stopping ...", flush=True)
        supervisor.stop_all()
