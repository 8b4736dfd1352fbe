"""The environment every process of a chaos run reads: the harness's servers and the
settings the storm needs.

Importing the `workers` package reads its settings from the environment once, so the
harness sets this environment on itself before it imports anything from `workers` (which
is also why it picks its ports here rather than with workers.embedded.free_port).
"""

import os
import socket
from pathlib import Path

#: The repository: children run `python -m chaos.*` with it on their path.
ROOT = Path(__file__).resolve().parents[1]

TIMEZONE = "Asia/Kolkata"
#: A SIGKILLed worker's messages go back to their queue once its heartbeat is this old (ms).
DRAMATIQ_HEARTBEAT_TIMEOUT_MS = 5_000
#: Of a million broker commands, how many also look for dead workers' messages: about one
#: a second with this run's traffic, so redelivery follows the heartbeat timeout closely.
DRAMATIQ_MAINTENANCE_CHANCE = 50_000
#: periodiq's middleware drops scheduled messages older than this, by the wall clock
#: (seconds). Logical time runs ahead of the wall clock, so only the stale-message fault
#: that means to be dropped sends anything older.
SKIP_DELAY = 3_600
#: A party unseen this long (logical seconds) went silent; the traffic keeps last_seen on
#: logical time too.
HEARTBEAT_TIMEOUT_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(*, database_url: str, redis_url: str, shards: int = 1) -> dict[str, str]:
    """os.environ plus what the run's processes need; overrides whatever the caller had
    (a test session's DATABASE_URL, a developer's SENTRY_DSN). Billing runs in `shards`
    shards (BILLING_SHARDS)."""
    env = {key: value for key, value in os.environ.items() if key not in ("LOG_DIR",)}
    python_path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "APP_TIMEZONE": TIMEZONE,
        "SENTRY_DSN": "",
        "LOG_LEVEL": "INFO",
        "PERIODIQ_SKIP_DELAY": str(SKIP_DELAY),
        "DRAMATIQ_HEARTBEAT_TIMEOUT_MS": str(DRAMATIQ_HEARTBEAT_TIMEOUT_MS),
        "DRAMATIQ_MAINTENANCE_CHANCE": str(DRAMATIQ_MAINTENANCE_CHANCE),
        "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT_SECONDS),
        "CATCH_UP_ON_BOOT": "true",
        "BILLING_SHARDS": str(shards),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(python_path),
    })
    return env
