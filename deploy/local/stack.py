"""The local stack: a real single-node Kafka (KRaft) from Maven Central jars and a moto S3 server.

    python deploy/local/stack.py start [--fresh]   # idempotent: a running service is left alone
    python deploy/local/stack.py stop              # idempotent: a stopped service is a no-op
    python deploy/local/stack.py status

Kafka: `mvn dependency:copy-dependencies` resolves org.apache.kafka:kafka_2.13 plus a log4j2 backend
(deploy/local/pom.xml) into .cache/kafka-jars (git-ignored, reused when present); a combined
broker+controller configuration is written on 127.0.0.1, storage is formatted with
kafka.tools.StorageTool, kafka.Kafka starts with a small heap, and we wait for a metadata round trip
from Python. When PAYSTREAM_KAFKA_BOOTSTRAP / PAYSTREAM_S3_ENDPOINT_URL are set, those services are
used as they are and nothing is started.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from paystream.config import explicitly_set, load_settings  # noqa: E402
from paystream.kafka import check_metadata  # noqa: E402

POM = Path(__file__).with_name("pom.xml")
JARS = ROOT / ".cache" / "kafka-jars"
STATE = ROOT / ".local" / "stack"
KAFKA_START_TIMEOUT_S = 90.0
MOTO_START_TIMEOUT_S = 30.0
# 1 GiB: a full test run creates thousands of short-lived topic partitions (512 MiB ran out in long runs).
KAFKA_HEAP = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g")


class StackError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(
            f"'{name}' is not installed; it is needed {why}. "
            "On Debian/Ubuntu: apt-get update && apt-get install -y openjdk-17-jre-headless maven"
        )
    return path


@dataclass
class Service:
    name: str
    state: Path = STATE  # tests that need a broker of their own (to stop it) pass their own folder

    @property
    def pid_file(self) -> Path:
        return self.state / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie or a reused pid of another program must not count as ours.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if cmdline and self.marker().encode() in cmdline else None

    def spawned_alive(self) -> bool:
        """Whether the process we spawned still runs (right after spawn its cmdline is not java's yet)."""
        try:
            return _alive(int(self.pid_file.read_text().strip()))
        except (OSError, ValueError):
            return False

    def marker(self) -> str:
        return "kafka.Kafka" if self.name == "kafka" else "moto"

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.state.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop it ourselves
                env=env,
                cwd=ROOT,
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            say(f"{self.name} did not stop within {timeout_s:.0f}s; killing it")
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child; a zombie counts as gone
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --- Kafka ------------------------------------------------------------------------------------------


def resolve_jars() -> Path:
    marker = JARS / ".complete"
    if marker.exists() and any(JARS.glob("kafka_2.13-*.jar")):
        return JARS
    mvn = require_tool("mvn", "to resolve the Kafka broker jars from Maven Central")
    say(f"resolving Kafka jars with Maven into {JARS.relative_to(ROOT)} (first run only) ...")
    started = time.monotonic()
    shutil.rmtree(JARS, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={JARS}", "-DincludeScope=runtime"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"Maven could not resolve the Kafka jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    marker.write_text("ok\n")
    say(f"resolved {len(list(JARS.glob('*.jar')))} jars in {time.monotonic() - started:.1f}s")
    return JARS


def kafka_properties(data_dir: Path, host: str, port: int, controller_port: int) -> str:
    return f"""# written by deploy/local/stack.py: single-node KRaft, broker + controller in one process
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# The processor creates its repartition and changelog topics itself; nothing else should appear by accident
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
"""


LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="WARN"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="stdout"/></Root>
  </Loggers>
</Configuration>
"""


# Ids Kafka reserves (org.apache.kafka.common.Uuid: ZERO_UUID and METADATA_TOPIC_ID / ONE_UUID).
RESERVED_CLUSTER_IDS = frozenset({"AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAQ"})


def new_cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A cluster id as ``kafka-storage random-uuid`` makes one: a random UUID in unpadded base64url
    (22 characters).

    Like Kafka's own ``Uuid.randomUuid()``, draw again when the id would start with ``-`` (about 1 id in
    64): a command line reads such an id as an option (``StorageTool format -t -…`` stopped with
    "expected one argument", failing a start at random), and Kafka's tools never make one. The reserved
    ids are drawn again too.
    """
    while True:
        candidate = base64.urlsafe_b64encode(random_uuid().bytes).decode("ascii").rstrip("=")
        if not candidate.startswith("-") and candidate not in RESERVED_CLUSTER_IDS:
            return candidate


def format_command(jvm: list[str], cluster_id: str, props: Path) -> list[str]:
    """``StorageTool format`` for ``cluster_id``; ``--cluster-id=<id>`` in one argument, so even an id
    starting with ``-`` (one made elsewhere) is read as the option's value."""
    return [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)]


def start_kafka(bootstrap: str, fresh: bool, state: Path = STATE, cluster_id: str | None = None) -> Service:
    """Start (or find running) a single-node broker whose files live in ``state``; storage not formatted
    yet is formatted with ``cluster_id`` (a new one by default)."""
    service = Service("kafka", state)
    host, port = _host_port(bootstrap)
    if service.pid() is not None:
        say(f"Kafka already running (pid {service.pid()}) on {bootstrap}")
        wait_for_kafka(service, bootstrap, timeout_s=KAFKA_START_TIMEOUT_S)
        return service
    if _port_open(host, port):
        raise StackError(
            f"something else listens on {bootstrap}; stop it, or set PAYSTREAM_KAFKA_BOOTSTRAP={bootstrap} "
            "to use it as the broker"
        )
    java = require_tool("java", "to run the Kafka broker (Java 17+)")
    jars = resolve_jars()
    data_dir = state / "kafka-data"
    if fresh:
        shutil.rmtree(data_dir, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    props = state / "server.properties"
    props.write_text(kafka_properties(data_dir, host, port, port + 1))
    log4j = state / "log4j2.xml"
    log4j.write_text(LOG4J2)
    classpath = f"{jars}/*"
    jvm = [java, *KAFKA_HEAP.split(), "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
    if not (data_dir / "meta.properties").exists():
        result = subprocess.run(
            format_command(jvm, cluster_id or new_cluster_id(), props), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    started = time.monotonic()
    pid = service.spawn([*jvm, "kafka.Kafka", str(props)])
    say(f"starting Kafka (pid {pid}) on {bootstrap}; log: {service.log_file}")
    try:
        wait_for_kafka(service, bootstrap, timeout_s=KAFKA_START_TIMEOUT_S)
    except StackError as exc:
        # A broker recovering many partitions after an unclean stop (a machine restart) can take longer
        # than the wait; it keeps running, so a second start waits for it again.
        raise StackError(
            f"{exc}\nThe broker (pid {pid}) may still be recovering its storage after an unclean stop: "
            "'deploy/local/stack.py start' waits for it again, 'make stack-down' stops it, "
            "'deploy/local/stack.py start --fresh' starts on empty storage."
        ) from exc
    say(f"Kafka ready on {bootstrap} in {time.monotonic() - started:.1f}s")
    return service


def wait_for_kafka(service: Service | None, bootstrap: str, timeout_s: float) -> None:
    # aiokafka logs every refused connection while the broker boots; the final error says enough.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if service is not None and not service.spawned_alive():
            raise StackError(f"Kafka exited during start-up. Last log lines:\n{service.log_tail()}")
        try:
            brokers = asyncio.run(check_metadata(bootstrap, timeout_s=3.0))
            if brokers >= 1:
                return
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    tail = service.log_tail() if service is not None else ""
    raise StackError(f"Kafka at {bootstrap} not ready after {timeout_s:.0f}s ({last_error}).\n{tail}")


# --- moto S3 ----------------------------------------------------------------------------------------


def start_moto(endpoint: str, state: Path = STATE) -> Service:
    """Start (or find running) a moto S3 server whose files live in ``state``."""
    service = Service("moto", state)
    host, port = _host_port(endpoint.split("://", 1)[-1].rstrip("/"))
    if service.pid() is not None:
        say(f"moto S3 already running (pid {service.pid()}) on {endpoint}")
        return service
    if _port_open(host, port):
        raise StackError(f"something else listens on {endpoint}; stop it, or set PAYSTREAM_S3_ENDPOINT_URL to use it")
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        raise StackError("moto_server is not installed in this environment: pip install 'moto[server]'")
    pid = service.spawn([str(moto), "-H", host, "-p", str(port)])
    deadline = time.monotonic() + MOTO_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not service.spawned_alive():
            raise StackError(f"moto exited during start-up:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):  # noqa: S310 (loopback)
                say(f"moto S3 ready on {endpoint} (pid {pid})")
                return service
        except OSError:
            time.sleep(0.2)
    raise StackError(f"moto S3 not ready on {endpoint} after {MOTO_START_TIMEOUT_S:.0f}s:\n{service.log_tail()}")


# --- commands ---------------------------------------------------------------------------------------


def start(fresh: bool) -> None:
    settings = load_settings()
    if explicitly_set("PAYSTREAM_KAFKA_BOOTSTRAP"):
        say(f"using the existing Kafka at {settings.kafka.bootstrap} (PAYSTREAM_KAFKA_BOOTSTRAP is set)")
        wait_for_kafka(None, settings.kafka.bootstrap, timeout_s=30)
    else:
        start_kafka(settings.kafka.bootstrap, fresh)
    if explicitly_set("PAYSTREAM_S3_ENDPOINT_URL"):
        say(f"using the existing S3 at {settings.s3.endpoint_url or 'AWS'} (PAYSTREAM_S3_ENDPOINT_URL is set)")
    else:
        start_moto(settings.s3.endpoint_url)


def stop() -> None:
    external = {"kafka": "PAYSTREAM_KAFKA_BOOTSTRAP", "moto": "PAYSTREAM_S3_ENDPOINT_URL"}
    for name in ("moto", "kafka"):
        if explicitly_set(external[name]):
            say(f"{name}: left alone ({external[name]} points at an existing service)")
        elif Service(name).stop():
            say(f"stopped {name}")
        else:
            say(f"{name} was not running")


def status() -> int:
    running = 0
    for name in ("kafka", "moto"):
        pid = Service(name).pid()
        say(f"{name}: {'running, pid ' + str(pid) if pid else 'stopped'}")
        running += pid is not None
    return 0 if running == 2 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/local/stack.py",
        description="Start/stop the local Kafka (KRaft, from Maven Central jars) and moto S3 server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start_parser = sub.add_parser("start", help="start Kafka and moto S3 (no-op for running services)")
    start_parser.add_argument("--fresh", action="store_true", help="wipe the broker's data first")
    sub.add_parser("stop", help="stop both (no-op when stopped)")
    sub.add_parser("status", help="exit 0 when both run")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            start(args.fresh)
        elif args.command == "stop":
            stop()
        else:
            return status()
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
