"""Ingest benchmark (DESIGN §8): verified + Kafka-acknowledged deliveries per second for ONE ingest process.

    .venv/bin/python -m bench.ingest            # needs the local broker (make stack-up); ~45 s

In one run, on this machine: a no-op ASGI app on the same stack (uvicorn + uvloop + httptools, the
production ``ingest.server.uvicorn_config``), then the real ``paystream ingest`` process with one Stripe
account (HMAC) and one Amazon Pay account (SNS RSA-SHA256, signing certificate pre-seeded from a PEM
directory). Each server is a subprocess with one worker; the load generator is another process (uvloop,
keep-alive HTTP/1.1 connections sending pre-serialized requests). For each target:

* closed loop: ``CONCURRENCY`` clients post back to back for ``CLOSED_S`` seconds → deliveries/s
  (2xx only; for the real app a 2xx means verified and acknowledged by Kafka with acks=all);
* open loop: a steady ``RATE`` requests/s for ``OPEN_S`` seconds, each request's latency measured from
  its *scheduled* send time (no coordinated omission) → p50 / p99.

Payloads are ~1.5 KB. The ratio real/no-op is the quality bar (goal ≥ 0.5), with p99 ≤ 10 ms at 1,000/s.
The run prints a table and writes bench/results/ingest.json. Everything listens on 127.0.0.1 only, and
the topic it creates is deleted at the end. Note: server, load generator and broker share the machine's
cores, so the figures are a floor for a dedicated host, and the no-op figure is partly bounded by the
generator itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ingest.json"
CONCURRENCY = 64
CLOSED_S = 4.0
RATE = 1000
OPEN_S = 10.0
OPEN_CONNECTIONS = 128
NOOP_OPEN_S = 5.0
WARMUP_S = 1.0
PAYLOAD_BYTES = 1536
SNS_POOL = 400  # RSA signing costs ~1 ms each: a pool of distinct signed messages is cycled
STRIPE_SECRET = "whsec_bench_" + "k" * 24
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:paystream-bench"
CERT_NAME = "SimpleNotificationService-paystreambench.pem"
CERT_URL = f"https://sns.eu-west-1.amazonaws.com/{CERT_NAME}"
ACCOUNT = "bench"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# --- the no-op app: same server stack, no verification, no Kafka ----------------------------------------


async def noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the body, as the real app does
        message = await receive()
        more = bool(message.get("more_body", False))
    body = b'{"status":"accepted"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve_noop(port: int) -> None:
    import uvicorn

    from ingest.server import uvicorn_config
    from paystream.config import load_settings

    config = uvicorn_config(load_settings(), host="127.0.0.1", port=port, workers=1)
    config.app, config.factory = noop_app, False
    uvicorn.Server(config).run()


# --- payloads -------------------------------------------------------------------------------------------


def make_signing_material(directory: Path) -> Path:
    """An RSA key and a self-signed certificate for sns.amazonaws.com, the PEM pre-seeded by file name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA256())
    )
    certs = directory / "sns-certs"
    certs.mkdir()
    (certs / CERT_NAME).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "sns-signing-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key_file


def stripe_payloads(count: int) -> list[tuple[bytes, dict[str, str]]]:
    import orjson

    from ingest.providers.signers import sign_stripe

    now = int(time.time())
    payloads = []
    for _ in range(count):
        event: dict[str, Any] = {
            "id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": "payment_intent.succeeded",
            "created": now, "livemode": False,
            "data": {"object": {"id": f"pi_{uuid.uuid4().hex[:24]}", "object": "payment_intent", "amount": 1999,
                                "currency": "eur", "status": "succeeded", "metadata": {"order": "x"}}},
        }
        pad = PAYLOAD_BYTES - len(orjson.dumps(event))
        event["data"]["object"]["metadata"]["order"] = "o" * max(1, pad)
        body = orjson.dumps(event)
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign_stripe(body, STRIPE_SECRET, now)}
        payloads.append((body, headers))
    return payloads


