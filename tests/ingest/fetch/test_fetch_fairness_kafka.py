"""Two accounts of one provider through the real fetcher and the real broker: one answers slowly, the other
is rate limited. The limited account's calls, as its provider saw them arrive, never exceed its rate and
burst in any window, and the slow account takes no more than its share of the in-flight cap.

Each account has a provider double of its own (two servers), so every server-side arrival belongs to one
account. Both are Amazon Pay: every call is signed and the double checks each signature.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from fetch_helpers import AmazonKeys, ResultReader, eventually, fetch_request
from provider_double.server import Answer, ProviderDouble
from test_fetch_service_kafka import FetcherUnderTest, options, publish

from paystream.config import AccountConfig, Settings
from schemas.envelopes import FetchRequest

pytestmark = pytest.mark.kafka

IN_FLIGHT = 8  # the provider's cap; two accounts: 4 each
SLOW_S = 2.0
RATE, BURST = 5.0, 2
WINDOWS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0)


def charge_request(account: str, object_id: str) -> FetchRequest:
    return fetch_request("amazon_pay", account, "charge", object_id, request_id=f"{account}-{object_id}:fetch")


def amazon_account(double: ProviderDouble, keys: AmazonKeys, *, rate: float, burst: int) -> AccountConfig:
    return AccountConfig(
        api_base_url=f"{double.url}/amazon_pay",
        public_key_id=keys.public_key_id,
        private_key=f"file:{keys.private_pem_path}",
        api_region="eu",
        api_sandbox=True,
        fetch_rate_per_s=rate,
        fetch_burst=burst,
    )


@pytest.fixture
async def second_double(amazon_keys: AmazonKeys) -> AsyncIterator[ProviderDouble]:
    server = ProviderDouble()
    server.add_amazon_key(amazon_keys.public_key_id, amazon_keys.public_pem)
    await server.start()
    yield server
    await server.stop()


def window_maxima(double: ProviderDouble) -> dict[float, int]:
    return {window: double.max_in_window("amazon_pay", window) for window in WINDOWS_S}


async def test_a_slow_account_neither_breaks_the_rate_of_another_nor_starves_it(
    kafka_settings: Settings, double: ProviderDouble, second_double: ProviderDouble, amazon_keys: AmazonKeys
) -> None:
    slow, limited = double, second_double
    slow.set_mode("amazon_pay", Answer(delay_s=SLOW_S))
    slow_ids = [f"S02-slow-{n:03d}" for n in range(24)]
    limited_ids = [f"S02-lim-{n:03d}" for n in range(20)]
    for object_id in slow_ids:
        slow.set_object("amazon_pay", "charge", object_id, {"chargeId": object_id})
    for object_id in limited_ids:
        limited.set_object("amazon_pay", "charge", object_id, {"chargeId": object_id})
    settings = kafka_settings.model_copy(
        update={
            "accounts": {
                "amazon_pay": {
                    "slow": amazon_account(slow, amazon_keys, rate=1000.0, burst=1000),
                    "limited": amazon_account(limited, amazon_keys, rate=RATE, burst=BURST),
                }
            }
        }
    )
    under_test = FetcherUnderTest(settings, options(in_flight_per_provider=IN_FLIGHT, request_timeout_s=10.0))
    under_test.start()
    try:
        async with ResultReader(settings) as reader:
            await publish(settings, *(charge_request("slow", i) for i in slow_ids))
            # The slow account is busy (every slot it may take is held) before the limited one gets work.
            await eventually(lambda: slow.count("amazon_pay") >= IN_FLIGHT // 2, within_s=60)
            await publish(settings, *(charge_request("limited", i) for i in limited_ids))
            await eventually(lambda: len(reader.results) == len(slow_ids) + len(limited_ids), within_s=120)
    finally:
        await under_test.shutdown()

    assert {r.outcome for r in reader.results} == {"ok"}
    assert all(r.signature == "ok" for d in (slow, limited) for r in d.requests)
    maxima = window_maxima(limited)
    print(f"\nlimited account ({RATE}/s, burst {BURST}): most calls seen in any window: {maxima}")
    print(f"slow account: most calls seen in any {SLOW_S - 0.1:.1f} s: {slow.max_in_window('amazon_pay', 1.9)}")
    # The token-bucket bound: in any closed window of w seconds at most burst + rate * w calls.
    for window, seen in maxima.items():
        assert seen <= math.floor(BURST + RATE * window), (window, seen, maxima)
    # Fair share: each slow call holds its slot >= 2 s, so no more arrivals than its share within 1.9 s.
    assert slow.max_in_window("amazon_pay", SLOW_S - 0.1) <= IN_FLIGHT // 2
    # Not starved: the limited account was done while the slow one still had most of its work ahead.
    assert max(r.at for r in limited.requests) < max(r.at for r in slow.requests)
