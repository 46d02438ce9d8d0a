"""deploy/local/stack.py: its parts, and one private broker (its own free ports and folder, never the shared
one) started with a cluster id that begins with "-"."""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from private_stack import free_port_pair

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.py"


@pytest.fixture(scope="module")
def stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_stack", STACK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_stack"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tool", ["java", "mvn"])
def test_a_missing_tool_is_named_with_how_to_install_it(stack: ModuleType, tool: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(stack.StackError) as raised:
        stack.require_tool(tool, "for the test")
    assert f"'{tool}' is not installed" in str(raised.value)
    assert "apt-get install" in str(raised.value)


def test_broker_configuration_is_single_node_kraft_on_loopback(stack: ModuleType, tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in stack.kafka_properties(tmp_path, "127.0.0.1", 19092, 19093).splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    for name in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                 "share.coordinator.state.topic.replication.factor", "default.replication.factor"):
        assert props[name] == "1", name
    assert props["log.dirs"] == str(tmp_path)


def test_the_pom_asks_for_kafka_4_and_a_logging_backend() -> None:
    pom = (STACK.parent / "pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<kafka.version>4." in pom
    assert "<artifactId>log4j-slf4j2-impl</artifactId>" in pom


def test_help_explains_the_commands() -> None:
    result = subprocess.run([sys.executable, str(STACK), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("start", "stop", "status"):
        assert command in result.stdout


# --- the cluster id (a start failed about 1 time in 64: an id starting with "-" was read as an option) ----

BASE64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _uuid_with_first_byte(first: int) -> uuid.UUID:
    return uuid.UUID(bytes=bytes([first]) + uuid.uuid4().bytes[1:])


def test_a_hundred_thousand_cluster_ids_are_valid_and_none_starts_with_a_dash(stack: ModuleType) -> None:
    ids = [stack.new_cluster_id() for _ in range(100_000)]
    for cluster_id in ids:
        assert len(cluster_id) == 22 and set(cluster_id) <= BASE64URL, cluster_id
        assert not cluster_id.startswith("-"), cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert len(set(ids)) == len(ids)
    # What the old one-liner made: about 1 in 64 started with "-" (every UUID whose first byte is F8-FB).
    old = [base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") for _ in range(100_000)]
    dashed = sum(cluster_id.startswith("-") for cluster_id in old)
    print(f"\nold id function: {dashed} of 100000 ids started with '-'; new: 0")
    assert 1000 < dashed < 2200  # 100000 / 64 = 1562


@pytest.mark.parametrize("first", [0xF8, 0xF9, 0xFA, 0xFB])
def test_an_id_that_would_start_with_a_dash_is_drawn_again(stack: ModuleType, first: int) -> None:
    dashed = _uuid_with_first_byte(first)
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    fine = _uuid_with_first_byte(0x12)
    draws = iter([dashed, dashed, fine])
    assert stack.new_cluster_id(lambda: next(draws)) == base64.urlsafe_b64encode(fine.bytes).decode().rstrip("=")


def test_kafkas_reserved_ids_are_drawn_again(stack: ModuleType) -> None:
    fine = _uuid_with_first_byte(0x12)
    draws = iter([uuid.UUID(int=0), uuid.UUID(int=1), fine])
    assert stack.new_cluster_id(lambda: next(draws)) == base64.urlsafe_b64encode(fine.bytes).decode().rstrip("=")


def test_the_format_command_keeps_an_id_starting_with_a_dash_as_the_options_value(
    stack: ModuleType, tmp_path: Path
) -> None:
    argv = stack.format_command(["java"], "-Abcdefghijklmnopqrstu", tmp_path / "server.properties")
    assert "--cluster-id=-Abcdefghijklmnopqrstu" in argv
    assert "-t" not in argv


def test_kafka_formats_storage_with_an_id_starting_with_a_dash(stack: ModuleType, tmp_path: Path) -> None:
    """The real StorageTool (the jars make test resolves): an id made elsewhere that starts with "-"."""
    java = stack.require_tool("java", "for the test")
    props = tmp_path / "server.properties"
    props.write_text(stack.kafka_properties(tmp_path / "data", "127.0.0.1", 19092, 19093))
    cluster_id = "-" + stack.new_cluster_id()[1:]
    result = subprocess.run(
        stack.format_command([java, "-cp", f"{stack.resolve_jars()}/*"], cluster_id, props),
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cluster.id={cluster_id}\n" in (tmp_path / "data" / "meta.properties").read_text()


def test_a_private_broker_starts_with_an_id_starting_with_a_dash(stack: ModuleType, tmp_path: Path) -> None:
    port = free_port_pair()
    cluster_id = "-" + stack.new_cluster_id()[1:]
    service = stack.start_kafka(f"127.0.0.1:{port}", False, tmp_path, cluster_id)
    try:
        assert service.pid() is not None
        assert f"cluster.id={cluster_id}\n" in (tmp_path / "kafka-data" / "meta.properties").read_text()
    finally:
        service.stop()
