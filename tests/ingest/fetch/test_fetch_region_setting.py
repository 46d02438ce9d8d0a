"""``api_region`` of an Amazon Pay account: the regions and the aliases the Amazon Pay SDKs accept."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.providers.amazon_pay.signing import REGION_ALIASES, region_host
from paystream.config import AccountConfig, load_settings
from paystream.errors import ConfigurationError


@pytest.mark.parametrize(
    ("given", "region"),
    [("eu", "eu"), ("na", "na"), ("jp", "jp"), ("us", "na"), ("de", "eu"), ("uk", "eu"), (" US ", "na"), ("Uk", "eu")],
)
def test_regions_and_sdk_aliases_are_accepted(given: str, region: str) -> None:
    assert AccountConfig(api_region=given).api_region == region  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["fr", "us-east-1", "", "europe", 1])
def test_anything_else_is_refused_with_the_accepted_names(given: object) -> None:
    with pytest.raises(ValidationError) as raised:
        AccountConfig(api_region=given)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "unknown Amazon Pay region" in message
    assert "eu, na or jp" in message and "de, uk, us" in message


def test_the_settings_accept_what_the_signer_accepts() -> None:
    for alias in REGION_ALIASES:
        assert region_host(AccountConfig(api_region=alias).api_region) == region_host(alias)  # type: ignore[arg-type]


def test_an_alias_in_the_toml_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text('[accounts.amazon_pay.shop]\napi_region = "us"\n')
    monkeypatch.setenv("PAYSTREAM_CONFIG_FILE", str(config))
    settings = load_settings()
    assert settings.accounts["amazon_pay"]["shop"].api_region == "na"
    config.write_text('[accounts.amazon_pay.shop]\napi_region = "mars"\n')
    with pytest.raises(ConfigurationError, match="unknown Amazon Pay region 'mars'"):
        load_settings()
