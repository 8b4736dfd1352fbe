"""The run's PostgreSQL and Redis (workers.embedded), and the ways the storm restarts them.

- PostgreSQL runs durable (fsync on), as in production: an immediate shutdown is a crash
  of the server, not of the machine, and must lose no committed transaction.
- Redis starts without persistence. `restart_redis()` shuts it down without saving and
  starts it empty: every queued and unacknowledged message is lost, as with a Redis that
  has no persistence. `crash_redis_with_aof()` first turns AOF on (CONFIG SET appendonly
  yes, which writes the dataset to the AOF), lets it log writes for a moment, SIGKILLs
  the server and starts it again with `--appendonly yes` on the same directory: it comes
  back with what the AOF held, minus at most the last second (appendfsync everysec), and
  with acknowledgements as lost as deliveries. A later plain restart starts without AOF
  again, so both kinds stay honest whichever came before.
"""

import os
import signal
import time
from pathlib import Path

import psycopg
import redis

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis

#: Longest wait for a server to go away or for Redis to finish writing its AOF (seconds).
SERVER_TIMEOUT = 30


class HarnessError(Exception):
    """The harness could not do its part (a server that won't start...): exit 2."""


class Servers:
    def __init__(self, directory: Path, *, postgres_port: int, redis_port: int):
        self.postgres = EmbeddedPostgres(directory / "postgres", port=postgres_port,
                                         durable=True)
        self.redis_dir = directory / "redis"
        self.redis_port = redis_port
        self.redis = EmbeddedRedis(self.redis_dir, port=redis_port, appendonly=False)

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def start(self) -> None:
        try:
            self.postgres.start()
            self.redis.start()
        except (RuntimeError, OSError, psycopg.Error) as error:
            raise HarnessError(f"a server would not start: {error}") from error

    def ensure_running(self) -> None:
        """Both servers up (a fault may have been cut short): start what is down."""
        if not self.postgres.running():
            self.start_postgres()
        if not self.redis.running():
            self._start_redis(appendonly=self.redis.appendonly)

    def stop(self) -> None:
        for stop in (self.redis.stop, lambda: self.postgres.stop("immediate")):
            try:
                stop()
            except Exception:  # stop whatever else can be stopped
                pass

    # PostgreSQL ------------------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.postgres.directory / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash_postgres(self) -> None:
        """An immediate shutdown (SIGQUIT to the postmaster, what `pg_ctl stop -m immediate`
        sends, without pg_ctl's start-up delay): every backend dies mid-statement."""
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + SERVER_TIMEOUT
        while (self.postgres.directory / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                self.postgres.stop("immediate")
                break
            time.sleep(0.02)

    def start_postgres(self) -> None:
        try:
            self.postgres.start()
        except (RuntimeError, OSError, psycopg.Error) as error:
            raise HarnessError(f"PostgreSQL would not start again: {error}") from error

    # Redis -----------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=5)

    def _start_redis(self, *, appendonly: bool) -> None:
        self.redis = EmbeddedRedis(self.redis_dir, port=self.redis_port, appendonly=appendonly)
        try:
            self.redis.start()
        except (RuntimeError, OSError, redis.RedisError) as error:
            raise HarnessError(f"Redis would not start again: {error}") from error

    def restart_redis(self) -> None:
        """Shut down without saving, start without persistence: the queues start empty."""
        self.redis.stop()
        self._wait_redis_gone()
        self._start_redis(appendonly=False)

    def enable_aof(self) -> None:
        """Turn AOF on in the running server and wait until the AOF holds the dataset."""
        with self._client() as client:
            client.config_set("appendonly", "yes")
            deadline = time.monotonic() + SERVER_TIMEOUT
            while True:
                info = client.info("persistence")
                if (info["aof_enabled"] and not info["aof_rewrite_in_progress"]
                        and not info["aof_rewrite_scheduled"]):
                    return
                if time.monotonic() > deadline:
                    raise HarnessError("Redis did not finish writing its AOF")
                time.sleep(0.05)

    def crash_redis_with_aof(self) -> None:
        """SIGKILL the server (AOF on) and start it again from its AOF."""
        pid = int((self.redis_dir / "redis.pid").read_text().strip())
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._wait_redis_gone()
        self._start_redis(appendonly=True)

    def _wait_redis_gone(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while self.redis.running():
            if time.monotonic() > deadline:
                raise HarnessError("Redis did not stop")
            time.sleep(0.02)
