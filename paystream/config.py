"""The one typed settings object.

Everything configurable comes from here: environment variables with the prefix ``PAYSTREAM_`` (nested
fields with ``__``, e.g. ``PAYSTREAM_TOPICS__PARTITIONS=12``) and one optional TOML file named by
``PAYSTREAM_CONFIG_FILE`` for the provider accounts. Environment variables win over the file.

Secrets are never written inline in the TOML file: an account lists *references* (``env:NAME`` or
``file:/path``) and :func:`resolve_secret` turns them into :class:`pydantic.SecretStr` values, which
render as ``**********`` wherever they are printed or logged. No other module reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from paystream.errors import ConfigurationError

ENV_PREFIX = "PAYSTREAM_"
PROVIDERS = ("amazon_pay", "stripe", "adyen", "mollie", "standard")
ProviderName = Literal["amazon_pay", "stripe", "adyen", "mollie", "standard"]


class TopicSettings(BaseModel):
    """Topic names (DESIGN §4.2) and how they are created."""

    inbox: str = "payments.inbox.v1"
    fetch_requests: str = "payments.fetch.requests.v1"
    fetch_results: str = "payments.fetch.results.v1"
    status: str = "payments.status.v1"
    # Compacted, keyed by payment key: the latest status event of every payment (a new consumer bootstraps
    # from it instead of reading the whole status history).
    state: str = "payments.state.v1"
    dlq: str = "payments.dlq.v1"
    # Compacted, one partition: the Stripe sweep cursors (created by the fetcher itself).
    fetch_cursors: str = "payments.fetch.cursors.v1"
    # Compacted, as many partitions as fetch_requests: the fetcher's durable store of requests due later
    # (ingest/fetch/delayed.py). Created by the fetcher itself with the requests topic's partition count, and
    # kept out of all_names() so tools that create or delete "all topics" never touch a live schedule.
    fetch_delayed: str = "payments.fetch.delayed.v1"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Raw deliveries are kept long enough to replay a week-long incident from Kafka alone;
    # the S3 archive keeps them for good.
    inbox_retention_ms: int = 14 * 24 * 3600 * 1000
    fetch_retention_ms: int = 7 * 24 * 3600 * 1000
    # -1 = keep forever: the status stream is the product and the source for rebuilds.
    status_retention_ms: int = -1
    dlq_retention_ms: int = 30 * 24 * 3600 * 1000

    def all_names(self) -> list[str]:
        return [self.inbox, self.fetch_requests, self.fetch_results, self.status, self.state, self.dlq]

    def cleanup_policy(self, name: str) -> str:
        """``compact`` for topics that hold the latest value per key, ``delete`` for streams."""
        return "compact" if name == self.state else "delete"

    def retention_ms(self, name: str) -> int:
        by_name = {
            self.inbox: self.inbox_retention_ms,
            self.fetch_requests: self.fetch_retention_ms,
            self.fetch_results: self.fetch_retention_ms,
            self.status: self.status_retention_ms,
            self.state: -1,
            self.dlq: self.dlq_retention_ms,
        }
        return by_name[name]


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "paystream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # the cluster CA (Strimzi: <cluster>-cluster-ca-cert) for SSL / SASL_SSL
    # A 1 MiB body grows by a third in base64 inside its envelope; topics allow 4 MiB messages.
    max_request_size: int = Field(default=4 * 1024 * 1024, ge=1024 * 1024)
    # How long ingest waits for acks=all before it answers 503 (the provider retries).
    send_timeout_s: float = Field(default=5.0, gt=0)
    linger_ms: int = Field(default=2, ge=0)
    max_batch_size: int = Field(default=256 * 1024, ge=1024)
    request_timeout_ms: int = Field(default=10_000, ge=1000)


class S3Settings(BaseModel):
    # Empty string means "real AWS S3" (boto3's own endpoint resolution).
    endpoint_url: str = "http://127.0.0.1:5055"
    bucket: str = "paystream-archive"
    prefix: str = "raw"
    region: str = "us-east-1"
    # Every archive object is stored encrypted: SSE-KMS with this key (key id, key ARN or alias/...), or
    # SSE-S3 (AES256) when empty. The archiver refuses to start when the bucket will not store it so.
    kms_key_id: str = ""
    # How long archived objects are kept (the lifecycle rule `paystream archive --apply-lifecycle` writes):
    # about 13 months, past the longest provider retry window and a chargeback's life (docs/operations.md).
    retention_days: int = Field(default=400, ge=1)


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A client must deliver the whole body within this time, or it gets 408: a trickling client
    # cannot hold a worker forever.
    body_timeout_s: float = Field(default=10.0, gt=0)
    # The request line and headers must arrive within this time and stay under this size (400 otherwise).
    header_timeout_s: float = Field(default=5.0, gt=0)
    max_head_bytes: int = Field(default=64 * 1024, ge=4096)
    keepalive_timeout_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)


class FetchSettings(BaseModel):
    """The fetcher (``paystream fetch``). Rate and burst come from each account's ``fetch_rate_per_s`` /
    ``fetch_burst``."""

    group_id: str = "paystream-fetch"
    # Calls per request for retryable outcomes (5xx, timeouts, 429): the first plus FetchRequest.retry
    # re-sends (a stale poll's `attempt` is its number in the chain and does not count); after the last one
    # the failure itself is published as the result, and the processors' polling schedule asks again later.
    max_attempts: int = Field(default=6, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    # Requests in flight per provider (over all its accounts); also the worker count per account. Each account
    # has in_flight_per_provider // accounts of them reserved (a slow account cannot starve the others) and may
    # borrow the remainder; with more accounts than slots, one each (ingest/fetch/ratelimit.py).
    in_flight_per_provider: int = Field(default=8, ge=1)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    # An open circuit lets one probe out after circuit_first_reset_s; each failed probe doubles the wait, up
    # to circuit_reset_s (a short outage recovers in seconds, a long one is probed once per circuit_reset_s).
    circuit_reset_s: float = Field(default=30.0, gt=0)
    circuit_first_reset_s: float = Field(default=1.0, gt=0)
    # False lifts the token buckets (benchmarks only).
    rate_limit: bool = True
    # With several fetcher replicas each takes this share of every account's rate.
    replicas: int = Field(default=1, ge=1)
    # Requests held (waiting for not-before, queued or in flight) before the consumer pauses.
    max_pending: int = Field(default=10_000, ge=1)
    # A request due further ahead than this is written to the delayed store (TopicSettings.fetch_delayed) and
    # its offset committed at once; sooner ones wait in memory and hold their partition's commit until done.
    delayed_threshold_s: float = Field(default=10.0, ge=0)
    # Hint fetches (unsigned hints, e.g. Mollie's) one account may hold in memory while they wait for its
    # rate limit; further hints of the account wait in the requests topic and are read again as these finish
    # (ingest/fetch/hints.py). Keep accounts x this well below max_pending.
    hints_per_account: int = Field(default=500, ge=1)
    commit_interval_s: float = Field(default=1.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    # Stripe Events sweeps: "events" (every event) and "undelivered" (delivery_success=false).
    stripe_sweeps: tuple[Literal["events", "undelivered"], ...] = ("events", "undelivered")
    sweep_interval_s: float = Field(default=60.0, gt=0)
    sweep_page_limit: int = Field(default=100, ge=1, le=100)
    sweep_max_pages: int = Field(default=50, ge=1)
    # First run without a cursor: start this far back.
    sweep_lookback_s: float = Field(default=3600.0, gt=0)
    # The undelivered sweep only looks at events at least this old: younger ones are usually still
    # being delivered, and the webhook will bring them.
    undelivered_settle_s: float = Field(default=300.0, ge=0)


DAY_S = 24 * 3600


class ProcessorSettings(BaseModel):
    """The stream processor (``paystream process``, Quix Streams)."""

    # The consumer group, and the prefix of the processor's internal topics (payment inputs, state changelog).
    app_id: str = "paystream-processor"
    # "exactly-once": outputs, state changelog and input offsets of a checkpoint commit in one Kafka
    # transaction; a read_committed consumer sees every status event once. "at-least-once": faster commits,
    # events may repeat after a crash (same id and sequence: consumers dedupe by id).
    processing_guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    # A checkpoint (one transaction under exactly-once) commits this often, and after `commit_every` inputs
    # when that comes first (0 = by time only). Under exactly-once, events become visible to read_committed
    # consumers when their checkpoint commits, and the two stages each wait for one: this bounds the added
    # latency (see bench/README.md for the measurement behind the default).
    commit_interval_s: float = Field(default=0.1, gt=0)
    commit_every: int = Field(default=0, ge=0)
    # How long a delivery id is remembered per payment: at least as long as providers retry (Adyen: 30 days).
    dedupe_ttl_s: int = Field(default=31 * DAY_S, ge=1)
    # Stale-payment polls: delays after the last news, then every `poll_repeat_s`, never auto-failing.
    poll_schedule_s: list[int] = Field(default_factory=lambda: [60, 300, 900, 3600, 6 * 3600, DAY_S])
    poll_repeat_s: int = Field(default=DAY_S, ge=1)
    # A payment awaiting news with no status change for longer than this counts as past the freshness SLO.
    freshness_slo_s: float = Field(default=900.0, gt=0)
    # Follow payments.state.v1 in the worker to export the freshness gauges (oldest non-terminal payment,
    # payments past the SLO); every replica exports the same values.
    freshness_gauges: bool = True
    # A worker that died without leaving the group holds its partitions this long (Kafka session timeout).
    session_timeout_s: float = Field(default=30.0, ge=6.0)
    # Where polling ends: after this many `not_found` answers in a row; for a payment still waiting this long
    # after paystream first heard of it (Amazon Pay authorisations live 30 days, Mollie bank transfers about
    # 12, a Stripe Checkout Session at most 24 hours); and this long after an authorisation's known expiry.
    poll_not_found_limit: int = Field(default=3, ge=1)
    poll_horizon_s: int = Field(default=31 * DAY_S, ge=60)
    poll_expiry_grace_s: int = Field(default=3600, ge=0)
    # The worker's stable identity (unique among live workers, stable across its restarts: a StatefulSet pod
    # name, or the host name): its Kafka transactional.id is `{app_id}-{worker_id}`, so a restarted worker
    # fences its predecessor and aborts the open transaction at once instead of leaving read_committed
    # consumers stalled until the transaction timeout. Default: the host name.
    worker_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # Two limits in one: a killed worker's open transaction (one whose successor never starts with its
    # worker_id) keeps the partitions it wrote frozen for read_committed readers, and records waiting through a
    # broker outage time out, until the broker aborts it after this long (librdkafka caps message.timeout.ms at
    # it): the worker rides out outages shorter than this and restarts its engine after longer ones.
    transaction_timeout_s: float = Field(default=30.0, ge=5.0, le=900.0)
    # The derivation epoch of emitted events. A rebuild that derives the stream again from scratch (state
    # wiped) raises it, so its events get ids consumers never saw (docs/operations.md, "Rebuild").
    epoch: int = Field(default=0, ge=0)
    # Hard cap of one payment's stored record: past it, the payment is quarantined (metric, alert, its inputs
    # copied to the DLQ) and never stalls its partition. Must stay below `internal_max_message_bytes`.
    max_record_bytes: int = Field(default=512 * 1024, ge=16 * 1024)
    # max.message.bytes and compression.type of the processor's internal topics (state changelog, inputs).
    # "producer" keeps what the engine's producer sends (uncompressed: the per-record CPU of the worker is the
    # throughput bottleneck); zstd / lz4 trade worker and broker CPU for changelog size.
    internal_max_message_bytes: int = Field(default=2 * 1024 * 1024, ge=1024 * 1024)
    internal_compression: Literal["producer", "zstd", "lz4", "gzip", "snappy", "uncompressed"] = "producer"
    # An authorisation that nobody captured and that lapses within this window counts in the
    # paystream_authorizations_expiring gauge.
    authorization_expiry_warning_s: float = Field(default=DAY_S, gt=0)

    @model_validator(mode="after")
    def _record_fits_the_topics(self) -> ProcessorSettings:
        # A quarantined record is the last one under the cap plus its flag: keep a margin below the topic limit.
        if self.max_record_bytes + 64 * 1024 > self.internal_max_message_bytes:
            raise ValueError("processor.max_record_bytes must stay at least 64 KiB below "
                             "processor.internal_max_message_bytes")
        return self

    def inputs_topic(self) -> str:
        """The internal topic that repartitions payment inputs by payment key (intake → reconcile)."""
        return f"{self.app_id}-payment-inputs"


class SnsSettings(BaseModel):
    """Amazon SNS signing certificates (Amazon Pay IPN)."""

    # A directory of PEM files named like the last segment of their SigningCertURL: used before any
    # fetch (air-gapped deployments, tests).
    cert_dir: Path | None = None
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    max_cert_bytes: int = Field(default=64 * 1024, ge=1024)


class AccountConfig(BaseModel):
    """One merchant account at one provider, as written in the TOML file.

    ``secrets`` are references (``env:NAME`` / ``file:/path``). Several may be active at once so a
    key can be rotated without losing deliveries signed with the old one.
    """

    secrets: list[str] = Field(default_factory=list)
    tolerance_s: int = Field(default=300, ge=0)
    # Amazon Pay / SNS: the TopicArns whose messages (and subscription confirmations) are accepted.
    allowed_topic_arns: list[str] = Field(default_factory=list)
    # Mollie: at most this many hints per second per account become fetches.
    hint_rate_per_s: float = Field(default=5.0, gt=0)
    hint_burst: int = Field(default=20, ge=1)
    # Provider API access for the fetcher (base URL override for sandboxes / the local test provider).
    api_base_url: str | None = None
    api_key: str | None = None  # a reference, like secrets
    # Amazon Pay: "eu", "na", "jp", or the SDKs' aliases "de"/"uk" (eu) and "us" (na); stored as the region.
    api_region: Literal["eu", "na", "jp"] = "eu"
    api_sandbox: bool = False
    public_key_id: str | None = None
    private_key: str | None = None  # a reference to a PEM file or env var
    fetch_rate_per_s: float = Field(default=10.0, gt=0)
    fetch_burst: int = Field(default=10, ge=1)
    # Standard Webhooks: the sender's event type → canonical status, and where to find the ids.
    status_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("secrets")
    @classmethod
    def _only_references(cls, value: list[str]) -> list[str]:
        for ref in value:
            _check_reference(ref)
        return value

    @field_validator("api_region", mode="before")
    @classmethod
    def _region_or_sdk_alias(cls, value: object) -> str:
        name = value.strip().lower() if isinstance(value, str) else value
        if not isinstance(name, str) or name not in AMAZON_PAY_REGIONS:
            raise ValueError(
                f"unknown Amazon Pay region {value!r}: use eu, na or jp (or the SDK aliases de, uk, us)"
            )
        return AMAZON_PAY_REGIONS[name]


# Amazon Pay API regions, and the aliases its SDKs accept for them (ingest/providers/amazon_pay/signing.py).
AMAZON_PAY_REGIONS = {"eu": "eu", "de": "eu", "uk": "eu", "na": "na", "us": "na", "jp": "jp"}


def _check_reference(ref: str) -> None:
    if not (ref.startswith("env:") or ref.startswith("file:")):
        raise ValueError("secrets are given by reference: 'env:NAME' or 'file:/path', never inline")


def resolve_secret(ref: str, environ: Mapping[str, str] | None = None) -> SecretStr:
    """Turn an ``env:``/``file:`` reference into the secret it names."""
    _check_reference(ref)
    kind, _, where = ref.partition(":")
    if kind == "env":
        env = os.environ if environ is None else environ
        if where not in env:
            raise ConfigurationError(f"secret reference {ref!r}: environment variable {where} is not set")
        return SecretStr(env[where])
    path = Path(where)
    try:
        return SecretStr(path.read_text().strip())
    except OSError as exc:
        raise ConfigurationError(f"secret reference {ref!r}: cannot read {path}: {exc.strerror}") from exc


class Settings(BaseSettings):
    """All of paystream's configuration (see the README's configuration table)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    config_file: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    sns: SnsSettings = Field(default_factory=SnsSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    # Bearer tokens accepted on POST /v1/observations (references, like account secrets).
    observation_tokens: list[str] = Field(default_factory=list)
    # provider -> account name -> account configuration
    accounts: dict[ProviderName, dict[str, AccountConfig]] = Field(default_factory=dict)
    # Where processors keep local state (RocksDB) and the fetcher its scratch files.
    state_dir: Path = Path(".local/state")
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Set by `paystream ingest --workers N` (N > 1) for the workers it spawns: metrics are then
    # aggregated across worker processes through this directory.
    metrics_multiproc_dir: Path | None = None

    # Environment shortcuts the brief names (PAYSTREAM_KAFKA_BOOTSTRAP, PAYSTREAM_S3_ENDPOINT_URL) are
    # mapped onto the nested fields in `load_settings`.

    @field_validator("observation_tokens")
    @classmethod
    def _tokens_are_references(cls, value: list[str]) -> list[str]:
        for ref in value:
            _check_reference(ref)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_path_from_env()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def account(self, provider: str, account: str) -> AccountConfig | None:
        by_name: dict[str, AccountConfig] = self.accounts.get(provider, {})  # type: ignore[call-overload]
        return by_name.get(account)


# Flat aliases named in the brief and the README, mapped to nested fields.
_FLAT_ALIASES = {
    "PAYSTREAM_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "PAYSTREAM_S3_ENDPOINT_URL": ("s3", "endpoint_url"),
    "PAYSTREAM_S3_BUCKET": ("s3", "bucket"),
}


def _toml_path_from_env() -> Path | None:
    raw = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigurationError(f"PAYSTREAM_CONFIG_FILE={raw}: no such file")
    return path


def explicitly_set(name: str) -> bool:
    """Whether the operator set ``name`` (e.g. ``PAYSTREAM_KAFKA_BOOTSTRAP``) in the environment.

    The local stack uses this to leave existing services alone.
    """
    return bool(os.environ.get(name))


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment and the optional TOML file."""
    nested: dict[str, dict[str, str]] = {}
    for env_name, (section, field) in _FLAT_ALIASES.items():
        value = os.environ.get(env_name)
        if value is not None:
            nested.setdefault(section, {})[field] = value
    try:
        settings = Settings(**overrides)
    except ConfigurationError:
        raise
    except ValidationError as exc:
        # Where and what, never the input: a secret written inline by mistake must not reach stderr or a log.
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
                             for error in exc.errors(include_input=False, include_url=False))
        raise ConfigurationError(f"invalid configuration: {problems}") from None
    except Exception as exc:  # TOML decode errors (they quote no values)
        raise ConfigurationError(f"invalid configuration: {exc}") from exc
    if nested:
        update = {
            section: getattr(settings, section).model_copy(update=fields) for section, fields in nested.items()
        }
        settings = settings.model_copy(update=update)
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once at start-up."""
    return load_settings()
