"""The process's runtime: what the entry point (the `workers` package import) builds once
from the settings, and the actors reach at call time."""

from dataclasses import dataclass
from datetime import timedelta

from workers.db import Pool
from workers.runs import RunOptions
from workers.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    pool: Pool

    @property
    def run_options(self) -> RunOptions:
        return run_options(self.settings)


def run_options(settings: Settings) -> RunOptions:
    return RunOptions(timezone=settings.timezone, lock_timeout_ms=settings.db_lock_timeout_ms,
                      abandon_grace=timedelta(seconds=settings.abandon_grace_seconds))


_current: Runtime | None = None


def configure(settings: Settings) -> Runtime:
    global _current
    if _current is not None:
        _current.pool.close()
    _current = Runtime(settings=settings, pool=Pool(settings.database_url))
    return _current


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("workers runtime not configured: import the workers package first")
    return _current
