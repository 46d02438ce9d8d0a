"""Settings of the stream processors (``paystream process``).

To be mounted on :class:`paystream.config.Settings` as ``processor: ProcessorSettings`` (environment:
``PAYSTREAM_PROCESSOR__STORE=memory://`` etc.). Until then :func:`processors.app.create_app` takes them
as an argument and falls back to these defaults.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

DAY_S = 24 * 3600


class ProcessorSettings(BaseModel):
    # faust app id: the consumer group and the prefix of internal / changelog topics.
    app_id: str = "paystream-processor"
    # "rocksdb://" (rocksdict, under Settings.state_dir) in production; "memory://" in unit tests.
    store: str = "rocksdb://"
    # How long a delivery id is remembered: at least as long as providers retry (Adyen: 30 days).
    dedupe_ttl_s: int = Field(default=31 * DAY_S, ge=1)
    # How often expired dedupe entries are deleted (they are also ignored when found expired).
    dedupe_sweep_interval_s: float = Field(default=3600.0, gt=0)
    # Stale-payment polls: delays after the last news, then every `poll_repeat_s`, never auto-failing.
    poll_schedule_s: list[int] = Field(default_factory=lambda: [60, 300, 900, 3600, 6 * 3600, DAY_S])
    poll_repeat_s: int = Field(default=DAY_S, ge=1)
    # How often the stale-payment timer looks at the schedule (also refreshes the freshness gauges).
    schedule_tick_s: float = Field(default=15.0, gt=0)
    # A non-terminal payment with no news for longer than this counts as past the freshness SLO.
    freshness_slo_s: float = Field(default=900.0, gt=0)
    # Offsets are committed at least this often (faust broker_commit_interval).
    commit_interval_s: float = Field(default=1.0, gt=0)

    # A worker that died without leaving the group holds its partitions this long (Kafka session timeout).
    session_timeout_s: float = Field(default=30.0, ge=6.0)

    def observations_topic(self) -> str:
        """The internal topic that repartitions observations by payment key."""
        return f"{self.app_id}-observations"
