"""A Kafka broker of a test's own (deploy/local/stack.py on free ports, in a tmp folder), for the tests that
stop and restart the broker: the shared broker on 127.0.0.1:9092 is never touched."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_stack() -> ModuleType:
    """deploy/local/stack.py as a module (it is a script, not a package)."""
    name = "paystream_local_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "local" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses need their module registered
    spec.loader.exec_module(module)
    return module


def free_port_pair() -> int:
    """A port p with p and p + 1 free (the broker and controller listeners of a private broker)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        try:
            with socket.socket() as second:
                second.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports")


@dataclass
class PrivateBroker:
    """A single-node broker on its own ports and folder (never the shared 127.0.0.1:9092)."""

    bootstrap: str
    state: Path
    service: Any = None

    async def start(self) -> None:
        self.service = await asyncio.to_thread(load_stack().start_kafka, self.bootstrap, False, self.state)

    async def stop(self) -> None:
        if self.service is not None:
            await asyncio.to_thread(self.service.stop)
