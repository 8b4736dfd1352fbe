"""The bench's servers and data: a fresh embedded PostgreSQL (and Redis), one database
per measured population, filled by the set-based statements of bench/population.sql."""

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis
from workers.engine.schema import apply_schema

#: Server settings of the bench cluster: sized like a production server for a million
#: calls (the defaults' 128 MB of shared buffers and 1 GB of WAL between checkpoints
#: would measure the disk, not the SQL). The floor and the tick run on the same settings.
POSTGRES_SETTINGS = {
    "shared_buffers": "2GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "1h",
    "maintenance_work_mem": "512MB",
}
TIMEZONE = "Asia/Kolkata"
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def population_statements() -> list[tuple[str, str]]:
    text = (Path(__file__).parent / "population.sql").read_text()
    parts = _NAME_LINE.split(text)
    return list(zip(parts[1::2], parts[2::2], strict=True))


@dataclass
class Servers:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis | None = None

    @classmethod
    def start(cls, directory: Path, *, with_redis: bool = False) -> "Servers":
        postgres = EmbeddedPostgres(directory / "postgres", settings=POSTGRES_SETTINGS)
        postgres.start()
        redis = None
        if with_redis:
            redis = EmbeddedRedis(directory / "redis")
            redis.start()
        return cls(postgres, redis)

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        self.postgres.stop()

    def database_url(self, name: str) -> str:
        return self.postgres.socket_url(name)

    def fresh_database(self, name: str) -> str:
        """An empty database called `name` with the workers' schema; its URL."""
        with psycopg.connect(self.postgres.socket_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.database_url(name)
        with connect(url) as conn:
            apply_schema(conn)
        return url

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.postgres.socket_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def populate(conn: psycopg.Connection, *, calls: int, now: datetime,
             broke: float = 0.0) -> float:
    """Fill an empty database with `calls` ongoing calls owing minute 2 at `now` (see
    population.sql); `broke` of the callers have no coins left. Returns the seconds it
    took. Foreign keys are not checked while loading (the data is valid by construction):
    loading a million calls is not what the bench measures."""
    started = time.perf_counter()
    params = {"calls": calls, "now": now, "broke": broke, "timezone": TIMEZONE}
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for _name, sql in population_statements():
            conn.execute(sql, params)
    conn.execute("VACUUM (ANALYZE, FREEZE)")
    conn.execute("CHECKPOINT")
    return time.perf_counter() - started
