"""The settings reference: one line per environment variable, written into README.md.

``python -m devtools.settings_doc`` rewrites the table between the README's settings markers;
a test fails when a setting has no line here or the README's table is stale. The core settings come
first, then each registered channel's own (``HERALD_<NAME>_*``, :data:`CHANNEL_DOCS`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from herald import channels
from herald.settings import Settings

DOCS: dict[str, str] = {
    "database_url": "SQLAlchemy URL of herald's database, e.g. `postgresql+psycopg://user:pw@host/herald`; "
                    "unset: SQLite in the data directory",
    "database_connect_timeout_s": "seconds to wait for a PostgreSQL connection (libpq's `connect_timeout`) unless "
                                  "the URL names its own: a host that drops packets fails a command in this long "
                                  "instead of hanging for minutes",
    "broker_url": "Celery broker, e.g. `redis://host:6379/0` or `amqp://user:pw@host//`; unset: SQLite in the "
                  "data directory (kombu's SQLAlchemy transport)",
    "data_dir": "where the embedded default keeps its SQLite files, the dev channel output and beat's state",
    "log_format": "`text` (one line per entry, the ids appended) or `json` (one JSON object per line, the ids as "
                  "fields: README, Logs)",
    "environments": "the environments events may name, comma-separated",
    "max_event_bytes": "largest `data` an event may carry (JSON bytes)",
    "batch_size": "delivery targets per deliver task",
    "max_delivery_attempts": "safety bound on a delivery target's counted attempts inside its deadline (the deadline "
                             "is the rule); the only bound of targets written before migration 0006",
    "delivery_deadline_s": "JSON object: severity -> seconds a delivery target is retried (transient failures, its "
                           "host's circuit open) before it is dead-lettered; a severity not named keeps its default "
                           "(docs/channels.md, \"Retries: a deadline, not a count\")",
    "urgent_lane": "pages (severity critical or error, escalation steps) ride the `urgent` queue and pool through "
                   "every stage; `false` sends them down the bulk queues (only where no `urgent` pool runs)",
    "bulk_nice": "niceness (0-19) of a worker that consumes only bulk queues, and of its session's autogroup when it "
                 "leads a session (cli/workers.py): on a host shared with the urgent pool, a burst yields the CPU to "
                 "pages; 0: they share it evenly (in containers, CPU weight does this: docker-compose.yml)",
    "bulk_yield": "while a page is in flight (one of its deliver batches runs), bulk deliver batches and fan-out "
                  "chunks hold, at most 2 s each (herald/urgency.py; Redis broker only); for bulk and urgent pools "
                  "on separate hosts that share a provider, where niceness orders nothing",
    "max_task_attempts": "attempts per task (transient errors other than an outage) before it is dead-lettered",
    "outage_deadline_s": "a task that cannot reach the database or the broker is retried with backoff for this "
                         "long after its first failure (any number of attempts) before it is dead-lettered",
    "retry_base_s": "first retry delay; doubles per attempt, with full jitter",
    "retry_max_s": "longest retry delay (must stay below the visibility timeout)",
    "stall_deadline_s": "work pending or in flight longer than this is re-enqueued by the recovery sweep",
    "escalate_after_s": "an open, unacknowledged incident escalates one level this often",
    "escalation_max_level": "highest escalation level (0: no escalation)",
    "escalation_audit_interval_s": "period of the escalation auditor (an open incident's overdue chain step runs)",
    "escalation_audit_grace_s": "how late past its due time a chain step must be before the auditor runs it",
    "recover_interval_s": "period of the recovery sweep",
    "heartbeat_interval_s": "how often each worker process records its heartbeat (`herald status` lists pools)",
    "heartbeat_timeout_s": "a worker with no heartbeat this recent is not live; a pool with no live worker is down",
    "outbox_relay_interval_s": "period of the outbox sweep",
    "outbox_grace_s": "an outbox row not ingested after this long is published again",
    "visibility_timeout_s": "Redis: an unacknowledged message returns to its queue after this long",
    "broker_key_prefix": "Redis: prefix of every key (several herald setups on one Redis)",
    "publish_timeout_s": "socket timeout talking to the broker when publishing",
    "publish_max_retries": "connection retries before `publish` raises BrokerUnavailable",
    "publish_direct_record": "direct mode with `HERALD_DATABASE_URL`: record each event in the outbox before "
                             "publishing, so the outbox sweep republishes what the broker loses (README: Durability)",
    "webhook_retry_horizon_s": "a write-back webhook not delivered this long after it was queued is `failed` "
                               "(`herald webhooks replay --failed`)",
    "webhook_retry_base_s": "first retry of a write-back webhook after about this long, doubling each time (jitter)",
    "webhook_retry_max_s": "longest wait between two attempts at a write-back webhook",
    "webhook_timeout_s": "one request to a webhook receiver, connect included",
    "webhook_tick_interval_s": "period of the writeback sweep (due webhook messages)",
    "webhook_batch_size": "webhook messages claimed per round (one per endpoint and subject at a time)",
    "webhook_allow_loopback": "accept webhook URLs on loopback, http or https (the local receiver only); private, "
                              "link-local and other non-global addresses are always refused",
    "api_host": "address `herald api` listens on (loopback unless told otherwise; `0.0.0.0` inside a container "
                "whose port is published on localhost)",
    "api_port": "port `herald api` listens on",
    "metrics_dir": "where every herald process of this host writes its Prometheus metric files (prometheus_client's "
                   "multiprocess mode; one directory per host, emptied at boot); unset: `PROMETHEUS_MULTIPROC_DIR` "
                   "if set, else `<data_dir>/metrics`",
    "dev_output": "where the dev backend writes: a file, or `-` for stdout; empty: `<data_dir>/dev-channel.jsonl`",
    "dev_delay_ms": "dev backend: pretend each send takes this long",
    "channel_timeout_s": "one request to a provider, connect included",
    "channel_circuit_failures": "consecutive 'provider down' answers that open a provider's circuit",
    "channel_circuit_window_s": "the failures that open a circuit are counted while each comes within this long of "
                                "the one before; a failure after a longer quiet spell starts the count again",
    "channel_circuit_open_s": "first open period of a circuit; doubles after each failed probe",
    "channel_circuit_max_open_s": "longest open period of a circuit; also the longest wait before a host that gave "
                                  "no answer is tried again",
    "channel_auth_alert_interval_s": "at most one auth-error operations event per channel and interval",
    "credential_sweep_interval_s": "period of the credential expiry sweep",
    "credential_thresholds_days": "JSON object: environment -> days before expiry that notify",
    "credential_default_thresholds_days": "days before expiry that notify, for other environments",
    "credential_pkcs12_password": "password of PKCS#12 files (never stored)",
    "backlog_interval_s": "period of the backlog and SLA scan",
    "backlog_depth_threshold": "messages waiting (and unacknowledged) in one queue that raise `ops.queue_backlog`",
    "backlog_age_threshold_s": "age of the oldest waiting message that raises `ops.processing_delayed`",
    "backlog_clear_after_s": "a condition clears after staying back under its threshold this long",
    "backlog_rabbitmq_peek": "RabbitMQ: read the head message's publish stamp (get and requeue)",
    "sla_default_s": "event to first delivery, per flow unless `HERALD_SLA_S` names it",
    "sla_s": "JSON object: flow -> SLA seconds",
    "sla_lookback_s": "how far back the SLA scan looks",
    "ops_environment": "environment of the `ops.*` events herald raises itself",
    "due_tick_interval_s": "period of the timed-work tick (escalations)",
    "due_batch_size": "timed-work rows claimed per tick",
    "purge_interval_s": "period of the retention purge",
    "retain_events_days": "keep events (with notifications and deliveries) this long",
    "retain_attempts_days": "keep delivery attempts this long",
    "retain_audit_days": "keep audit rows this long",
    "retain_sweep_days": "keep outbox rows, replayed dead letters and finished timed work this long",
    "oidc_issuer": "OIDC sign-in: the issuer (`iss`) a person's bearer token must name; unset: OIDC sign-in is off",
    "oidc_audience": "OIDC sign-in: the audience (`aud`) a token must name, herald's client id at the provider",
    "oidc_jwks_url": "OIDC sign-in: the provider's JWKS URL (its signing keys, fetched and cached)",
    "signin_link_ttl_s": "a one-time sign-in link from `herald people link` expires after this long",
    "session_ttl_s": "a session token from a sign-in link lasts this long",
    "public_url": "base URL of `herald api` as phones and browsers reach it (https in production): action "
                  "calls go to `<url>/v1/actions`, a Web Push notification opens `<url>/app/`",
    "action_keys": "action-token keys, `kid:secret,kid2:secret2` (secrets of 32+ characters): the first signs, "
                   "the others only verify (rotation, docs/actions.md)",
    "action_keys_file": "a file of action-token keys, one `kid secret` per line, the first signs; read again when "
                        "it changes. Neither set: generated in the data directory on the embedded default, "
                        "required with a database server",
    "action_token_ttl_s": "an incident notification's action tokens expire this long after it was created "
                          "(an approval's expire with the approval)",
}

# Each channel's own settings (herald/channels/<name>/, env prefix HERALD_<NAME>_), by channel and field.
CHANNEL_DOCS: dict[str, dict[str, str]] = {
    "fcm": {
        "backend": "`dev` (JSON lines) or `provider` (FCM HTTP v1); `HERALD_BACKEND_FCM` also works",
        "max_in_flight": "FCM requests in flight, across every process (Redis)",
        "rate_per_s": "FCM requests per second, across every process (default project quota: 600k/min)",
        "url": "base URL of the FCM v1 API",
        "credentials_file": "service-account JSON for every app",
        "app_credentials": "JSON object: app -> service-account file (an app in neither: Application Default "
                           "Credentials, e.g. workload identity or the metadata server)",
        "project_id": "the Firebase project; empty: the credential's own (a service-account file names it)",
        "page_channel": "Android notification channel of pages (critical, error); the app creates it with high "
                        "importance (docs/actions.md)",
    },
    "apns": {
        "backend": "`dev` (JSON lines) or `provider` (APNs HTTP/2); `HERALD_BACKEND_APNS` also works",
        "max_in_flight": "APNs requests in flight, across every process",
        "rate_per_s": "APNs requests per second (0: no limit)",
        "key_file": "APNs token-auth signing key (.p8)",
        "key_id": "key id of the .p8 key",
        "team_id": "Apple developer team id",
        "topics": "JSON object: app -> apns-topic (default: the app id)",
        "production_url": "APNs production host",
        "sandbox_url": "APNs sandbox host (a device says which it uses)",
        "ca_file": "an extra CA to trust for APNs (the local fake's); unset: system CAs",
        "jwt_refresh_s": "APNs provider token lifetime (Apple: 20 to 60 minutes)",
        "connections": "HTTP/2 connections per APNs host and process",
        "critical_alerts": "true only when the app holds Apple's Critical Alerts entitlement: a critical page is "
                           "then interruption-level critical with the critical sound (else time-sensitive)",
    },
    "webpush": {
        "backend": "`dev` (JSON lines) or `provider` (Web Push, RFC 8030/8291/8292); `HERALD_BACKEND_WEBPUSH` "
                   "also works",
        "max_in_flight": "Web Push requests in flight, across every process",
        "rate_per_s": "Web Push requests per second (0: no limit)",
        "vapid_key_file": "VAPID private key, PEM (`herald vapid generate`)",
        "vapid_subject": "VAPID `sub`: a mailto: or https: URL",
        "allow_loopback": "accept Web Push endpoints on loopback addresses, http or https (local fakes only); "
                          "private, link-local and other non-global addresses are always refused",
    },
    "email": {
        "backend": "`dev` (JSON lines) or `provider` (SMTP); `HERALD_BACKEND_EMAIL` also works",
        "max_in_flight": "SMTP sessions at once (one per e-mail), across every process",
        "rate_per_s": "e-mails per second (0: no limit)",
        "smtp_host": "the SMTP server herald submits e-mail to",
        "smtp_port": "its port (587 for STARTTLS, 465 for implicit TLS, 25 for a local relay)",
        "smtp_tls": "`starttls` (upgrade after EHLO), `tls` (implicit TLS) or `none` (a relay on this machine)",
        "smtp_username": "SMTP AUTH user; empty: no AUTH (with `SMTP_PASSWORD_FILE`)",
        "smtp_password_file": "a file whose first line is the SMTP password (never the password itself in the "
                              "environment)",
        "smtp_ca_file": "an extra CA to trust for the SMTP server; unset: system CAs",
        "smtp_timeout_s": "each SMTP command, connect included; unset: `HERALD_CHANNEL_TIMEOUT_S`",
        "from_address": "the From address of herald's e-mail",
    },
}

BEGIN, END = "<!-- settings-table -->", "<!-- /settings-table -->"


def _default(model: type[BaseSettings], name: str) -> str:
    field = model.model_fields[name]
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value) if value != "" else "empty"


def table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name in Settings.model_fields:
        lines.append(f"| `HERALD_{name.upper()}` | `{_default(Settings, name)}` | {DOCS.get(name, 'UNDOCUMENTED')} |")
    for spec in channels.specs():
        docs = CHANNEL_DOCS.get(spec.name, {})
        for name in spec.settings.model_fields:
            lines.append(f"| `HERALD_{spec.name.upper()}_{name.upper()}` | `{_default(spec.settings, name)}` "
                         f"| {docs.get(name, 'UNDOCUMENTED')} |")
    return "\n".join(lines)


def render(readme: str) -> str:
    return re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", f"{BEGIN}\n{table()}\n{END}", readme, flags=re.S)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text()))
