"""The real tools the deploy tests run: ``kustomize`` and ``promtool``, both Go binaries.

``make tools`` (a prerequisite of ``make test``) builds the versions the Makefile pins into
``.cache/tools/<name>-<version>/`` once per machine and links them from ``.cache/tools/bin/``; that link is
the only place looked at (not PATH), so every run uses the pinned version. A missing binary fails the
test that needs it with the command to run — it never skips it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import REPO

TOOLS_BIN = REPO / ".cache" / "tools" / "bin"


class ToolFailed(AssertionError):
    """The tool ran and reported an error; the message holds its command line and output."""


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: run `make tools` (builds kustomize and promtool with Go, a prerequisite "
            "in the README; `make test` does it for you)",
            pytrace=False,
        )
    return path


def run(name: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; the caller reads the exit code (see :func:`check`)."""
    command = [str(tool(name)), *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def check(name: str, *args: str | Path, cwd: Path | None = None) -> str:
    """Run a tool and return its stdout; a non-zero exit raises :class:`ToolFailed` with its output."""
    result = run(name, *args, cwd=cwd)
    if result.returncode != 0:
        raise ToolFailed(
            f"`{name} {' '.join(map(str, args))}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kustomize build directory`` renders, in its output order."""
    return [doc for doc in yaml.safe_load_all(check("kustomize", "build", directory)) if doc]


def promtool_check_rules(rules_file: Path) -> str:
    """``promtool check rules`` with every lint enabled and fatal (duplicate rules fail too)."""
    return check("promtool", "check", "rules", "--lint=all", "--lint-fatal", rules_file)