def sns_payloads(count: int, key_file: Path) -> list[tuple[bytes, dict[str, str]]]:
    import orjson
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from ingest.providers.signers import sign_sns

    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payloads = []
    for _ in range(count):
        inner = {"ObjectType": "CHARGE", "ObjectId": f"S02-{uuid.uuid4().hex[:7]}-{uuid.uuid4().hex[:7]}",
                 "ChargePermissionId": "S02-1234567-7654321", "NotificationType": "STATE_CHANGE",
                 "NotificationId": str(uuid.uuid4()), "NotificationVersion": "V1", "MerchantID": "X"}
        message: dict[str, object] = {
            "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC_ARN,
            "Message": orjson.dumps(inner).decode(), "Timestamp": stamp, "SignatureVersion": "2",
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": f"https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC_ARN}",
        }
        # the signature adds ~350 bytes of base64: pad the inner message so the whole body is ~1.5 KB
        inner["MerchantID"] = "M" * max(1, PAYLOAD_BYTES - 350 - len(orjson.dumps(message)))
        message["Message"] = orjson.dumps(inner).decode()
        body = orjson.dumps(sign_sns(message, key))
        payloads.append((body, {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}))
    return payloads


# --- the load generator (its own process) ----------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): the server's cost, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection sending pre-serialized requests (far cheaper than a full client:
    on two shared cores, the generator's own CPU would otherwise be what the no-op figure measures)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        at = lowered.index(b"content-length:") + len(b"content-length:")
        await self.reader.readexactly(int(lowered[at:lowered.index(b"\r\n", at)]))
        return status

    def close(self) -> None:
        self.writer.close()


def serialize(path: str, payloads: list[tuple[bytes, dict[str, str]]]) -> list[bytes]:
    requests = []
    for body, headers in payloads:
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return requests


async def closed_loop(port: int, requests: list[bytes], seconds: float) -> dict[str, Any]:
    counter = iter(range(10**9))
    ok = errors = 0
    connections = [await Connection.open(port) for _ in range(CONCURRENCY)]
    deadline = time.perf_counter() + seconds

    async def client(connection: Connection) -> None:
        nonlocal ok, errors
        while time.perf_counter() < deadline:
            status = await connection.exchange(requests[next(counter) % len(requests)])
            if 200 <= status < 300:
                ok += 1
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {"concurrency": CONCURRENCY, "seconds": round(elapsed, 2), "ok": ok, "errors": errors,
            "per_s": round(ok / elapsed, 1)}


async def open_loop(port: int, requests: list[bytes], rate: int, seconds: float) -> dict[str, Any]:
    """Requests on a fixed schedule; a request waiting for a free connection is late, and that counts."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(OPEN_CONNECTIONS):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    errors = 0
    tasks: list[asyncio.Task[None]] = []
    total = int(rate * seconds)

    async def fire(index: int, scheduled: float) -> None:
        nonlocal errors
        connection = await idle.get()
        status = await connection.exchange(requests[index % len(requests)])
        idle.put_nowait(connection)
        if 200 <= status < 300:
            latencies.append(time.perf_counter() - scheduled)
        else:
            errors += 1

    started = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and started + sent / rate <= now:  # everything due by now, on schedule
            tasks.append(asyncio.create_task(fire(sent, started + sent / rate)))
            sent += 1
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait().close()
    ordered = sorted(latencies)
    return {"rate": rate, "seconds": round(elapsed, 2), "ok": len(latencies), "errors": errors,
            "achieved_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(ordered, 0.50) * 1000, 2), "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else None}


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    pools: dict[str, list[tuple[bytes, dict[str, str]]]] = {}
    for scenario in spec["scenarios"]:
        kind = scenario["payload"]
        if kind not in pools:
            if kind == "stripe":
                pools[kind] = stripe_payloads(20_000)
            elif kind == "sns":
                pools[kind] = sns_payloads(SNS_POOL, Path(spec["sns_key"]))
            else:
                pools[kind] = stripe_payloads(2_000)  # the no-op app gets the same bytes as the Stripe route
    results: dict[str, Any] = {"payload_bytes": {k: len(v[0][0]) for k, v in pools.items()}, "warmup_ok": 0}
    for scenario in spec["scenarios"]:
        requests = serialize(scenario["path"], pools[scenario["payload"]])
        warmup = await closed_loop(spec["port"], requests, WARMUP_S)  # connections, certificate cache
        results["warmup_ok"] += warmup["ok"]
        if spec.get("profile_signals"):  # bench.profile_ingest: profile the measured window only
            os.kill(spec["server_pid"], signal.SIGUSR1)
        cpu_before = cpu_seconds(spec["server_pid"])
        if scenario["mode"] == "closed":
            outcome = await closed_loop(spec["port"], requests, scenario["seconds"])
        else:
            outcome = await open_loop(spec["port"], requests, scenario["rate"], scenario["seconds"])
        server_cpu = cpu_seconds(spec["server_pid"]) - cpu_before
        if spec.get("profile_signals"):
            os.kill(spec["server_pid"], signal.SIGUSR2)
        outcome["server_cpu_s"] = round(server_cpu, 2)
        outcome["server_cpu_us_per_request"] = round(server_cpu / max(1, outcome["ok"]) * 1e6, 1)
        results[scenario["name"]] = outcome
    return results


def run_generator(spec_file: Path) -> None:
    import uvloop

    spec = json.loads(spec_file.read_text())
    results = uvloop.run(generate(spec))
    print(json.dumps(results))


# --- orchestration --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout_s:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _load(server: subprocess.Popen[bytes], port: int, scenarios: list[dict[str, Any]], sns_key: Path, scratch: Path,
          env: dict[str, str], *, profile_signals: bool = False) -> Any:
    spec_file = scratch / f"spec-{uuid.uuid4().hex[:6]}.json"
    spec = {"port": port, "server_pid": server.pid, "scenarios": scenarios, "sns_key": str(sns_key),
            "profile_signals": profile_signals}
    spec_file.write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-m", "bench.ingest", "load", str(spec_file)], cwd=ROOT, env=env,
                         capture_output=True, check=False, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr.decode()[-3000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


async def _create_topic(settings: Any) -> None:
    from paystream.kafka import ensure_topics

    await ensure_topics(settings)


async def _finish_topic(settings: Any) -> int:
    """Records on the bench inbox topic (to check against the 2xx count), then delete the run's topics."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topics.inbox, p) for p in range(settings.topics.partitions)]
        count = sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(settings.topics.all_names())
    finally:
        await admin.close()
    return int(count)


