"""One typed settings object, read from the environment (prefix ``HERALD_``).

With neither ``HERALD_DATABASE_URL`` nor ``HERALD_BROKER_URL`` set, herald runs on its
embedded default: a SQLite file for state and a second SQLite file as the broker
(kombu's SQLAlchemy transport), both in ``HERALD_DATA_DIR``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)

# Pages (critical, error) ride out a provider outage of an hour and then end as dead letters while they still
# matter; a warning is still worth its delay for a few hours, a business notification for a day.
DELIVERY_DEADLINES_S: dict[str, float] = {"critical": 3600.0, "error": 3600.0, "warning": 14400.0,
                                          "info": 86400.0}


class Settings(BaseSettings):
    """Every knob herald reads; the README lists them with their defaults."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    database_url: str | None = None
    # Seconds to wait for a PostgreSQL connection to be established (libpq's connect_timeout) unless the URL names
    # its own: a database host that drops packets fails a command or a task in this long instead of hanging for the
    # operating system's TCP timeout (minutes).
    database_connect_timeout_s: int = Field(default=10, ge=1)
    broker_url: str | None = None
    data_dir: Path = Path(".herald")
    # text: one line per entry (a terminal); json: one JSON object per line with the ids as fields (herald/logs.py)
    log_format: Literal["text", "json"] = "text"

    environments: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["dev", "test", "prod"])
    max_event_bytes: int = 64 * 1024

    # pipeline
    batch_size: int = 500
    # A delivery target is retried until its deadline (by severity, below); this count is only a safety bound
    # on top of it, and the rule for targets without a deadline (rows from before migration 0006).
    max_delivery_attempts: int = 100
    # Seconds a delivery target may be retried (transient failures, its host's circuit open) after its
    # notification is written, by severity, as JSON; a severity not named keeps its default (docs/channels.md).
    delivery_deadline_s: dict[str, float] = Field(default_factory=lambda: dict(DELIVERY_DEADLINES_S))
    # Pages (critical and error) ride their own queue and pool through every stage (herald/lanes.py); false: the
    # bulk queues, as every other event (only where no `urgent` pool runs, or to measure the lane).
    urgent_lane: bool = True
    # Niceness of a worker that consumes only bulk queues (0-19; herald/lanes.py nice_for, cli/workers.py
    # yield_cpu): on a host shared with the urgent pool, a burst yields the CPU to a page instead of sharing it.
    # 0: bulk and urgent workers share the CPU evenly.
    bulk_nice: int = Field(default=10, ge=0, le=19)
    # While a page is in flight (one of its deliver batches runs), bulk deliver batches hold their next
    # provider requests, a bounded while (herald/urgency.py); needs the Redis broker. Off by default: where bulk
    # and urgent workers share a host, niceness does more for a page at less cost to a burst (docs/architecture.md).
    bulk_yield: bool = False
    max_task_attempts: int = 5  # other transient errors (a provider's 5xx inside a task)
    outage_deadline_s: float = 900.0  # database or broker unreachable: retried this long, not counted
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    stall_deadline_s: float = 120.0
    escalate_after_s: float = 900.0  # an open, unacknowledged incident escalates this often
    escalation_max_level: int = 3
    # The escalation auditor (schedules/escalations.py): how often it looks for an open incident whose next chain
    # step is overdue, and how late past its due time a step must be before the auditor runs it itself.
    escalation_audit_interval_s: float = 60.0
    escalation_audit_grace_s: float = 60.0
    recover_interval_s: float = 30.0
    heartbeat_interval_s: float = 10.0  # each worker records that it is alive this often (herald status)
    heartbeat_timeout_s: float = 35.0  # a pool with no heartbeat this recent is down
    outbox_relay_interval_s: float = 10.0
    outbox_grace_s: float = 30.0

    # broker
    visibility_timeout_s: int = 3600
    broker_key_prefix: str = ""  # Redis: prefix of every key (several herald setups on one Redis)
    publish_timeout_s: float = 10.0
    publish_max_retries: int = 3
    # direct mode: a producer with the database records each event in the outbox before publishing
    publish_direct_record: bool = True

    # write-back webhooks to the admin platform (herald/writeback.py, docs/webhooks.md)
    webhook_retry_horizon_s: float = 86400.0  # a message not delivered this long after it was queued: failed
    webhook_retry_base_s: float = 5.0  # first retry after about this long, then doubling (full jitter)
    webhook_retry_max_s: float = 3600.0  # the longest wait between two attempts
    webhook_timeout_s: float = 10.0  # one request to a receiver, connect included
    webhook_tick_interval_s: float = 5.0  # the writeback sweep looks for due messages this often
    webhook_batch_size: int = 50  # messages claimed per round (at most one per endpoint and subject)
    webhook_allow_loopback: bool = False  # accept http(s) URLs on loopback (the local receiver only)

    # the HTTP API (herald api, docs/api.md): loopback unless told otherwise
    api_host: str = "127.0.0.1"
    api_port: int = 8080

    # Prometheus metrics (herald/metrics.py): one directory per host for every process's files; default
    # <data_dir>/metrics
    metrics_dir: Path | None = None

    # the dev backend of every channel (herald/channels/dev.py); which backend a channel uses, its
    # limits and its keys are the channel's own settings, HERALD_<NAME>_* (herald/channels/, docs/channels.md)
    dev_output: str = ""  # file path, or "-" for stdout; default <data_dir>/dev-channel.jsonl
    dev_delay_ms: int = 0

    # what every provider channel shares (herald/channels/sender.py, gate.py)
    channel_timeout_s: float = 10.0  # one request to a provider, connect included
    channel_circuit_failures: int = 20  # consecutive "provider down" answers that open the circuit
    # ... each within this long of the one before (a failure alone after a quiet spell starts the count again)
    channel_circuit_window_s: float = Field(default=60.0, gt=0)
    channel_circuit_open_s: float = 5.0  # first open period; doubles per failed probe
    channel_circuit_max_open_s: float = 60.0  # also: a host back is tried again within this long
    channel_auth_alert_interval_s: float = 600.0  # at most one ops event per channel and interval

    # sweeps (schedules/, docs/sweeps.md): periods, thresholds and retention of the periodic scans
    credential_sweep_interval_s: float = 3600.0
    # Days before expiry at which owners hear about a credential; per environment as JSON
    # ({"prod": [60, 30, 14, 7, 3, 1]}), the default list for the others. Expiry itself always notifies.
    credential_thresholds_days: dict[str, list[int]] = Field(default_factory=dict)
    credential_default_thresholds_days: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [30, 14, 7, 3, 1])
    credential_pkcs12_password: SecretStr | None = None  # for .p12/.pfx files (never stored)
    backlog_interval_s: float = 30.0
    backlog_depth_threshold: int = 1000  # messages waiting (and unacknowledged) in one queue
    backlog_age_threshold_s: float = 300.0  # age of the oldest waiting message
    backlog_clear_after_s: float = 120.0  # stay back under this long before a condition clears
    backlog_rabbitmq_peek: bool = True  # RabbitMQ: read the head message's stamp (get + requeue)
    sla_default_s: float = 300.0  # event to first delivery, per flow unless sla_s names it
    sla_s: dict[str, float] = Field(default_factory=dict)  # {"failure": 60, "operations": 120}
    sla_lookback_s: float = 86400.0
    ops_environment: str = "prod"  # environment of the ops.* events the sweeps raise
    due_tick_interval_s: float = 5.0
    due_batch_size: int = 100
    purge_interval_s: float = 3600.0
    retain_events_days: float = 90.0  # events with their notifications and deliveries
    retain_attempts_days: float = 30.0  # delivery attempts
    retain_audit_days: float = 365.0  # audit rows
    retain_sweep_days: float = 30.0  # outbox, replayed dead letters, finished timed work

    # people's sign-in (herald/signin.py, docs/access.md): an OIDC identity provider's tokens, or one-time links
    oidc_issuer: str | None = None  # the ``iss`` a token must carry; unset: OIDC sign-in is off
    oidc_audience: str | None = None  # the ``aud`` a token must carry (herald's client id at the provider)
    oidc_jwks_url: str | None = None  # where the provider publishes its signing keys
    signin_link_ttl_s: float = 900.0  # a one-time sign-in link (herald people link) is good this long
    session_ttl_s: float = 43200.0  # the session a link yields lasts this long

    # action tokens (herald/actions.py, docs/actions.md): what a tap on a notification sends back
    public_url: str = "http://127.0.0.1:8080"  # `herald api` as phones reach it (https in production)
    action_keys: SecretStr | None = None  # "kid:secret,kid2:secret2": the first signs, the others only verify
    action_keys_file: Path | None = None  # one "kid secret" per line, the first signs; re-read when it changes
    action_token_ttl_s: float = 86400.0  # an incident page's tokens last this long (an approval's: until it expires)

    # each channel's own settings, read on first use (``channel``)
    _channels: dict[type[BaseSettings], Any] = PrivateAttr(default_factory=dict)

    @field_validator("environments", "credential_default_thresholds_days", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.broker_url is None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'herald.sqlite'}"

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.sqlite'}"

    @property
    def dev_output_path(self) -> str:
        return self.dev_output or str(self.data_dir.resolve() / "dev-channel.jsonl")

    def channel(self, model: type[S]) -> S:
        """A channel's settings (its own ``HERALD_<NAME>_`` prefix), read once with these settings:
        ``get_settings.cache_clear()`` forgets both."""
        if model not in self._channels:
            self._channels[model] = model()
        return self._channels[model]  # type: ignore[no-any-return]

    def ensure_data_dir(self) -> None:
        from herald.safefiles import private_file

        if self.embedded or not self.dev_output:
            # owner only: the embedded SQLite files hold Web Push auth secrets and every queued event
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.database_url is None:
            private_file(self.data_dir / "herald.sqlite")
        if self.broker_url is None:
            private_file(self.data_dir / "broker.sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.ensure_data_dir()
    return settings
