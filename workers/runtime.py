"""The process's runtime: what the entry point (the `workers` package import) builds once
from the settings, and the actors reach at call time."""

from dataclasses import dataclass
from datetime import timedelta

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.db import Pool
from workers.runs import RunOptions
from workers.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    pool: Pool
    redis: Redis

    @property
    def run_options(self) -> RunOptions:
        return run_options(self.settings, self.redis)


def redis_client(settings: Settings) -> Redis:
    """A client for the jobs' own Redis use (events, caches); it connects on first use."""
    return Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT,
                          socket_connect_timeout=REDIS_TIMEOUT,
                          retry=Retry(NoBackoff(), REDIS_RETRIES))


def run_options(settings: Settings, redis: Redis | None) -> RunOptions:
    return RunOptions(timezone=settings.timezone, lock_timeout_ms=settings.db_lock_timeout_ms,
                      abandon_grace=timedelta(seconds=settings.abandon_grace_seconds),
                      params=settings.job_params(), redis=redis)


#: How long a job's Redis call may take before it counts as failed (seconds).
REDIS_TIMEOUT = 5
#: Retries of a failed Redis call, at once: redis-py's default backs off for seconds, which
#: a dead Redis would add to every run (a failed after-commit step is repaired later anyway).
REDIS_RETRIES = 1

_current: Runtime | None = None


def configure(settings: Settings) -> Runtime:
    global _current
    if _current is not None:
        _current.pool.close()
    _current = Runtime(settings=settings, pool=Pool(settings.database_url),
                       redis=redis_client(settings))
    return _current


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("workers runtime not configured: import the workers package first")
    return _current
