"""Probes, metrics and routing of the ingest HTTP service (DESIGN §4.1), over real sockets."""

from __future__ import annotations

import pytest
from http_harness import ACCOUNT, RunningIngest, assert_rejected, post_rejected, rejection_trail
from prometheus_client.parser import text_string_to_metric_families

from ingest.providers.signers import sign_stripe


async def test_healthz_answers_alive_even_while_kafka_is_down(offline_ingest: RunningIngest) -> None:
    reply = await offline_ingest.get("/healthz")

    assert reply.status == 200
    assert reply.json() == {"status": "alive"}


async def test_readyz_is_503_while_the_publisher_is_not_connected(offline_ingest: RunningIngest) -> None:
    reply = await offline_ingest.get("/readyz")

    assert reply.status == 503
    assert reply.json()["error"] == "not_ready"


@pytest.mark.kafka
async def test_readyz_is_200_once_the_producer_reached_kafka(ingest: RunningIngest) -> None:
    reply = await ingest.get("/readyz")

    assert reply.status == 200
    assert reply.json() == {"status": "ready"}


async def test_metrics_exposes_the_paystream_metrics(offline_ingest: RunningIngest) -> None:
    reply = await offline_ingest.get("/metrics")

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(reply.body.decode())}
    for expected in ("paystream_ingest_requests", "paystream_ingest_rejections", "paystream_signature_failures",
                     "paystream_ingest_published", "paystream_ingest_request_seconds",
                     "paystream_kafka_producer_ready"):
        assert expected in names


def _sample(exposition: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_rejection_counters_move_on_the_metrics_endpoint(offline_ingest: RunningIngest) -> None:
    labels = {"provider": "stripe", "reason": "bad_signature"}
    before = (await offline_ingest.get("/metrics")).body.decode()
    body = b'{"id":"evt_forged"}'
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign_stripe(body, "whsec_wrong", 1)}

    reply = await offline_ingest.post(f"/webhooks/stripe/{ACCOUNT}", body, headers)

    after = (await offline_ingest.get("/metrics")).body.decode()
    assert reply.status == 401
    for name in ("paystream_ingest_rejections_total", "paystream_signature_failures_total"):
        assert _sample(after, name, labels) == _sample(before, name, labels) + 1
    outcome = {"provider": "stripe", "account": ACCOUNT, "outcome": "bad_signature"}
    assert _sample(after, "paystream_ingest_requests_total", outcome) == _sample(
        before, "paystream_ingest_requests_total", outcome) + 1


async def test_wrong_method_is_405(offline_ingest: RunningIngest) -> None:
    with rejection_trail("method_not_allowed") as trail:
        reply = await offline_ingest.request("PUT", f"/webhooks/stripe/{ACCOUNT}", b"{}")

    assert_rejected(reply, trail, 405)


async def test_unknown_path_is_404(offline_ingest: RunningIngest) -> None:
    reply = await offline_ingest.post("/somewhere/else", b"{}")

    assert reply.status == 404
    assert set(reply.json()) == {"error", "detail"}


async def test_unknown_provider_is_404(offline_ingest: RunningIngest) -> None:
    await post_rejected(offline_ingest, f"/webhooks/paypal/{ACCOUNT}", b"{}", {"Content-Type": "application/json"},
                        status=404, reason="unknown_route", provider="unknown")


async def test_unknown_account_is_404(offline_ingest: RunningIngest) -> None:
    await post_rejected(offline_ingest, "/webhooks/stripe/no-such-account", b"{}",
                        {"Content-Type": "application/json"}, status=404, reason="unknown_route", provider="stripe")
