"""What a booted process holds (workers.engine.boot makes it): its settings, connection
pool, Redis client, run hooks and the way it sends runs to the workers. The actors reach it
at call time; nothing here exists until the process boots."""

from dataclasses import dataclass, field
from datetime import timedelta

from redis import Redis

from workers.engine import redis_client
from workers.engine.db import Pool
from workers.engine.hooks import Hooks
from workers.engine.runs import RunOptions, Send
from workers.errors import NotBooted
from workers.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    pool: Pool
    redis: Redis
    hooks: Hooks = field(default_factory=Hooks)
    send: Send | None = None

    def run_options(self) -> RunOptions:
        return run_options(self.settings, redis=self.redis, hooks=self.hooks, send=self.send)


def run_options(settings: Settings, *, redis: Redis | None = None, hooks: Hooks | None = None,
                send: Send | None = None) -> RunOptions:
    """The run contract's options under `settings`."""
    return RunOptions(timezone=settings.timezone, lock_timeout_ms=settings.db_lock_timeout_ms,
                      abandon_grace=timedelta(seconds=settings.abandon_grace_seconds),
                      settings=settings.model_dump(), redis=redis, send=send,
                      hooks=hooks or Hooks())


_current: Runtime | None = None


def configure(settings: Settings, *, hooks: Hooks | None = None,
              send: Send | None = None) -> Runtime:
    """Make this process's runtime (replacing one configured before)."""
    global _current
    if _current is not None:
        _current.pool.close()
    _current = Runtime(settings=settings, pool=Pool(settings.database_url),
                       redis=redis_client.client(settings.redis_url), hooks=hooks or Hooks(),
                       send=send)
    return _current


def current() -> Runtime:
    if _current is None:
        raise NotBooted("the workers runtime is not configured: this process has not booted"
                        " (workers.engine.boot)")
    return _current


def booted() -> bool:
    return _current is not None
