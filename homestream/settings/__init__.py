"""One typed settings object for every entrypoint (worker, server, producer CLI, demo, bench).

Values come from the environment with the ``HOMESTREAM_`` prefix (for example
``HOMESTREAM_BOOTSTRAP_SERVERS``), are validated once at start-up by :func:`load_settings`,
and are passed down explicitly; no module reads the environment on its own.

>>> s = Settings(bootstrap_servers="127.0.0.1:19092", redis_url="redis://127.0.0.1:16379/0")
>>> s.topic("player-events")
'homestream.player-events'
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HOMESTREAM_"
#: Names of the artwork policies (the registry in ``online_models.bandits``; a unit test keeps
#: the two in step without settings importing the models).
ARTWORK_POLICIES = ("uniform", "non_contextual", "epsilon_greedy", "lin_ucb", "thompson")
#: Kafka security protocols and SASL mechanisms every client of the pipeline supports.
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class ConfigError(RuntimeError):
    """Raised at start-up when a setting is missing or invalid; names the variable."""


#: Roles of API keys, weakest first: ``events`` may only send player events (POST /v1/events),
#: ``read`` every /v1 route but the admin ones, ``admin`` all.
API_ROLES = ("events", "read", "admin")


class Settings(BaseSettings):
    """Every knob of the pipeline, with production-safe defaults for a local run."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # --- broker ---------------------------------------------------------------------------
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("homestream.", description="Prefix of every topic name")
    partitions: int = Field(6, ge=1, le=1024, description="Partitions of the event topics")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication of new topics")
    event_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000,
                                    description="Retention of event topics")
    # Tansu joins a group in ~session_timeout/2 (infrastructure.md): keep these short.
    # 6 s is also the smallest session timeout a default Apache Kafka broker accepts.
    session_timeout_s: float = Field(6.0, ge=1.0, le=300.0,
                                     description="Consumer group session timeout")
    heartbeat_interval_s: float = Field(1.0, ge=0.1, le=60.0,
                                        description="Consumer heartbeat interval")
    fetch_max_wait_ms: int = Field(10, ge=0, le=60_000,
                                   description="Longest a worker's fetch waits for data")
    rebalance_timeout_s: float = Field(10.0, ge=1.0, le=600.0,
                                       description="Consumer group rebalance timeout")

    # --- broker security (every Kafka client: worker, server, CLI, topic admin, bench) -----
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: SaslMechanism = Field(
        "", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with SASL_*)")
    kafka_sasl_username: str = Field("", description="SASL user name (required with SASL_*)")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password "
                                           "(required with SASL_*; never printed)")
    kafka_ssl_ca_file: str = Field("", description="PEM file of the CA that signed the "
                                   "brokers' certificates (empty: the system's CAs)")
    kafka_ssl_cert_file: str = Field("", description="PEM client certificate (mutual TLS)")
    kafka_ssl_key_file: str = Field("", description="PEM private key of the client "
                                    "certificate")

    # --- schema registry ------------------------------------------------------------------
    schema_registry_url: str = Field("", description="A Confluent-compatible schema "
                                     "registry (http:// or https://). Set: messages are "
                                     "written in the registry's framing (byte 0, schema id) "
                                     "and both framings are read; empty: Avro single-object "
                                     "encoding")
    schema_registry_compatibility: Literal[
        "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
        "FULL_TRANSITIVE", "NONE"] = Field("FULL_TRANSITIVE", description="Compatibility "
                                           "level set on every subject at start-up")
    schema_registry_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="Timeout "
                                             "of one request to the schema registry")
    schema_registry_basic_auth: SecretStr = Field(SecretStr(""), description="USER:PASSWORD "
                                                  "for the schema registry (never printed)")

    # --- redis ----------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server URL")
    redis_max_connections: int = Field(64, ge=1, le=10_000, description="Redis connections "
                                       "per process at most; callers wait for a free one")
    key_prefix: str = Field("hs:", description="Prefix of every Redis key")
    outage_retry_initial_s: float = Field(0.1, gt=0.0, le=60.0, description="A worker "
                                          "batch that finds Redis unreachable is retried "
                                          "after this, then twice as long each time")
    outage_retry_max_s: float = Field(5.0, gt=0.0, le=300.0, description="Longest wait "
                                      "between two retries of a batch while Redis is "
                                      "unreachable (retries go on until it answers)")

    # --- logging --------------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field("text", description="Log lines as plain "
                                                "text or as one JSON object per line")

    # --- worker ---------------------------------------------------------------------------
    app_id: str = Field("homestream", description="Faust app id / consumer group")
    batch_max_events: int = Field(2000, ge=1, le=100_000,
                                  description="Most messages in one worker micro-batch")
    batch_within_s: float = Field(0.01, gt=0.0, le=10.0,
                                  description="Longest wait to fill a micro-batch (events "
                                  "that arrive while a batch is applied wait at most this "
                                  "long after it)")
    batch_max_bytes: int = Field(1_048_576, ge=1024, description="Most bytes of messages "
                                 "(keys and values) a worker applies in one step; a larger "
                                 "micro-batch is applied in consecutive parts, in order, so "
                                 "the worker's memory is bounded when messages carry many "
                                 "events")
    state_cache_members: int = Field(2_000, ge=0, le=10_000_000, description="Members' "
                                     "states a worker keeps between batches (committed, least "
                                     "recently used dropped first), so a batch loads from "
                                     "Redis only those it does not hold; ~3.4x a state's JSON "
                                     "in memory each (0 = every batch loads its members' "
                                     "states)")
    dedupe_window: int = Field(512, ge=16, le=100_000, description="Event ids kept per profile")
    recent_titles: int = Field(50, ge=1, le=1000, description="Recent titles kept per profile")
    member_titles_max: int = Field(500, ge=10, le=100_000, description="Most titles each "
                                   "per-title history map of a member's state keeps "
                                   "(playheads, finished, engagement, impressions, feedback, "
                                   "re-watches); the oldest are dropped")
    affinity_half_life_s: float = Field(14 * 24 * 3600.0, gt=0,
                                        description="Half-life of genre affinity")
    trending_half_life_s: float = Field(6 * 3600.0, gt=0,
                                        description="Half-life of trending counts")
    popularity_half_life_s: float = Field(30 * 86400.0, gt=0, description="Half-life of the "
                                          "long-horizon popularity used for relevance")
    model_factors: int = Field(16, ge=1, le=256, description="Latent factors of Top Picks")
    model_seed: int = Field(42, description="Seed of model initialization and sampling")
    model_checkpoint_interval_s: float = Field(5.0, gt=0,
                                               description="Seconds between model checkpoints")
    learner_mode: Literal["inline", "topic"] = Field(
        "inline", description="Who learns the shared models: inline = each worker learns "
        "them itself (one worker only); topic = workers send their learning to the "
        "model-updates topic and one learner process (python -m streams.learner) learns "
        "from all partitions (any number of workers)")
    model_snapshot_interval_s: float = Field(1.0, gt=0, le=60.0, description="Seconds "
                                             "between the learner's model snapshots")
    model_reload_interval_s: float = Field(0.5, gt=0, le=60.0, description="Seconds between "
                                           "a worker's checks for a new model snapshot")
    worker_web_port: int = Field(0, ge=0, le=65535, description="Faust web port (the "
                                 "worker's /health and /ready); 0 = disabled")
    learner_web_port: int = Field(0, ge=0, le=65535, description="The learner's /health and "
                                  "/ready port; 0 = disabled")
    worker_metrics_port: int = Field(0, ge=0, le=65535, description="Port of the worker's "
                                     "Prometheus /metrics endpoint; 0 = disabled")
    worker_data_dir: str = Field(".homestream-data", description="Faust data directory")
    worker_memory_log_s: float = Field(0.0, ge=0.0, description="Seconds between log lines "
                                       "of what the worker's memory is made of (resident "
                                       "memory, allocator, collector, batch sizes, queues; "
                                       "streams.memory); 0 = off")

    max_lateness_s: float = Field(6 * 3600.0, ge=0.0,
                                  description="Events older than this behind a profile's "
                                              "newest event go to the dead letters")
    max_future_skew_s: float = Field(300.0, ge=0.0, description="Events whose time is more "
                                     "than this ahead of their message's broker timestamp (or "
                                     "the worker's clock) go to the dead letters; the stream "
                                     "clock never runs this far ahead of the wall clock")
    clock_quorum: int = Field(3, ge=1, le=1000, description="Members of a partition, and "
                              "partitions, that must reach a time before the stream clock "
                              "does (1: the newest event time seen moves it)")
    publish_page_updates: bool = Field(True, description="Publish changed pages downstream")
    render_window_ms: float = Field(0.0, ge=0.0, le=60_000.0, description="A member's page "
                                    "is rendered at most once per this window: a member's "
                                    "first page in the batch of their event, every other "
                                    "change queued for the page timer (0 = every batch "
                                    "renders)")
    render_budget_share: float = Field(0.3, gt=0.0, le=1.0, description="Share of each "
                                       "page-timer tick spent on queued pages while the "
                                       "consumer is behind (full batches; otherwise every due "
                                       "page; the longest queued first)")

    # --- artwork ----------------------------------------------------------------------------
    artwork_policy: str = Field("lin_ucb", description="Artwork bandit: uniform, "
                                "non_contextual, epsilon_greedy, lin_ucb or thompson")
    artwork_sticky_s: float = Field(7 * 24 * 3600.0, ge=0.0,
                                    description="How long a member keeps a title's artwork")
    artwork_assignments_max: int = Field(120, ge=0, description="Most artwork assignments "
                                         "a member keeps (0: no cap); past it the oldest "
                                         "decisions are dropped down to three quarters of it "
                                         "and those titles are drawn again when shown")
    artwork_rows: int = Field(3, ge=0, le=100, description="Rows of a page whose artwork "
                              "the bandit chooses (the first screen)")
    serve_plan_cache: int = Field(4096, ge=0, description="Compiled home pages kept per "
                                  "server process (0: compile every request)")
    serve_redis_timeout_s: float = Field(1.0, gt=0.0, le=60.0, description="How long the "
                                         "server waits for Redis in a request before it "
                                         "answers from its compiled pages or with 503")
    serve_redis_multiplex: bool = Field(True, description="Send the home page's reads and "
                                        "artwork writes over one pipelined connection per "
                                        "server process (false: redis-py's pool)")
    artwork_decisions_max_age_s: float = Field(
        0.0, ge=0.0, description="How long a served page may keep drawing artwork from the "
        "propensities of the policy version it computed them with after a newer version "
        "is loaded (logged with that version; 0: recompute at every new version, as the "
        "policy learns fastest)")
    artwork_reward_window_s: float = Field(3600.0, gt=0.0, description="A play this long "
                                           "after an impression can reward its artwork")
    artwork_quality_fraction: float = Field(0.3, gt=0.0, le=1.0, description="Share of the "
                                            "title a play must reach to be a quality play")
    artwork_settle_lateness_s: float = Field(5.0, ge=0.0, description="Allowed lateness "
                                             "of the worker's event-time watermark that "
                                             "settles expired reward windows with reward 0")
    artwork_settle_interval_s: float = Field(1.0, gt=0.0, description="Seconds between the "
                                             "worker's settling of expired reward windows")
    artwork_delayed_positives: bool = Field(True, description="Pay a quality play's reward "
                                            "when its window closes, like the zeros, so both "
                                            "outcomes reach the policy with the same delay")
    artwork_learn_from: str = Field("", description="Comma-separated artwork policies whose "
                                    "decisions the worker's policy learns from (empty: every "
                                    "logged decision)")

    # --- experiments ------------------------------------------------------------------------
    experiment_salt: str = Field("homepage-v1", min_length=1,
                                 description="Salt of the A/B variant assignment")
    experiment_split: str = Field("control:1", description="Variants and their shares, "
                                  "e.g. control:0.5,diverse:0.5")
    experiment_overrides: str = Field("", description="JSON: variant -> rule fields it "
                                      "changes, e.g. {\"diverse\": {\"diversity_penalty\": 1.5}}")

    # --- pages ----------------------------------------------------------------------------
    rules_file: str = Field("", description="JSON file of guardrails and row weights")
    row_length: int = Field(20, ge=1, le=200, description="Titles per row")
    row_learning: bool = Field(True, description="Learn row-kind weights from the plays "
                               "each kind of row leads to (else the rules' weights)")
    row_prior_strength: float = Field(500.0, gt=0, description="Pseudo-exposures that "
                                      "shrink learned row-kind take rates toward the rules")
    row_attribution_window_s: float = Field(86400.0, gt=0, description="A first play this "
                                            "long after an impression credits its row kind")
    popularity_depth: int = Field(500, ge=1, le=100_000, description="Most popular titles "
                                  "per country read for relevance at each render")
    artwork_base_url: str = Field("https://img.example.com/art/",
                                  description="Base URL of synthetic artwork")

    # --- serving --------------------------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Server bind address")
    http_port: int = Field(8080, ge=0, le=65535, description="Server port")
    http_workers: int = Field(0, ge=0, le=256, validate_default=True,
                              description="Server processes sharing the port (SO_REUSEPORT); "
                              "0: one per CPU")
    http_shutdown_s: float = Field(10.0, ge=0.0, le=600.0, description="On SIGTERM, how "
                                   "long in-flight requests may take before the server stops")
    ingest_max_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576, description="Largest "
                                  "POST /v1/events body in bytes (larger: 413)")
    ingest_max_events: int = Field(1000, ge=1, le=100_000, description="Most events in one "
                                   "POST /v1/events array (more: 413)")
    api_keys: str = Field("", description="API keys, stored hashed: comma-separated "
                          "role:sha256hex entries, role events, read or admin (e.g. "
                          "read:<sha256 of the key>,admin:<...>); empty: the API is open")
    api_rate_per_s: float = Field(50.0, ge=0.0, description="Requests per second one API key "
                                  "may make to one server process (0: no limit)")
    api_rate_burst: int = Field(100, ge=1, description="Requests one API key may make at once "
                                "above its rate before 429")
    erased_ttl_s: float = Field(7 * 24 * 3600.0, gt=0.0, description="How long the worker "
                                "drops events of an erased profile still in flight (at least "
                                "the event topics' retention)")

    # --- producer client ------------------------------------------------------------------
    producer_linger_ms: float = Field(5.0, ge=0.0, le=10_000.0,
                                      description="Producer batching delay")
    impressions_buffer_kb: int = Field(131_072, ge=1024, description="Impressions the "
                                       "server holds while the broker does not take them, in "
                                       "KB (beyond: dropped, counted and logged)")
    producer_delivery_timeout_ms: int = Field(30_000, ge=1000,
                                              description="Producer delivery timeout")

    @field_validator("http_workers")
    @classmethod
    def _one_process_per_cpu(cls, v: int) -> int:
        return v or os.cpu_count() or 1

    @field_validator("artwork_policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in ARTWORK_POLICIES:
            raise ValueError(f"must be one of {', '.join(ARTWORK_POLICIES)}")
        return v

    @field_validator("artwork_learn_from")
    @classmethod
    def _known_policies(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        unknown = [n for n in names if n not in ARTWORK_POLICIES]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; must be among "
                             f"{', '.join(ARTWORK_POLICIES)}")
        return ",".join(names)

    @property
    def artwork_learn_from_policies(self) -> frozenset[str]:
        """:attr:`artwork_learn_from` as a set (empty: learn from every decision)."""
        return frozenset(n for n in self.artwork_learn_from.split(",") if n)

    @field_validator("api_keys")
    @classmethod
    def _hashed_keys(cls, v: str) -> str:
        entries = [e.strip() for e in v.split(",") if e.strip()]
        for e in entries:
            role, _, digest = e.partition(":")
            if role not in API_ROLES:
                raise ValueError(f"entry {e[:12]!r}...: role must be one of "
                                 f"{', '.join(API_ROLES)} (role:sha256hex)")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError(f"{role} entry: the key's SHA-256 as 64 hex digits, not the "
                                 "key itself (printf %s KEY | sha256sum)")
        return ",".join(entries)

    @property
    def api_key_hashes(self) -> tuple[tuple[str, str], ...]:
        """:attr:`api_keys` as ``(role, sha256 hex)`` pairs (empty: the API is open)."""
        return tuple((r, d.lower()) for r, _, d in
                     (e.partition(":") for e in self.api_keys.split(",") if e))

    @field_validator("bootstrap_servers", "redis_url", "app_id")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_scheme(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (or be empty: no registry)")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @model_validator(mode="after")
    def _outage_backoff_ordered(self) -> Settings:
        """The first retry's wait is at most the longest one."""
        if self.outage_retry_initial_s > self.outage_retry_max_s:
            raise ValueError(f"{ENV_PREFIX}OUTAGE_RETRY_INITIAL_S ({self.outage_retry_initial_s})"
                             f" must not exceed {ENV_PREFIX}OUTAGE_RETRY_MAX_S "
                             f"({self.outage_retry_max_s})")
        return self

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        """SASL needs a mechanism and credentials; TLS files must exist; cert and key go
        together; each problem names its variable."""
        p = ENV_PREFIX
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        if sasl:
            for name, value in (("kafka_sasl_mechanism", self.kafka_sasl_mechanism),
                                ("kafka_sasl_username", self.kafka_sasl_username),
                                ("kafka_sasl_password",
                                 self.kafka_sasl_password.get_secret_value())):
                if not value:
                    raise ValueError(f"{p}{name.upper()}: required when "
                                     f"{p}KAFKA_SECURITY_PROTOCOL is "
                                     f"{self.kafka_security_protocol}")
        elif self.kafka_sasl_mechanism or self.kafka_sasl_username:
            raise ValueError(f"{p}KAFKA_SASL_*: set, but {p}KAFKA_SECURITY_PROTOCOL is "
                             f"{self.kafka_security_protocol} (use SASL_PLAINTEXT or "
                             f"SASL_SSL)")
        files = (("kafka_ssl_ca_file", self.kafka_ssl_ca_file),
                 ("kafka_ssl_cert_file", self.kafka_ssl_cert_file),
                 ("kafka_ssl_key_file", self.kafka_ssl_key_file))
        for name, path in files:
            if path and not tls:
                raise ValueError(f"{p}{name.upper()}: set, but {p}KAFKA_SECURITY_PROTOCOL "
                                 f"is {self.kafka_security_protocol} (use SSL or SASL_SSL)")
            if path and not os.path.isfile(path):
                raise ValueError(f"{p}{name.upper()}: no such file {path!r}")
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError(f"{p}KAFKA_SSL_CERT_FILE and {p}KAFKA_SSL_KEY_FILE: give both "
                             f"or neither")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for starting child processes.

        >>> Settings(partitions=3).to_env()["HOMESTREAM_PARTITIONS"]
        '3'
        """
        return {f"{ENV_PREFIX}{k.upper()}": str(v.get_secret_value() if isinstance(v, SecretStr)
                                                 else v)
                for k, v in self.model_dump().items()}

    def topic(self, name: str) -> str:
        """The full name of one of the registry's topics."""
        return f"{self.topic_prefix}{name}"


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the bad variable.

    >>> import os
    >>> os.environ["HOMESTREAM_PARTITIONS"] = "zero"
    >>> try:
    ...     load_settings()
    ... except ConfigError as e:
    ...     print(str(e)[:69])
    invalid configuration: HOMESTREAM_PARTITIONS: Input should be a valid
    >>> del os.environ["HOMESTREAM_PARTITIONS"]
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if not field:  # a check across settings: its message names the variables
                problems.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
