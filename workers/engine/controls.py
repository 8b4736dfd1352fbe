"""An operator's controls of a job, kept in job_settings: pause and resume, and overrides
of its parameters, always validated against the job's model before they are written (the
run contract validates them again at every run: job_settings can be written by hand)."""

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from workers.engine.db import queries
from workers.engine.jobs import Job
from workers.errors import InvalidParams


def set_paused(conn: psycopg.Connection, job: Job, paused: bool) -> bool:
    """Pause or resume `job`; whether it was paused before."""
    row = conn.execute(queries("runs.sql")["set_paused"],
                       {"job": job.name, "paused": paused}).fetchone()
    return bool(row["was_paused"])


def overrides(conn: psycopg.Connection, job: Job) -> dict[str, Any]:
    row = conn.execute(queries("runs.sql")["job_settings"], {"job": job.name}).fetchone()
    return dict(row["overrides"]) if row else {}


def change_overrides(conn: psycopg.Connection, job: Job, settings: Mapping[str, Any], *,
                     values: Mapping[str, Any] | None = None,
                     removed: Iterable[str] = ()) -> dict[str, Any]:
    """Set `values` and remove the `removed` overrides of `job`'s parameters, in one
    transaction; the overrides now. InvalidParams, and nothing written, when the job's
    model under `settings` refuses the result or a removed name is not a parameter."""
    removed = set(removed)
    unknown = removed - set(job.params_model().model_fields)
    if unknown:
        raise InvalidParams(f"{job.name}: unknown parameter {sorted(unknown)[0]!r}")
    sql = queries("runs.sql")
    with conn.transaction():
        conn.execute(sql["ensure_job_settings"], {"job": job.name})
        current = conn.execute(sql["lock_overrides"], {"job": job.name}).fetchone()
        changed = {name: value for name, value in {**current["overrides"], **(values or {})}
                   .items() if name not in removed}
        job.parameters(settings, changed)
        conn.execute(sql["write_overrides"], {"job": job.name, "overrides": Jsonb(changed)})
    return changed
