"""Settings: environment, TOML accounts, secret references."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from paystream.config import AccountConfig, ProcessorSettings, TopicSettings, load_settings, resolve_secret
from paystream.errors import ConfigurationError


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PAYSTREAM_KAFKA_BOOTSTRAP", "PAYSTREAM_KAFKA__BOOTSTRAP", "PAYSTREAM_HTTP__MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert settings.topics.status == "payments.status.v1"
    assert settings.http.max_body_bytes == 1024 * 1024


def test_flat_aliases_and_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "broker:9999")
    monkeypatch.setenv("PAYSTREAM_TOPICS__PARTITIONS", "12")
    settings = load_settings()
    assert settings.kafka.bootstrap == "broker:9999"
    assert settings.topics.partitions == 12


def test_accounts_come_from_the_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "paystream.toml"
    config.write_text(
        '[accounts.stripe.main]\nsecrets = ["env:STRIPE_A", "env:STRIPE_B"]\ntolerance_s = 120\n'
        '[accounts.amazon_pay.eu-main]\nallowed_topic_arns = ["arn:aws:sns:eu-west-1:1:ipn"]\n'
    )
    monkeypatch.setenv("PAYSTREAM_CONFIG_FILE", str(config))
    settings = load_settings()
    stripe = settings.account("stripe", "main")
    assert stripe is not None and stripe.tolerance_s == 120 and stripe.secrets == ["env:STRIPE_A", "env:STRIPE_B"]
    assert settings.account("amazon_pay", "eu-main") is not None
    assert settings.account("stripe", "nope") is None


def test_a_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAYSTREAM_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match=r"no such file"):
        load_settings()


def test_inline_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="by reference"):
        AccountConfig(secrets=["whsec_inline"])


def test_secret_references_resolve_from_env_and_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("from-file\n")
    assert resolve_secret("env:X", {"X": "from-env"}).get_secret_value() == "from-env"
    assert resolve_secret(f"file:{secret_file}").get_secret_value() == "from-file"
    assert "from-env" not in repr(resolve_secret("env:X", {"X": "from-env"}))


def test_an_unset_secret_variable_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="NOT_SET_ANYWHERE"):
        resolve_secret("env:NOT_SET_ANYWHERE", {})


def test_the_processor_is_exactly_once_by_default_with_a_short_commit_interval() -> None:
    conf = ProcessorSettings()
    assert (conf.processing_guarantee, conf.commit_interval_s) == ("exactly-once", 0.1)
    assert conf.inputs_topic() == "paystream-processor-payment-inputs"


def test_an_unknown_processing_guarantee_is_refused() -> None:
    with pytest.raises(ValidationError, match="exactly-once"):
        ProcessorSettings(processing_guarantee="at-most-once")  # type: ignore[arg-type]


def test_the_state_topic_is_compacted_and_kept_forever() -> None:
    topics = TopicSettings()
    assert (topics.cleanup_policy(topics.state), topics.retention_ms(topics.state)) == ("compact", -1)
    assert {topics.cleanup_policy(name) for name in topics.all_names() if name != topics.state} == {"delete"}
