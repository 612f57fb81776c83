"""One settings object, built once at start-up and passed down.

Every field can be set from the environment with the ``STREAMREC_`` prefix,
e.g. ``STREAMREC_KAFKA_BOOTSTRAP=kafka:9092``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streamrec.errors import ConfigError

ENV_PREFIX = "STREAMREC_"
# STREAMREC_* variables that are not settings: read by deploy/local.sh (local service ports).
NOT_SETTINGS = frozenset({"STREAMREC_KAFKA_PORT", "STREAMREC_REDIS_PORT"})
log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """Runtime configuration of workers, replay, readers and the trainer's publisher."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "streamrec"
    clicks_topic: str = "clicks"
    dlq_topic: str = "clicks-dlq"
    model_updates_topic: str = "model-updates"
    # The live item catalogue (streamrec/items.py): compacted, read in full by every worker.
    items_topic: str = "items"
    # Impressions (streamrec/impressions.py): the lists written, and what applications report
    # they displayed. impressions=true sends one record per list written (a produce per list).
    impressions_topic: str = "impressions"
    impressions: bool = False
    # impressions_shown=true: workers also read the topic for applications' "shown" reports
    # (bad records dead-lettered); a click is then judged against what was displayed. The
    # topic must be keyed by user id with STREAMREC_TOPIC_PARTITIONS partitions, like clicks.
    impressions_shown: bool = False
    topic_partitions: int = Field(8, ge=1)
    # How long the group coordinator waits for members to (re)join. Some brokers (Tansu)
    # hold a new group's first join for this long, so it bounds worker start-up time.
    rebalance_timeout_s: float = Field(60.0, gt=0)
    session_timeout_s: float = Field(30.0, gt=0)
    # Kafka static membership (KIP-345): a stable id per worker slot (a StatefulSet pod's
    # name, say). A worker restarted under the same id takes its place in the group at
    # once, without a rebalance; a worker gone for good is noticed after the session
    # timeout. Unset: dynamic membership (every start is a join).
    group_instance_id: str | None = Field(None, min_length=1, max_length=249)
    # Replication of the topics the app creates (changelog, dead letters, model updates).
    # 1 suits one local broker; production clusters use 3.
    topic_replication_factor: int = Field(1, ge=1, le=16)

    # Kafka security, for every client the project makes (worker, replay, publish, admin,
    # training from the topic): see streamrec/kafka.py.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # CA bundle; default: the system's trust store
    kafka_ssl_certfile: Path | None = None  # client certificate (mutual TLS)
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None

    # Redis
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # A file holding the Redis password (a compose or Kubernetes secret), for a redis_url
    # without one: every client then connects with it. Trailing newlines are not part of it.
    redis_password_file: Path | None = None
    # Redis Cluster: redis_url names any node (a seed); every client finds the others and
    # follows the slots (serving/redis_client.py). Non-list keys then carry a hash tag.
    redis_cluster: bool = False
    key_prefix: str = "streamrec:"
    recs_ttl_s: int = Field(7 * 24 * 3600, ge=1)

    # Model: the last announcement on model_updates_topic wins; bundle_path is the
    # fallback when nothing has been announced. bundle_store is where `publish` copies to:
    # a directory (a path or file:///abs/path) or an S3 bucket and prefix (s3://bucket/prefix,
    # serving/object_store.py). Workers download an s3:// bundle into data_dir/bundles.
    bundle_path: Path = Path("var/bundles/current")
    bundle_store: str = Field("var/bundles/store", min_length=1)
    # S3 for an s3:// bundle store: the endpoint of a non-AWS service (MinIO, Ceph, …; unset:
    # AWS), the region, and keys (unset: the AWS credential chain: AWS_* variables, the
    # shared credentials file, the instance or pod role).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
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
    # at most 1 MiB: the HTTP server's body limit and the producer's request size
    max_event_bytes: int = Field(16_384, ge=64, le=1_048_576)
    # Dead letters larger than this are cut (original size and sha256 kept). At most 960 KiB:
    # with the record key (up to 4 KiB) and the record's overhead a letter stays under the
    # producer's request size (1,000,000 bytes); keep it under the broker's message.max.bytes too.
    dead_letter_max_bytes: int = Field(262_144, ge=8192, le=983_040)
    compute_threads: int = Field(1, ge=1, le=64)
    # Per-user encoder state for bundles with a step model (serving.step_encoder), in MiB
    # per bundle held; least recently used users out first. 0 = encode every window whole.
    encoder_cache_mb: float = Field(256.0, ge=0, le=1_000_000)
    producer_linger_s: float = Field(0.005, ge=0, le=1)
    # Kafka's normal batching. Tansu 0.6 reports high watermarks that count *batches*, so
    # Faust's changelog recovery stops early unless every record is its own batch: local
    # runs and tests against Tansu set this to 1 (see docs/operations.md, "The local broker
    # and its limits").
    producer_max_batch_bytes: int = Field(16_384, ge=1)
    fetch_max_wait_s: float = Field(0.01, gt=0, le=5)
    # What every consumer reads: read_committed skips the records of transactions their
    # producer aborted (and reads a partition only up to its last stable offset: an open
    # transaction holds back what follows it); read_uncommitted reads every record written.
    # Records of producers without transactions read the same either way.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"

    # Worker identity (status key in Redis); default derived from host and pid.
    worker_id: str | None = None
    # A worker's status hash expires this long after its last write or heartbeat (one every
    # sixth of it): a dead worker leaves `streamrec status` on its own.
    status_ttl_s: int = Field(60, ge=6, le=86_400)
    # The worker's HTTP port: /health, /ready, /metrics (Prometheus), /recs/{user_id}.
    web_port: int = Field(6066, ge=1, le=65535)
    # The address the HTTP port binds: loopback unless set; the container image sets 0.0.0.0.
    web_bind: str = Field("127.0.0.1", min_length=1)
    # Bearer tokens for /recs, /metrics and POST /events (streams/web.py), comma-separated:
    # any one is accepted (several while rotating); our own clients send the first. Unset:
    # no authentication. /health, /ready and /openapi.json stay open.
    web_tokens: SecretStr | None = None
    # POST /events: applications that cannot speak Kafka send clicks over HTTP.
    web_events: bool = False
    # POST /events: a body not read whole within this many seconds gets a 408 and the
    # connection is closed (a client that sends its body slowly holds no handler longer).
    web_body_timeout_s: float = Field(10.0, gt=0, le=300)
    # host:port where others (`streamrec status`, a scraper) reach this worker's HTTP port,
    # advertised in its status hash; unset: {host name}:{web_port}. Set it where the host
    # name does not resolve for them (a container's, with the port published on the host).
    web_advertised_address: str | None = Field(None, pattern=r"^\S+:[0-9]{1,5}$")
    # The worker's event loop: uvloop's (the worker extra installs it; 16% less CPU per
    # event at saturation in docs/benchmarks.md), or asyncio's own.
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"
    # Logs: "text" (Faust's default) or "json" (one object per line: streamrec/logs.py).
    log_format: Literal["text", "json"] = "text"
    # Where Faust keeps its local files (table stores, offsets): must be writable.
    # Unset: Faust's default, "{app_id}-data" in the working directory.
    data_dir: Path | None = None
    # Trending (serving/trending.py), the fallback for users with no usable history:
    # clicks weigh half as much every half-life; the set keeps the top max_items; each
    # worker re-reads the top refresh_s after its last read.
    trending_half_life_s: float = Field(3600.0, ge=1.0, le=30 * 86_400)
    trending_max_items: int = Field(10_000, ge=100, le=10_000_000)
    trending_refresh_s: float = Field(1.0, ge=0.1, le=3600)
    # Ranking (serving/ranking.py; docs/models.md, "Ranking"): "auto" runs the bundle's ranker where
    # training measured it better than retrieval alone, "on" whenever there is one, "off" never.
    ranker: Literal["auto", "on", "off"] = "auto"
    # The content blend (serving/content_blend.py; docs/models.md, "The content blend"): retrieval's first
    # candidates re-scored with their rarity-weighted attribute overlap; the same three modes
    # (a bundle's default: what training measured on validation); never where the ranker runs.
    content_blend: Literal["auto", "on", "off"] = "auto"
    # Re-ranking (serving/rerank.py; docs/models.md, "Re-ranking rules"): retrieval returns
    # `candidates` items per user when MMR, freshness or a cap is on; they pick the final top_n.
    candidates: int = Field(200, ge=1, le=10_000)
    rerank_blocklist: str = ""  # item ids, comma-separated: never in a list
    rerank_mmr_lambda: float = Field(1.0, ge=0.0, le=1.0)  # 1 = relevance only
    rerank_mmr_similarity: Literal["vectors", "attributes"] = "vectors"
    rerank_freshness_boost: float = Field(0.0, ge=0.0, le=100.0)
    rerank_freshness_half_life_s: float = Field(86_400.0, ge=1.0)
    rerank_max_per_value: int = Field(0, ge=0)  # 0 = no cap
    rerank_cap_attribute: str = ""  # attribute token prefix naming the capped value ("brand:")
    rerank_cap_top: int = Field(20, ge=1)
    rerank_pins: str = ""  # "position:item,…" (0-based positions)
    # The new-item slot (0-based position; -1 = off): a list with no new item (one from the
    # items topic since the bundle) in its first slot + 1 places gets the user's
    # best-scoring new item at that position.
    rerank_new_item_slot: int = Field(-1, ge=-1, le=1_000)
    # ... only for users whose best new item ranks in their first this many by score (0 =
    # any): what the cold-start protocol chose on validation (docs/benchmarks.md).
    rerank_new_item_within: int = Field(0, ge=0, le=10_000)
    # How the slot's new item is chosen (serving/new_item_slot.py): key = vector score / |user|
    # + weight * attribute overlap with the user's recent items (0: by vector score), and
    # the key the chosen item must reach for the user to get it (unset: any).
    rerank_new_item_content_weight: float = Field(0.0, ge=0.0, le=100.0)
    rerank_new_item_min_key: float | None = None
    # New items reach lists through the slot only (true), not also merged into retrieval by
    # score (false): the rest of each list is then the bundle's own ranking.
    rerank_new_item_slot_only: bool = False
    # Where the session table lives (streams/table_stores.py): "memory" (rebuilt from the
    # changelog at each start) or "rocksdb" (on disk under data_dir, one database per
    # owned partition: bounded by disk, and a restart reads only the changelog's tail).
    table_store: Literal["memory", "rocksdb"] = "memory"
    # Online metrics (serving/online.py; docs/operations.md, "Online metrics"): each applied
    # click against the list the user held before it, counted per model version and arm on
    # /metrics. The worker keeps the last list of at most online_metrics_users users.
    online_metrics: bool = True
    online_metrics_users: int = Field(100_000, ge=1, le=100_000_000)
    # Canaries (serving/rollout.py; docs/operations.md, "Canary rollout"): `publish --canary`'s
    # defaults. Promoted when its online HR@10 is not below control's by more than the margin
    # at the confidence, after min_clicks per arm; rolled back when it is, or undecided at max.
    canary_margin: float = Field(0.01, ge=0.0, le=1.0)
    canary_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    canary_min_clicks: int = Field(1_000, ge=1)
    canary_max_clicks: int = Field(50_000, ge=1)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _WithoutServiceLinks(settings_cls, env_settings),
                dotenv_settings, file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: object) -> object:
        unknown_variables(os.environ)
        return data

    @model_validator(mode="after")
    def _security_is_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ConfigError(f"STREAMREC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                              "needs STREAMREC_KAFKA_SASL_USERNAME and STREAMREC_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ConfigError("STREAMREC_KAFKA_SSL_CERTFILE and STREAMREC_KAFKA_SSL_KEYFILE go "
                              "together (client certificate and its key)")
        uses_tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile)
        if not uses_tls and any(f is not None for f in tls_files):
            raise ConfigError("STREAMREC_KAFKA_SSL_* files are set but "
                              f"STREAMREC_KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}; "
                              "use SSL or SASL_SSL")
        for f in (*tls_files, self.kafka_ssl_keyfile):
            if f is not None and not f.is_file():
                raise ConfigError(f"Kafka TLS file {f} does not exist")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ConfigError("STREAMREC_S3_ACCESS_KEY_ID and STREAMREC_S3_SECRET_ACCESS_KEY go "
                              "together (or set neither: the AWS credential chain)")
        return self

    @field_validator("bundle_store", mode="before")
    @classmethod
    def _store_location(cls, v: object) -> object:
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        if isinstance(v, str) and "://" in v:
            scheme, _, rest = v.partition("://")
            if scheme not in ("file", "s3"):
                raise ConfigError(f"STREAMREC_BUNDLE_STORE={v}: the store is a directory, "
                                  "file:///abs/path or s3://bucket/prefix")
            if scheme == "s3" and not rest.split("/", 1)[0]:
                raise ConfigError(f"STREAMREC_BUNDLE_STORE={v} names no bucket (s3://bucket/prefix)")
        return v

    @model_validator(mode="after")
    def _redis_password_from_file(self) -> Settings:
        if self.redis_password_file is None:
            return self
        from urllib.parse import quote, unquote, urlsplit, urlunsplit

        f = self.redis_password_file
        try:
            password = f.read_text().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"STREAMREC_REDIS_PASSWORD_FILE={f}: cannot read it "
                              f"({e.strerror or e})") from e
        if not password:
            raise ConfigError(f"STREAMREC_REDIS_PASSWORD_FILE={f} is empty")
        u = urlsplit(self.redis_url.get_secret_value())
        if u.password is not None and unquote(u.password) != password:
            raise ConfigError("STREAMREC_REDIS_URL has a password and "
                              "STREAMREC_REDIS_PASSWORD_FILE another: give one of them")
        user = quote(unquote(u.username), safe="") if u.username else ""
        host = u.netloc.rpartition("@")[2]
        url = urlunsplit((u.scheme, f"{user}:{quote(password, safe='')}@{host}", u.path,
                          u.query, u.fragment))
        object.__setattr__(self, "redis_url", SecretStr(url))  # frozen: set once, here
        return self

    @model_validator(mode="after")
    def _redis_cluster_url(self) -> Settings:
        if not self.redis_cluster:
            return self
        from urllib.parse import urlsplit

        u = urlsplit(self.redis_url.get_secret_value())
        if u.scheme not in ("redis", "rediss"):
            raise ConfigError("STREAMREC_REDIS_CLUSTER=true needs a redis:// or rediss:// "
                              "STREAMREC_REDIS_URL naming a node (no unix socket)")
        from redis.connection import parse_url

        if parse_url(self.redis_url.get_secret_value()).get("db") not in (None, 0):
            raise ConfigError("STREAMREC_REDIS_CLUSTER=true: Redis Cluster has only database 0, and "
                              "STREAMREC_REDIS_URL names another (in its path or ?db=)")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_a_redis_url(cls, v: SecretStr) -> SecretStr:
        """What redis-py refuses when it connects, refused at start-up with the variable's
        name (redis-py's own parser), plus a database path that is not a number, which
        redis-py would silently read as database 0. The messages never quote the URL, which
        may hold a password."""
        from urllib.parse import unquote, urlsplit

        from redis.connection import parse_url

        url = v.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            scheme = url.partition("://")[0] if "://" in url else ""
            shown = f"{scheme}://" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", scheme) else \
                "a URL without a scheme"
            raise ConfigError(f"STREAMREC_REDIS_URL must start with redis://, rediss:// or unix:// "
                              f"(in lower case), not {shown}")
        hint = "(percent-encode / # ? @ in a user name or password)"
        try:
            options = parse_url(url)
        except ValueError as e:
            said = str(e)
            if said.startswith("Invalid value for '"):  # names the query option, not its value
                detail = said.rstrip(".")
            elif "Port" in said:
                detail = "its port is not a number from 0 to 65535"
            else:
                detail = "redis-py cannot parse it"
            raise ConfigError(f"STREAMREC_REDIS_URL: {detail} {hint}") from None
        db = options.get("db")  # from ?db= or, where that is absent, from a path that is a number
        path = unquote(urlsplit(url).path).replace("/", "").strip()
        if (db is None and path and not url.startswith("unix://")) or (isinstance(db, int) and db < 0):
            raise ConfigError(f"STREAMREC_REDIS_URL: its database is not a number from 0 up {hint}")
        return v

    @field_validator("key_prefix")
    @classmethod
    def _prefix_ends_with_colon(cls, v: str) -> str:
        return v if not v or v.endswith(":") else v + ":"

    @field_validator("web_tokens")
    @classmethod
    def _tokens_are_bearer_tokens(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            web_token_list(v)  # raises on a malformed list
        return v

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from the environment; a value that does not validate raises
        :class:`ConfigError` naming its variable (:func:`describe_validation_error`)."""
        try:
            return cls()
        except ValidationError as e:
            raise ConfigError(f"invalid settings: {describe_validation_error(e)}") from None

    @property
    def web_token_values(self) -> tuple[str, ...]:
        """The accepted bearer tokens (``web_tokens`` split), empty when it is unset."""
        return web_token_list(self.web_tokens) if self.web_tokens is not None else ()

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
    def worker_name(self) -> str:
        """``worker_id``, or ``{host}-{pid}`` when it is not set."""
        import socket

        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def web_address(self) -> str:
        """Where others reach the HTTP port: ``web_advertised_address``, or when it is not
        set ``{web_bind}:{web_port}`` (``{host name}:{web_port}`` where it binds every
        interface: 0.0.0.0 or ::)."""
        import socket

        if self.web_advertised_address:
            return self.web_advertised_address
        host = socket.gethostname() if self.web_bind in ("0.0.0.0", "::") else self.web_bind
        return f"[{host}]:{self.web_port}" if ":" in host else f"{host}:{self.web_port}"

    @property
    def redis_host(self) -> str:
        """Where Redis is, for messages: the URL without its credentials."""
        from urllib.parse import urlsplit

        u = urlsplit(self.redis_url.get_secret_value())
        return f"{u.scheme}://{u.hostname}:{u.port or 6379}{u.path}"

    @property
    def broker_url(self) -> str:
        """Faust broker URL (``kafka://host:port[;host:port]``)."""
        return "kafka://" + ";".join(h.strip() for h in self.kafka_bootstrap.split(","))


# Kubernetes injects these for every Service in the namespace (unless the pod sets
# enableServiceLinks: false): a Service "streamrec-web" with port 6066/TCP named "http" gives
# STREAMREC_WEB_SERVICE_HOST=10.0.0.1, STREAMREC_WEB_SERVICE_PORT=6066,
# STREAMREC_WEB_SERVICE_PORT_HTTP=6066, STREAMREC_WEB_PORT=tcp://10.0.0.1:6066,
# STREAMREC_WEB_PORT_6066_TCP=tcp://10.0.0.1:6066 and its _PROTO, _PORT and _ADDR parts.
# A variable is a service link only when both its name and its value have these shapes.
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
_PORT_NUMBER = r"[0-9]{1,5}"
_SERVICE_LINKS = (
    (re.compile(r"[A-Z0-9_]+_SERVICE_HOST"), re.compile(_HOST)),
    (re.compile(r"[A-Z0-9_]+_SERVICE_PORT(?:_[A-Z0-9_]+)?"), re.compile(_PORT_NUMBER)),
    (re.compile(r"[A-Z0-9_]+_PORT"), re.compile(rf"(?:tcp|udp|sctp)://{_HOST}:{_PORT_NUMBER}")),
    (re.compile(r"[A-Z0-9_]+_PORT_(?P<n>[0-9]{1,5})_(?P<p>TCP|UDP|SCTP)"),
     re.compile(rf"(?P<p>tcp|udp|sctp)://{_HOST}:(?P<n>{_PORT_NUMBER})")),
    (re.compile(r"[A-Z0-9_]+_PORT_[0-9]{1,5}_(?P<p>TCP|UDP|SCTP)_PROTO"),
     re.compile(r"(?P<p>tcp|udp|sctp)")),
    (re.compile(r"[A-Z0-9_]+_PORT_(?P<n>[0-9]{1,5})_(?:TCP|UDP|SCTP)_PORT"),
     re.compile(rf"(?P<n>{_PORT_NUMBER})")),
    (re.compile(r"[A-Z0-9_]+_PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_ADDR"), re.compile(_HOST)),
)
_logged: set[str] = set()


def is_service_link(var: str, value: str) -> bool:
    """Whether ``var=value`` has the shape of a variable Kubernetes injects for a Service:
    the name's and the value's, and the port and protocol agree where both carry them."""
    for name_shape, value_shape in _SERVICE_LINKS:
        n, v = name_shape.fullmatch(var.upper()), value_shape.fullmatch(value)
        if n and v and all(n.groupdict()[g].lower() == v.groupdict()[g].lower()
                           for g in n.groupdict() if g in v.groupdict()):
            return True
    return False


def _known_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | NOT_SETTINGS


def shadowed_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings whose variable holds a Kubernetes service link, not a value for the setting
    (``STREAMREC_WEB_PORT=tcp://10.0.0.1:6066`` from a Service named ``streamrec-web``):
    field name -> variable. Only integer settings named ``*_PORT``: the one shape that can
    collide with a setting's name."""
    out = {}
    for var, value in environ.items():
        name = var.upper().removeprefix(ENV_PREFIX).lower()
        field = Settings.model_fields.get(name) if var.upper().startswith(ENV_PREFIX) else None
        if (field is not None and field.annotation is int and var.upper().endswith("_PORT")
                and is_service_link(var, value)):
            out[name] = var
    return out


class _WithoutServiceLinks(PydanticBaseSettingsSource):
    """The environment source, less the settings a Kubernetes service link shadows (logged):
    the setting keeps its default or the value given another way."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything comes through __call__

    def __call__(self) -> dict[str, Any]:
        data = self.env()
        for name, var in shadowed_settings(os.environ).items():
            data.pop(name, None)
            if var not in _logged:
                _logged.add(var)
                log.warning("ignoring %s=%s: a Kubernetes service link (a Service named %s), not "
                            "a value for %s; set enableServiceLinks: false in the pod spec to "
                            "drop it", var, os.environ[var], var.removesuffix("_PORT").lower()
                            .replace("_", "-"), name)
        return data


# What a bearer token may hold (RFC 6750's b64token), and its shortest length.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
MIN_TOKEN_CHARS = 16


def describe_validation_error(e: ValidationError) -> str:
    """A pydantic error from building :class:`Settings`, one line per problem, each naming
    the environment variable that set the field. Values of secret fields are not quoted."""
    lines = []
    for err in e.errors(include_url=False):
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else ""
        field = Settings.model_fields.get(name)
        var = f"{ENV_PREFIX}{name.upper()}" if field is not None else (name or "settings")
        secret = field is not None and "SecretStr" in str(field.annotation)
        given = err.get("input")
        shown = "" if secret or not isinstance(given, str | int | float) else f"={given!r}"
        lines.append(f"{var}{shown}: {err['msg']}")
    return "; ".join(lines)


def web_token_list(tokens: SecretStr) -> tuple[str, ...]:
    """``STREAMREC_WEB_TOKENS`` split at its commas. Each token must have at least
    ``MIN_TOKEN_CHARS`` characters, all of them allowed in a bearer token; messages
    number a bad token, never show it."""
    out = tuple(t.strip() for t in tokens.get_secret_value().split(",") if t.strip())
    if not out:
        raise ConfigError("STREAMREC_WEB_TOKENS is set but holds no token; unset it to serve "
                          "without authentication")
    for i, t in enumerate(out, 1):
        if len(t) < MIN_TOKEN_CHARS:
            raise ConfigError(f"STREAMREC_WEB_TOKENS: token {i} has {len(t)} characters, a "
                              f"token needs {MIN_TOKEN_CHARS} or more (make one with: python -c "
                              "'import secrets; print(secrets.token_urlsafe(32))')")
        if not set(t) <= _TOKEN_CHARS:
            raise ConfigError(f"STREAMREC_WEB_TOKENS: token {i} holds a character a bearer "
                              "token cannot; use letters, digits and - . _ ~ + / =")
    return out


def unknown_variables(environ: Mapping[str, str]) -> None:
    """Refuse ``STREAMREC_*`` variables that name no setting (a typo would do nothing).
    Kubernetes' service links (:func:`is_service_link`) are not settings and pass."""
    known = _known_variables()
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() in known:
            continue
        if is_service_link(var, environ[var]):
            if var not in _logged:
                _logged.add(var)
                log.debug("ignoring %s: a Kubernetes service link", var)
            continue
        # hints name settings only, never a variable that is not one (deploy/local.sh's ports)
        close = difflib.get_close_matches(var.upper(), sorted(known - NOT_SETTINGS), n=1,
                                          cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown setting {var}{hint} (every STREAMREC_* variable must "
                          "name a setting: see docs/configuration.md; on Kubernetes, the "
                          "variables a Service injects are recognised by their shape, and "
                          "enableServiceLinks: false in the pod spec stops them)")
