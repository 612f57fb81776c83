"""One settings object, built once at start-up and passed down.

Every field can be set from the environment with the ``STREAMREC_`` prefix,
e.g. ``STREAMREC_KAFKA_BOOTSTRAP=kafka:9092``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration of workers, replay, readers and the trainer's publisher."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "streamrec"
    clicks_topic: str = "clicks"
    dlq_topic: str = "clicks-dlq"
    model_updates_topic: str = "model-updates"
    topic_partitions: int = Field(8, ge=1)
    # How long the group coordinator waits for members to (re)join. Some brokers (Tansu)
    # hold a new group's first join for this long, so it bounds worker start-up time.
    rebalance_timeout_s: float = Field(60.0, gt=0)
    session_timeout_s: float = Field(30.0, gt=0)

    # Redis
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = "streamrec:"
    recs_ttl_s: int = Field(7 * 24 * 3600, ge=1)

    # Model: the last announcement on model_updates_topic wins; bundle_path is the
    # fallback when nothing has been announced. bundle_store is where `publish` copies to.
    bundle_path: Path = Path("var/bundles/current")
    bundle_store: Path = Path("var/bundles/store")
    min_valid_ndcg: float | None = Field(None, ge=0, le=1)
    max_ndcg_drop: float | None = Field(None, ge=0, le=1)

    # Hot path
    batch_size: int = Field(256, ge=1, le=100_000)
    batch_wait_s: float = Field(0.005, gt=0, le=10)
    # Batches in flight: while one batch's lists are computed and written, the next is
    # taken and applied. 1 = strictly one batch after another.
    pipeline_depth: int = Field(1, ge=1, le=16)
    top_n: int = Field(20, ge=1, le=1000)
    session_max_len: int = Field(200, ge=1, le=10_000)
    dedup_window: int = Field(64, ge=1, le=10_000)
    max_event_bytes: int = Field(16_384, ge=64)
    compute_threads: int = Field(1, ge=1, le=64)
    producer_linger_s: float = Field(0.005, ge=0, le=1)
    # Kafka's normal batching. Tansu 0.6 reports high watermarks that count *batches*, so
    # Faust's changelog recovery stops early unless every record is its own batch: local
    # runs and tests against Tansu set this to 1 (see README, "Local broker caveats").
    producer_max_batch_bytes: int = Field(16_384, ge=1)
    fetch_max_wait_s: float = Field(0.01, gt=0, le=5)

    # Worker identity (status key in Redis); default derived from host and pid.
    worker_id: str | None = None

    @field_validator("key_prefix")
    @classmethod
    def _prefix_ends_with_colon(cls, v: str) -> str:
        return v if not v or v.endswith(":") else v + ":"

    def to_env(self) -> dict[str, str]:
        """These settings as ``STREAMREC_*`` variables, to hand to a child process."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None:
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                env[f"STREAMREC_{name.upper()}"] = str(value)
        return env

    @property
    def broker_url(self) -> str:
        """Faust broker URL (``kafka://host:port[;host:port]``)."""
        return "kafka://" + ";".join(h.strip() for h in self.kafka_bootstrap.split(","))
