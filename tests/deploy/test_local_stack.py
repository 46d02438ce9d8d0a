"""deploy/local/stack.py: the parts that do not need to start anything."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

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
