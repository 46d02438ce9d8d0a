"""The Dockerfile builds one non-root image with every package of the project (it is not built here)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

from deploy_files import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
DOCKERIGNORE = [
    line.strip()
    for line in (REPO / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _instructions(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", DOCKERFILE, re.M)]


def _runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def test_build_is_multi_stage_and_the_runtime_copies_only_the_virtualenv() -> None:
    stages = _instructions("FROM")
    assert len(stages) >= 2
    copies = re.findall(r"^COPY\s+(.+)$", _runtime_stage(), re.M)
    assert copies == ["--from=build /opt/paystream /opt/paystream"]


def test_image_runs_as_a_numeric_non_root_user() -> None:
    user = re.findall(r"^USER\s+(\S+)$", _runtime_stage(), re.M)
    assert len(user) == 1
    uid = user[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_entrypoint_is_the_paystream_console_script() -> None:
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert json.loads(entrypoint)[-1] == "paystream"
    assert PYPROJECT["project"]["scripts"]["paystream"] == "paystream.cli:main"


def test_every_package_of_the_project_is_copied() -> None:
    packages = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {m.group(1) for m in re.finditer(r"^COPY\s+(\w+)\s+\./\1$", DOCKERFILE, re.M)}
    assert copied == packages


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    for kept_out in (".venv", ".git", ".local", ".env"):
        assert kept_out in DOCKERIGNORE
    for needed in ("pyproject.toml", "README.md", "paystream/config.py", "schemas/transitions.json"):
        assert not any(fnmatch.fnmatch(needed, pattern) for pattern in DOCKERIGNORE), needed
