"""saathii-workers: Saathii's background-work engine.

Importing this package is the entry point of every process: it reads the settings, sets
up logging, Sentry and the Redis broker, and declares the actors. That is what lets
`dramatiq workers` and `periodiq workers` run with environment variables only.
"""

import pendulum

from workers import runtime, schedule
from workers.logs import configure_logging
from workers.redis_broker import create_broker
from workers.settings import load_settings

settings = load_settings()
configure_logging(settings)
schedule.use_billing_shards(settings.billing_shards)
# periodiq reads cron specs on pendulum's local clock: make that APP_TIMEZONE.
pendulum.set_local_timezone(pendulum.timezone(settings.app_timezone))
runtime.configure(settings)
broker = create_broker(settings)

from workers.actors import badges, billing, calls, maintenance, presence  # noqa: E402, F401
