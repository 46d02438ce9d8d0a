"""The deploy tests run the tool versions the Makefile pins, and a missing tool fails instead of skipping."""

from __future__ import annotations

import re
from pathlib import Path

import go_tools
import pytest
from deploy_files import REPO


def _pinned(variable: str) -> str:
    match = re.search(rf"^{variable} := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, variable
    return match.group(1)


def test_kustomize_is_the_pinned_version() -> None:
    assert go_tools.check("kustomize", "version").strip() == _pinned("KUSTOMIZE_VERSION")


def test_promtool_is_the_pinned_version() -> None:
    version = _pinned("PROMTOOL_VERSION").removeprefix("v")
    assert go_tools.check("promtool", "--version").startswith(f"promtool, version {version} ")


def test_a_missing_tool_fails_the_test_and_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(go_tools, "TOOLS_BIN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="run `make tools`"):
        go_tools.kustomize_build(tmp_path)