def prepare() -> tuple[Any, Path, Path, dict[str, str]]:
    """Fresh bench topics, signing material and a config for the real app: (settings, scratch, sns key, env)."""
    from paystream.config import load_settings
    from paystream.kafka import check_metadata

    base = load_settings()
    asyncio.run(check_metadata(base.kafka.bootstrap))  # fails loudly when the broker is not there
    tag = f"bench{uuid.uuid4().hex[:8]}"
    topics = base.topics.model_copy(update={name: f"{tag}.{getattr(base.topics, name)}" for name in
                                            ("inbox", "fetch_requests", "fetch_results", "status", "dlq")})
    settings = base.model_copy(update={"topics": topics})
    asyncio.run(_create_topic(settings))
    scratch = Path(tempfile.mkdtemp(prefix="paystream-bench-"))
    sns_key = make_signing_material(scratch)
    config = scratch / "paystream.toml"
    config.write_text(f'[accounts.stripe.{ACCOUNT}]\nsecrets = ["env:PAYSTREAM_BENCH_STRIPE_SECRET"]\n\n'
                      f'[accounts.amazon_pay.{ACCOUNT}]\nallowed_topic_arns = ["{TOPIC_ARN}"]\n')
    env = {**os.environ, "PAYSTREAM_CONFIG_FILE": str(config), "PAYSTREAM_BENCH_STRIPE_SECRET": STRIPE_SECRET,
           "PAYSTREAM_SNS__CERT_DIR": str(scratch / "sns-certs"), "PAYSTREAM_TOPICS__INBOX": topics.inbox,
           "PAYSTREAM_KAFKA_BOOTSTRAP": base.kafka.bootstrap, "PAYSTREAM_LOG_LEVEL": "warning",
           "PYTHONPATH": str(ROOT)}
    return settings, scratch, sns_key, env


