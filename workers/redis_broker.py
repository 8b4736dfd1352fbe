"""The Dramatiq broker: Redis, with the middleware every actor relies on."""

import logging
from datetime import UTC, datetime

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware
from periodiq import PeriodiqMiddleware

from workers.alerts import init_sentry
from workers.settings import Settings

log = logging.getLogger(__name__)

#: Dead-lettered messages are kept this long for inspection (milliseconds): 7 days.
DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000


class CatchUpOnBoot(Middleware):
    """When a worker process boots, ask for the missed-run catch-up at once rather than
    at the next scheduled minute."""

    def after_worker_boot(self, broker, worker):
        if "catch_up" in broker.actors:
            now = datetime.now(UTC).isoformat()
            broker.get_actor("catch_up").send_with_options(kwargs={"scheduled_for": now})


def create_broker(settings: Settings) -> RedisBroker:
    """Sentry first (it patches the broker class), then the broker, made the global one.
    Middleware order matters: periodiq's must exist before any actor is declared."""
    init_sentry(settings)
    broker = RedisBroker(url=settings.redis_url,
                         heartbeat_timeout=settings.dramatiq_heartbeat_timeout_ms,
                         maintenance_chance=settings.dramatiq_maintenance_chance,
                         dead_message_ttl=DEAD_MESSAGE_TTL_MS)
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(PeriodiqMiddleware(skip_delay=settings.periodiq_skip_delay))
    if settings.catch_up_on_boot:
        broker.add_middleware(CatchUpOnBoot())
    dramatiq.set_broker(broker)
    return broker
