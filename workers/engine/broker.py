"""The Dramatiq broker: Redis, with the middleware every actor relies on, and the one way
a run is sent to the workers.

Creating it connects to nothing. Its middleware is also where a Dramatiq worker process
boots (ProcessBoot, on Dramatiq's after_process_boot): the settings, logging, Sentry and
the runtime are set up there, in that process, never on import.
"""

import logging
from datetime import UTC, datetime

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware
from periodiq import PeriodiqMiddleware
from sentry_sdk.integrations.dramatiq import SentryMiddleware

from workers.engine import runtime
from workers.settings import BrokerSettings

log = logging.getLogger(__name__)

#: Dead-lettered messages are kept this long for inspection (milliseconds): 7 days.
DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000


def send_run(broker: dramatiq.Broker, job: str, slot: datetime) -> dramatiq.Message:
    """Enqueue a run of `job` for `slot`, through the broker like any other run."""
    return broker.get_actor(job).send_with_options(kwargs={"scheduled_for": slot.isoformat()})


class ProcessBoot(Middleware):
    """A Dramatiq worker process boots: set it up as one of ours."""

    def after_process_boot(self, broker):
        from workers.engine.boot import boot

        boot("worker", broker=broker)


class CatchUpOnBoot(Middleware):
    """When a worker boots, ask for the missed-run catch-up at once rather than at the
    next scheduled minute (CATCH_UP_ON_BOOT)."""

    def after_worker_boot(self, broker, worker):
        if (runtime.booted() and runtime.current().settings.catch_up_on_boot
                and "catch_up" in broker.actors):
            send_run(broker, "catch_up", datetime.now(UTC))


class Liveness(Middleware):
    """A worker process beats while it works (workers.engine.liveness), and removes its
    heartbeat when it stops cleanly."""

    def __init__(self):
        self.beat = None

    def after_worker_boot(self, broker, worker):
        if not runtime.booted():
            return
        from workers.engine.boot import heartbeat

        queues = worker.consumer_whitelist or {
            queue for queue in broker.get_declared_queues() if not queue.endswith(".DQ")}
        self.beat = heartbeat(runtime.current(), "worker", queues=tuple(queues),
                              threads=worker.worker_threads)

    def before_worker_shutdown(self, broker, worker):
        if self.beat is not None:
            self.beat.stop()
            self.beat = None


def create_broker(settings: BrokerSettings) -> RedisBroker:
    """The broker, made Dramatiq's global one unless the process has one already (a host
    that imports us keeps its own). Middleware order matters: periodiq's must exist before
    any actor is declared. Sentry's does nothing until Sentry is initialised with its
    Dramatiq integration, which our processes do when they boot; it is added here because
    that integration only adds it to brokers created after it."""
    broker = RedisBroker(url=settings.redis_url,
                         heartbeat_timeout=settings.dramatiq_heartbeat_timeout_ms,
                         maintenance_chance=settings.dramatiq_maintenance_chance,
                         dead_message_ttl=DEAD_MESSAGE_TTL_MS)
    if not any(isinstance(m, SentryMiddleware) for m in broker.middleware):
        broker.add_middleware(SentryMiddleware(), before=type(broker.middleware[0]))
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(PeriodiqMiddleware(skip_delay=settings.periodiq_skip_delay))
    broker.add_middleware(ProcessBoot())
    broker.add_middleware(CatchUpOnBoot())
    broker.add_middleware(Liveness())
    if settings.dramatiq_prometheus:  # its module makes its directory when imported
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    if dramatiq.broker.global_broker is None:
        dramatiq.set_broker(broker)
    return broker
