"""The fetcher (pull path): ``paystream fetch``.

Consumes ``payments.fetch.requests.v1``, calls the provider APIs politely (token bucket, 429 +
Retry-After, backoff with full jitter, circuit breaker, in-flight cap, per provider account) and publishes
what it fetched on ``payments.fetch.results.v1``; sweeps Stripe's Events list with a cursor kept in Kafka.
Entry point: :func:`ingest.fetch.service.run_fetcher`.
"""
