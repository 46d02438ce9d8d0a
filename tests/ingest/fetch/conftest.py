"""Fixtures for the fetcher tests: the provider double on a free port, an Amazon Pay key pair, and
Settings whose provider accounts point at the double."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fetch_helpers import AmazonKeys
from provider_double.server import ProviderDouble

from paystream.config import AccountConfig, Settings

AMAZON_KEY_ID = "AGPHTEST0000KEYID0000000"


@pytest.fixture(scope="session")
def amazon_keys(tmp_path_factory: pytest.TempPathFactory) -> AmazonKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("amazon") / "private.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return AmazonKeys(AMAZON_KEY_ID, path, public)


@pytest.fixture
async def double(amazon_keys: AmazonKeys) -> AsyncIterator[ProviderDouble]:
    server = ProviderDouble(api_keys={"stripe": "sk_test_double", "mollie": "test_double"})
    server.add_amazon_key(amazon_keys.public_key_id, amazon_keys.public_pem)
    await server.start()
    yield server
    await server.stop()


AccountsFactory = Callable[..., dict[str, dict[str, AccountConfig]]]


@pytest.fixture
def provider_accounts(
    double: ProviderDouble, amazon_keys: AmazonKeys, monkeypatch: pytest.MonkeyPatch
) -> AccountsFactory:
    """Accounts ``amazon_pay:eu-main``, ``stripe:main`` and ``mollie:main`` against the double."""
    monkeypatch.setenv("TEST_STRIPE_KEY", "sk_test_double")
    monkeypatch.setenv("TEST_MOLLIE_KEY", "test_double")

    def make(rate: float = 1000.0, burst: int = 1000) -> dict[str, dict[str, AccountConfig]]:
        limits = {"fetch_rate_per_s": rate, "fetch_burst": burst}
        return {
            "amazon_pay": {
                "eu-main": AccountConfig(
                    api_base_url=f"{double.url}/amazon_pay",
                    public_key_id=amazon_keys.public_key_id,
                    private_key=f"file:{amazon_keys.private_pem_path}",
                    api_region="eu",
                    api_sandbox=True,
                    **limits,
                )
            },
            "stripe": {
                "main": AccountConfig(api_base_url=f"{double.url}/stripe", api_key="env:TEST_STRIPE_KEY", **limits)
            },
            "mollie": {
                "main": AccountConfig(api_base_url=f"{double.url}/mollie", api_key="env:TEST_MOLLIE_KEY", **limits)
            },
        }

    return make


@pytest.fixture
def settings_with(provider_accounts: AccountsFactory) -> Callable[..., Settings]:
    def make(base: Settings | None = None, **limits: float) -> Settings:
        return (base or Settings()).model_copy(update={"accounts": provider_accounts(**limits)})

    return make
