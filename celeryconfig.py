"""Celery settings for herald, every one read from the environment through herald.settings.

``celery -A herald.app worker -Q resolve`` and ``herald worker --pool resolve`` both load
this module; the README lists the environment variables.
"""

from kombu import Exchange, Queue

from herald import broker
from herald.lanes import QUEUES, RETRY_QUEUE, task_route
from herald.settings import get_settings

_settings = get_settings()

broker_url = _settings.effective_broker_url
broker_connection_retry_on_startup = True
broker_transport_options: dict[str, object]
_amqp = broker_url.startswith(("amqp", "pyamqp"))
if broker_url.startswith("sqla+"):
    # kombu's SQLAlchemy transport hands its options to create_engine: only engine arguments here.
    # Several processes share the SQLite file: wait for its lock rather than fail.
    broker_transport_options = {"connect_args": {"timeout": 30}}
    from kombu.transport import sqlalchemy as _sqla

    # It polls its tables (default once a second); a tenth of that keeps the demo snappy.
    _sqla.Transport.polling_interval = 0.1
elif _amqp:
    # Publisher confirms: a publish returns only once RabbitMQ has the message (in a quorum queue:
    # once a majority of its replicas wrote it to disk).
    broker_transport_options = {"confirm_publish": True}
    # A retry's delayed delivery must not carry the x-death headers of the message it replaces (herald/broker.py).
    broker.install_amqp()
else:
    # kombu's Redis transport with a guard against the restore_unacked crash (herald/broker.py says why).
    broker.install()
    broker_transport_options = {
        # Redis: an unacknowledged message returns to its queue after this long. It must stay
        # above every countdown herald uses (retry_max_s), or a waiting retry would run twice.
        "visibility_timeout": _settings.visibility_timeout_s,
        # Never wait on a dead socket for ever.
        "socket_timeout": _settings.publish_timeout_s,
        "socket_connect_timeout": _settings.publish_timeout_s,
    }
    if _settings.broker_key_prefix:
        broker_transport_options["global_keyprefix"] = _settings.broker_key_prefix
if _settings.visibility_timeout_s <= _settings.retry_max_s:
    raise ValueError("HERALD_VISIBILITY_TIMEOUT_S must be greater than HERALD_RETRY_MAX_S")

if _amqp:
    # RabbitMQ: durable quorum queues, replicated and fsynced before the confirm
    # (https://www.rabbitmq.com/docs/quorum-queues). They have no global QoS (Celery detects quorum queues and
    # uses per-consumer prefetch: worker_detect_quorum_queues) and no priorities (herald uses none). Countdowns
    # (retries) go through Celery's native delayed delivery, which needs topic exchanges, not direct ones
    # (https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html#quorum-queues).
    task_queues = [Queue(name, Exchange(name, type="topic", durable=True), routing_key=name, durable=True,
                         queue_arguments={"x-queue-type": "quorum"}) for name in QUEUES]
    worker_detect_quorum_queues = True
else:
    task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
task_routes = (task_route,)  # TASK_ROUTES, and the ops lane chosen per send (herald/lanes.py)
task_default_queue = RETRY_QUEUE  # never used by herald's own tasks: the routing test proves it
task_create_missing_queues = False

task_serializer = "json"
accept_content = ["json"]
result_backend = None
task_ignore_result = True

# Reliability: a task is acknowledged only after it ran; a killed worker's task comes back.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_consumer = "herald.consumer:DeadLetteringConsumer"
worker_cancel_long_running_tasks_on_connection_loss = True

# Flower and `celery events` see tasks as they are sent and run.
worker_send_task_events = True
task_send_sent_event = True

timezone = "UTC"
enable_utc = True
imports = ("workers.ingest", "workers.enrich", "workers.resolve", "workers.deliver.delivery",
           "workers.writeback", "schedules.periodic")

# The schedule table, by name: only a process that runs beat (`herald beat`, `herald worker --beat`,
# `celery -A herald.app beat`) loads it, so publishing never imports the schedules package.
beat_scheduler = "schedules.beat:Scheduler"
# Beat answers `celery inspect ping -d celerybeat@HOST` while its scheduler ticks (and falls silent once it stops
# ticking): compose's beat healthcheck. The embedded SQLite transport has no broadcast to answer on.
beat_enable_remote_control = not broker_url.startswith("sqla+")
