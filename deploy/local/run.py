"""`make run`: the whole pipeline locally on its embedded defaults, with demo traffic.

1. starts the local stack (Kafka from Maven Central jars, moto S3) and the archive bucket;
2. prepares throw-away demo keys (deploy/local/demo_material.py) and starts the local test provider;
3. runs `paystream run` (ingest, process, fetch, archive + the status stream in the foreground);
4. starts the demo traffic generator once ingest is ready, and the toy fulfillment service
   (deploy/local/fulfillment_example.py, docs/consumers.md) whose decisions appear as `[fulfillment]` lines.
Ctrl-C stops everything it started (the stack too, unless it was already running).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import demo_material  # noqa: E402

PYTHON = sys.executable


def wait_http(url: str, timeout_s: float, alive: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (alive is None or alive.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback)
                return True
        except OSError:
            time.sleep(0.3)
    return False


def ensure_bucket(env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "-c", (
        "import boto3, botocore.exceptions as e\n"
        "from paystream.config import load_settings\n"
        "s = load_settings().s3\n"
        "c = boto3.client('s3', endpoint_url=s.endpoint_url or None, region_name=s.region)\n"
        "try: c.create_bucket(Bucket=s.bucket)\n"
        "except e.ClientError as x:\n"
        "    if x.response['Error']['Code'] not in ('BucketAlreadyOwnedByYou', 'BucketAlreadyExists'): raise\n"
    )], check=True, env=env, cwd=ROOT)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=25)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Explicit handlers: a shell may start us with SIGINT ignored (background jobs), and SIGTERM
    # (e.g. from a supervisor) must clean up like Ctrl-C does.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = [PYTHON, str(HERE / "stack.py")]
    # A stack that was already running (`make stack-up`, another checkout's tests) is left running at exit.
    was_running = subprocess.run([*stack, "status"], cwd=ROOT, check=False,
                                 capture_output=True).returncode == 0
    if subprocess.run([*stack, "start"], cwd=ROOT, check=False).returncode != 0:
        if not was_running:
            subprocess.run([*stack, "stop"], cwd=ROOT, check=False)
        return 1
    material = demo_material.prepare()
    # moto accepts any credentials; `make run` exports these too, so running this file directly works alike.
    moto_credentials = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    env = {**moto_credentials, **os.environ, **material.env}
    log_dir = ROOT / ".local" / "run"
    log_dir.mkdir(parents=True, exist_ok=True)
    provider = pipeline = traffic = fulfillment = None
    try:
        ensure_bucket(env)
        with (log_dir / "provider.log").open("ab") as log:
            provider = subprocess.Popen(
                [PYTHON, str(ROOT / "tests" / "provider_double" / "server.py"),
                 "--port", str(demo_material.PROVIDER_PORT),
                 "--amazon-public-key", f"{demo_material.AMAZON_PAY_KEY_ID}={material.amazon_pay_public_key}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT, env=env,
            )
        if not wait_http(f"http://127.0.0.1:{demo_material.PROVIDER_PORT}/_double/requests", 20, alive=provider):
            print("[run] the local test provider did not start; see .local/run/provider.log", file=sys.stderr)
            return 1
        pipeline = subprocess.Popen([PYTHON, "-m", "paystream.cli", "--log-format", "json", "run"],
                                    cwd=ROOT, env=env, start_new_session=True)
        if wait_http(f"{demo_material.INGEST_URL}/readyz", 90, alive=pipeline):
            with (log_dir / "demo-traffic.log").open("ab") as log:
                traffic = subprocess.Popen([PYTHON, str(HERE / "demo_traffic.py"), "--loop"], cwd=ROOT, env=env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            print("[run] demo traffic started (log: .local/run/demo-traffic.log); Ctrl-C stops everything",
                  flush=True)
            # Its decisions go to this terminal (`[fulfillment] ...` lines between the status lines); its own
            # log lines to a file.
            with (log_dir / "fulfillment.log").open("ab") as log:
                fulfillment = subprocess.Popen([PYTHON, str(HERE / "fulfillment_example.py")], cwd=ROOT, env=env,
                                               stderr=log, start_new_session=True)
            print("[run] fulfillment example started: its decisions are the [fulfillment] lines (orders in "
                  ".local/fulfillment/orders.sqlite3, log .local/run/fulfillment.log)", flush=True)
        return pipeline.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not skip the clean-up
            signal.signal(signum, signal.SIG_IGN)
        for process in (traffic, fulfillment, pipeline, provider):
            stop(process)
        if not was_running:
            subprocess.run([*stack, "stop"], cwd=ROOT, check=False)


if __name__ == "__main__":
    sys.exit(main())
