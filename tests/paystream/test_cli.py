"""The `paystream` entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from paystream.cli import COMMANDS, build_parser


def test_every_subcommand_of_the_brief_exists() -> None:
    assert set(COMMANDS) == {"ingest", "process", "fetch", "archive", "replay", "rebuild", "tail", "run"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_explains_itself(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paystream.cli", command, "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert COMMANDS[command][0].split()[0] in result.stdout


def test_parser_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
