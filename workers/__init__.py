"""saathii-workers: Saathii's background-work engine.

Importing this package creates the Dramatiq broker and declares one actor per job of the
table (workers.schedule): that is what `dramatiq workers` and `periodiq workers` import,
with nothing but environment variables. It does nothing else: it reads only the broker's
settings (REDIS_URL, BILLING_SHARDS, ...: workers.settings.BrokerSettings), and configures
no logging, no Sentry, no connection. A process of ours sets those up when it boots
(workers.engine.boot); a host process that imports us keeps its own.
"""

from workers import schedule
from workers.actors import declare_actors
from workers.engine.broker import create_broker
from workers.settings import BrokerSettings, load_settings

_settings = load_settings(BrokerSettings)
schedule.use_billing_shards(_settings.billing_shards)
broker = create_broker(_settings)
declare_actors(schedule.JOBS.values(), broker)