def run() -> dict[str, Any]:
    settings, scratch, sns_key, env = prepare()
    results: dict[str, Any] = {"command": ".venv/bin/python -m bench.ingest",
                               "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                               "cpus": os.cpu_count(), "concurrency": CONCURRENCY, "rate": RATE}

    port = _free_port()
    noop = subprocess.Popen([sys.executable, "-m", "bench.ingest", "serve-noop", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", noop)
        results["noop"] = _load(noop, port, [
            {"name": "closed", "mode": "closed", "payload": "noop", "path": "/", "seconds": CLOSED_S},
            {"name": "open", "mode": "open", "payload": "noop", "path": "/", "rate": RATE, "seconds": NOOP_OPEN_S},
        ], sns_key, scratch, env)
    finally:
        _stop(noop)

    port = _free_port()
    real = subprocess.Popen([sys.executable, "-m", "paystream.cli", "ingest", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_http(f"http://127.0.0.1:{port}/readyz", real)
        results["real"] = _load(real, port, [
            {"name": "stripe_closed", "mode": "closed", "payload": "stripe", "path": f"/webhooks/stripe/{ACCOUNT}",
             "seconds": CLOSED_S},
            {"name": "sns_closed", "mode": "closed", "payload": "sns", "path": f"/webhooks/amazon_pay/{ACCOUNT}",
             "seconds": CLOSED_S},
            {"name": "stripe_open", "mode": "open", "payload": "stripe", "path": f"/webhooks/stripe/{ACCOUNT}",
             "rate": RATE, "seconds": OPEN_S},
            {"name": "sns_open", "mode": "open", "payload": "sns", "path": f"/webhooks/amazon_pay/{ACCOUNT}",
             "rate": RATE, "seconds": OPEN_S},
        ], sns_key, scratch, env)
    finally:
        _stop(real)
    results["inbox_records"] = asyncio.run(_finish_topic(settings))
    real_results = results["real"]
    scenarios = [v for v in real_results.values() if isinstance(v, dict) and "ok" in v]
    results["accepted_2xx"] = real_results["warmup_ok"] + sum(v["ok"] for v in scenarios)
    noop_rate = results["noop"]["closed"]["per_s"]
    results["ratio_to_noop"] = {
        "stripe": round(real_results["stripe_closed"]["per_s"] / noop_rate, 3),
        "sns": round(real_results["sns_closed"]["per_s"] / noop_rate, 3),
    }
    # The same ratio from the server's own CPU per request: robust to whatever else shares the cores.
    noop_cpu = results["noop"]["closed"]["server_cpu_us_per_request"]
    results["cpu_ratio_to_noop"] = {
        "stripe": round(noop_cpu / real_results["stripe_closed"]["server_cpu_us_per_request"], 3),
        "sns": round(noop_cpu / real_results["sns_closed"]["server_cpu_us_per_request"], 3),
    }
    return results


def table(results: dict[str, Any]) -> str:
    noop, real = results["noop"], results["real"]
    rows = [
        ("no-op ASGI (same stack)", noop["closed"], (1.0, 1.0), noop["open"]),
        ("Stripe HMAC + Kafka ack", real["stripe_closed"],
         (results["ratio_to_noop"]["stripe"], results["cpu_ratio_to_noop"]["stripe"]), real["stripe_open"]),
        ("SNS RSA + Kafka ack", real["sns_closed"],
         (results["ratio_to_noop"]["sns"], results["cpu_ratio_to_noop"]["sns"]), real["sns_open"]),
    ]
    lines = [f"ingest: one uvicorn process (uvloop+httptools); {results['cpus']} cores shared with broker and load",
             f"{'':<24}{'--- closed loop (' + str(results['concurrency']) + ' conns) ---':>36}"
             f"{'--- open loop ' + str(results['rate']) + '/s ---':>28}",
             f"{'target':<24}{'req/s':>8}{'ratio':>7}{'cpu us/req':>11}{'cpu ratio':>10}"
             f"{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'err':>5}",
             "-" * 89]
    for name, closed, (ratio, cpu_ratio), open_ in rows:
        errors = closed["errors"] + open_["errors"]
        lines.append(f"{name:<24}{closed['per_s']:>8.0f}{ratio:>7.2f}{closed['server_cpu_us_per_request']:>11.0f}"
                     f"{cpu_ratio:>10.2f}{open_['achieved_per_s']:>8.0f}{open_['p50_ms']:>8.2f}{open_['p99_ms']:>8.2f}"
                     f"{errors:>5}")
    lines.append(f"inbox records {results['inbox_records']} = {results['accepted_2xx']} 2xx answers (incl. warm-up); "
                 "ratio = req/s vs no-op, cpu ratio = server CPU per request vs no-op")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    noop = sub.add_parser("serve-noop", help="(internal) serve the no-op app")
    noop.add_argument("--port", type=int, required=True)
    load = sub.add_parser("load", help="(internal) run the load generator on a spec file")
    load.add_argument("spec", type=Path)
    args = parser.parse_args(argv)
    if args.command == "serve-noop":
        serve_noop(args.port)
        return 0
    if args.command == "load":
        run_generator(args.spec)
        return 0
    results = run()
    print(table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
