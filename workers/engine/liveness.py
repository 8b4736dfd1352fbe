"""Liveness: each of our long-running processes (a `dramatiq workers` worker process, a
`periodiq workers` scheduler) beats into job_processes every PROCESS_BEAT_SECONDS, from a
thread of its own: who it is, which queues it serves with how many threads, and the runs
it is executing (it hears of them through the run hooks). A clean exit removes its row; a
row whose beat is older than PROCESS_STALE_SECONDS is a process that died (health names
it), and after FORGET_AFTER it is forgotten.

A beat that fails (the database restarting) is logged and tried again at the next one: a
heartbeat never stops its process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata

import psycopg
from psycopg.types.json import Jsonb

from workers.engine.db import Pool, queries
from workers.engine.hooks import Claimed, Finished, Subscriber
from workers.errors import WorkersError

log = logging.getLogger(__name__)

#: What a process may be in job_processes.
KINDS = ("worker", "scheduler")
#: A dead process's row is kept this long after its last beat, then deleted.
FORGET_AFTER = timedelta(hours=1)


def version() -> str:
    try:
        return metadata.version("saathii-workers")
    except metadata.PackageNotFoundError:  # a source checkout not installed
        return "unknown"


@dataclass(frozen=True)
class Running:
    job: str
    scheduled_for: datetime
    attempt: int
    since: datetime

    def as_json(self) -> dict:
        return {"job": self.job, "scheduled_for": self.scheduled_for.isoformat(),
                "attempt": self.attempt, "since": self.since.isoformat()}


class Heartbeat(Subscriber):
    """The beat of this process. `start()` beats at once and then every `every`; `stop()`
    ends the thread and removes the row (a clean exit)."""

    def __init__(self, pool: Pool, kind: str, *, every: timedelta,
                 queues: tuple[str, ...] = (), threads: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown process kind {kind!r}; known: {', '.join(KINDS)}")
        self.pool, self.kind, self.every = pool, kind, every
        self.queues, self.threads = tuple(sorted(queues)), threads
        self.process_id = uuid.uuid4()
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started_at = datetime.now(UTC)
        self._running: dict[tuple[str, datetime], Running] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # The run hooks: what the process is executing.
    def run_claimed(self, event: Claimed) -> None:
        with self._lock:
            self._running[event.job.name, event.scheduled_for] = Running(
                event.job.name, event.scheduled_for, event.attempt, datetime.now(UTC))

    def run_finished(self, event: Finished) -> None:
        with self._lock:
            self._running.pop((event.job.name, event.scheduled_for), None)

    def running(self) -> list[Running]:
        with self._lock:
            return sorted(self._running.values(), key=lambda run: run.since)

    def beat(self) -> None:
        """One beat (and the forgetting of the long dead); raises what the database says."""
        sql = queries("liveness.sql")
        with self.pool.connection() as conn:
            conn.execute(sql["beat"], {
                "process_id": self.process_id, "kind": self.kind, "host": self.host,
                "pid": self.pid, "version": version(), "started_at": self.started_at,
                "queues": list(self.queues), "threads": self.threads,
                "running": Jsonb([run.as_json() for run in self.running()]),
            })
            conn.execute(sql["forget_the_long_dead"], {"forget_after": FORGET_AFTER})

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True,
                                        name=f"saathii-heartbeat-{self.kind}")
        self._thread.start()
        return self

    def _beat_until_stopped(self) -> None:
        while not self._stopped.is_set():
            try:
                self.beat()
            except (psycopg.Error, WorkersError) as error:
                log.warning("heartbeat of %s %s:%s not recorded: %s", self.kind, self.host,
                            self.pid, str(error).splitlines()[0] if str(error) else error)
            self._stopped.wait(self.every.total_seconds())

    def stop(self) -> None:
        """Stop beating and remove the row: this process exits cleanly."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every.total_seconds() + 5)
        try:
            with self.pool.connection() as conn:
                conn.execute(queries("liveness.sql")["leave"], {"process_id": self.process_id})
        except (psycopg.Error, WorkersError) as error:
            log.warning("%s %s:%s left without removing its heartbeat (it goes stale): %s",
                        self.kind, self.host, self.pid, error)


def processes(conn: psycopg.Connection, stale_after: timedelta) -> list[dict]:
    """Every process of job_processes, live (`alive`) or stale, with its beat's age."""
    return conn.execute(queries("liveness.sql")["processes"],
                        {"stale_after": stale_after}).fetchall()
