"""`paystream replay` refuses bad arguments with a clear message and a non-zero exit."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from paystream.config import Settings
from paystream.errors import ConfigurationError
from processors.recovery.replay import ReplayOptions, add_replay_arguments, parse_moment, run_replay

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="paystream replay")
    add_replay_arguments(parser)
    return parser.parse_args(argv)


def test_reversed_time_range_exits_2_naming_both_ends(
    base_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_replay(base_settings, parse("--since", "2025-01-02T00:00:00Z", "--until", "2025-01-01T00:00:00Z"))

    assert code == 2
    assert "reversed: --since 2025-01-02T00:00:00.000Z is not before --until 2025-01-01" in capsys.readouterr().err


def test_unknown_provider_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--provider", "paypal")

    assert exit_info.value.code == 2
    assert "invalid choice: 'paypal'" in capsys.readouterr().err


def test_unknown_provider_is_refused_when_options_are_built_in_code() -> None:
    with pytest.raises(ConfigurationError, match="unknown provider paypal"):
        ReplayOptions(providers=frozenset({"paypal"})).validate()


def test_unreadable_time_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--since", "last tuesday")

    assert exit_info.value.code == 2
    assert "'last tuesday' is not a time" in capsys.readouterr().err


def test_zero_rate_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--rate", "0")

    assert "more than 0 records per second" in capsys.readouterr().err


def test_malformed_payment_key_exits_2(base_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_replay(base_settings, parse("--payment-key", "pi_123"))

    assert code == 2
    assert "is not provider:account:object_type:object_id" in capsys.readouterr().err


@pytest.mark.s3
def test_missing_bucket_exits_2_naming_the_bucket(
    base_settings: Settings, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # what the Makefile exports for the local moto server
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={"s3": base_settings.s3.model_copy(update={"endpoint_url": s3_endpoint})}
    )

    code = run_replay(settings, parse("--bucket", bucket, "--dry-run", "--no-progress"))

    assert code == 2
    assert f"S3 bucket '{bucket}' does not exist" in capsys.readouterr().err


def test_relative_times_count_back_from_now() -> None:
    assert parse_moment("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_moment("2d", NOW) == NOW - timedelta(days=2)
    assert parse_moment("now", NOW) == NOW


def test_naive_and_date_only_times_are_utc() -> None:
    assert parse_moment("2025-01-31T12:00:00") == datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert parse_moment("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
