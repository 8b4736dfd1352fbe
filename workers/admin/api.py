"""The admin's JSON API, under /api: the jobs of the table, their runs, health, processes,
queues and the audit; pause, resume and trigger. Every GET needs a credential of either
role, every POST the admin role (workers.admin.guards). Lists are paginated by cursor:
`{"items": [...], "next_cursor": "..." or null}`; pass `cursor` back for the next page.
Times are in APP_TIMEZONE with their offset."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from psycopg import sql
from pydantic import BaseModel, ConfigDict, field_validator

import workers
from workers.admin import context
from workers.admin.access import Identity
from workers.admin.context import AdminContext
from workers.admin.guards import Act, acting, reader
from workers.engine import controls, cron, liveness, queues
from workers.engine import letters as dead
from workers.engine.broker import send_run
from workers.engine.db import queries
from workers.engine.jobs import Job
from workers.engine.runs import slot_of
from workers.errors import UsageError
from workers.observability import health
from workers.observability.overdue import job_states
from workers.schedule import JOBS

router = APIRouter(prefix="/api", tags=["admin"])

#: What the routes get: the caller's identity (any role), this process's context.
Reader = Annotated[Identity, Depends(reader)]
Ctx = Annotated[AdminContext, Depends(context.current)]

#: Page sizes of the lists.
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
RunStatus = Literal["running", "succeeded", "failed", "skipped", "abandoned"]


def _job(name: str) -> Job:
    if name not in JOBS:
        raise HTTPException(404, f"unknown job {name!r}; jobs: {', '.join(JOBS)}")
    return JOBS[name]


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise HTTPException(422, f"not a cursor of this list: {cursor!r}")
    return int(cursor)


def _page(rows: list[dict], limit: int, key: str) -> dict:
    """A page of `limit` rows (one more was read, to know whether another follows)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": str(rows[-1][key]) if more else None}


def _localized(ctx: AdminContext, row: dict) -> dict:
    return {key: ctx.local(value) if isinstance(value, datetime) else value
            for key, value in row.items()}


# jobs -------------------------------------------------------------------------------------


def job_rows(ctx: AdminContext, jobs: list[Job], now: datetime) -> list[dict]:
    """Each job as the table and its latest run say it is."""
    with ctx.pool.connection() as conn:
        last = {row["job"]: row for row in conn.execute(
            queries("admin.sql")["last_runs"], {"jobs": [job.name for job in jobs]})}
        states = job_states(conn, jobs, now, ctx.settings.timezone)
    defaults = ctx.settings.model_dump()
    rows = []
    for job in jobs:
        row, state = last[job.name], states[job.name]
        overrides = dict(row["overrides"])
        try:
            params = job.parameters(defaults, overrides).model_dump(mode="json")
        except UsageError as error:  # an override written by hand that no longer validates
            params = {"error": str(error)}
        rows.append({
            "name": job.name, "description": job.description, "cron": job.cron,
            "timezone": ctx.settings.app_timezone, "queue": job.queue,
            "time_limit_s": job.time_limit.total_seconds(),
            "grace_s": job.grace.total_seconds(),
            "next_run": ctx.local(cron.next_after(job.cron, ctx.settings.timezone, now)),
            "state": str(state.state), "state_detail": state.detail,
            "overdue": state.state.name == "OVERDUE", "paused": row["paused"],
            "params": params, "overrides": overrides,
            "last_run": None if row["run_id"] is None else _localized(ctx, {
                key: row[key] for key in ("run_id", "scheduled_for", "status", "attempt",
                                          "trigger", "started_at", "finished_at",
                                          "duration_s", "error", "skip_reason")}),
        })
    return rows


@router.get("/jobs", summary="The jobs of the table, with their latest run")
def list_jobs(_: Reader, ctx: Ctx) -> dict:
    return {"items": job_rows(ctx, list(JOBS.values()), datetime.now(UTC)),
            "next_cursor": None}


@router.get("/jobs/{name}", summary="One job")
def get_job(name: str, _: Reader, ctx: Ctx) -> dict:
    [row] = job_rows(ctx, [_job(name)], datetime.now(UTC))
    return row


@router.post("/jobs/{name}/pause", summary="Skip the job's runs until resumed")
def pause(name: str, act: Annotated[Act, Depends(acting("pause"))]) -> dict:
    return _set_paused(act, _job(name), True)


@router.post("/jobs/{name}/resume", summary="Let a paused job run again")
def resume(name: str, act: Annotated[Act, Depends(acting("resume"))]) -> dict:
    return _set_paused(act, _job(name), False)


def _set_paused(act: Act, job: Job, paused: bool) -> dict:
    with act.ctx.pool.connection() as conn:
        was = controls.set_paused(conn, job, paused)
    detail = (f"was {'paused' if was else 'running'}; now {'paused' if paused else 'running'}")
    act.record("done", target=job.name, detail=detail)
    return {"job": job.name, "paused": paused, "was_paused": was}


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The slot to run: ISO 8601 (a date is local midnight; a time without an offset is
    #: local). Default (or empty, as a form sends it): now's slot.
    as_of: str | None = None

    @field_validator("as_of")
    @classmethod
    def _empty_is_now(cls, text: str | None) -> str | None:
        if text is None or not text.strip():
            return None
        return text.strip()


@router.post("/jobs/{name}/trigger", summary="Send a run of the job to the workers now")
def trigger(name: str, act: Annotated[Act, Depends(acting("trigger", limited=True))],
            body: Annotated[Trigger | None, Body()] = None) -> dict:
    job, ctx = _job(name), act.ctx
    params = body.model_dump(exclude_none=True) if body else {}
    try:
        as_of = (datetime.now(UTC) if body is None or body.as_of is None
                 else cron.local_instant(body.as_of, ctx.settings.timezone))
    except ValueError as error:
        act.record("refused", target=job.name, params=params, detail=f"as_of {error}")
        raise HTTPException(422, f"as_of {error}") from None
    slot = slot_of(as_of)
    with ctx.pool.connection() as conn:
        taken = conn.execute(queries("runs.sql")["last_attempt"],
                             {"job": job.name, "scheduled_for": slot}).fetchone()
    if taken is not None and taken["status"] in ("succeeded", "running"):
        detail = (f"attempt {taken['attempt']} of this slot {taken['status']}: not sent, a"
                  " worker would drop it")
        act.record("refused", target=job.name, params=params, detail=detail)
        return {"job": job.name, "scheduled_for": ctx.local(slot), "status": "duplicate",
                "detail": detail}
    try:
        message = send_run(workers.broker, job.name, as_of)
    except Exception as error:
        act.record("failed", target=job.name, params=params, detail=str(error))
        raise HTTPException(503, f"could not send the run: {error}") from None
    act.record("done", target=job.name, params=params,
               detail=f"sent for {ctx.local(slot)}, message {message.message_id}")
    return {"job": job.name, "scheduled_for": ctx.local(slot), "status": "enqueued",
            "message_id": message.message_id}


# statistics -------------------------------------------------------------------------------

#: The jobs that bill calls (their results carry coins_charged, money_earned, calls_ended).
BILLING_JOBS = ("coin_deduction", "call_cleanup")


def statistics(ctx: AdminContext, now: datetime) -> dict:
    """Live figures of Saathii: its people, its calls, and what billing charged and paid in
    the last hour and today (local)."""
    tz = ctx.settings.timezone
    today = datetime.combine(now.astimezone(tz).date(), datetime.min.time(), tz)
    jobs = [name for name in JOBS if name.startswith(BILLING_JOBS)]  # shards included
    sql = queries("admin.sql")
    with ctx.pool.connection() as conn:
        people = conn.execute(sql["people"]).fetchone()
        ongoing = dict.fromkeys(("audio", "video"), 0) | {
            row["call_type"]: row["calls"] for row in conn.execute(sql["ongoing_calls"])}
        hour = conn.execute(sql["billed_since"],
                            {"jobs": jobs, "since": now - timedelta(hours=1)}).fetchone()
        day = conn.execute(sql["billed_since"], {"jobs": jobs, "since": today}).fetchone()
        ended = {row["reason"]: row["calls"]
                 for row in conn.execute(sql["ended_since"], {"jobs": jobs, "since": today})}
        badges = {row["badge"]: row["listeners"]
                  for row in conn.execute(sql["badges_on"], {"day": today.date()})}
    return {**people, "ongoing_calls": ongoing,
            "coins_charged_last_hour": hour["coins_charged"],
            "coins_charged_today": day["coins_charged"],
            "money_earned_today": str(day["money_earned"]),
            "calls_ended_today": ended, "badges_today": badges, "today": today.date().isoformat()}


#: How old the statistics served may be (seconds): they count every user and call, which
#: at 200,000 users takes ~0.1 s; each dashboard polls every few seconds, so they are read
#: at most this often per process, whoever asks.
STATISTICS_MAX_AGE = 5.0


def live_statistics(ctx: AdminContext) -> dict:
    """statistics() now, or as this context read them at most STATISTICS_MAX_AGE ago (their
    `as_of` says when)."""
    with ctx.lock:
        read = ctx.cache.get("statistics")
        if read is None or time.monotonic() - read[0] > STATISTICS_MAX_AGE:
            now = datetime.now(UTC)
            read = ctx.cache["statistics"] = (
                time.monotonic(), {**statistics(ctx, now), "as_of": ctx.local(now)})
        return read[1]


@router.get("/statistics", summary="Live statistics: people, calls, billing today")
def get_statistics(_: Reader, ctx: Ctx) -> dict:
    return live_statistics(ctx)


# runs -------------------------------------------------------------------------------------


#: The filters of a runs page: each a condition on its parameter.
RUN_FILTERS = {"before": "run_id < %(before)s", "job": "job = %(job)s",
               "status": "status = %(status)s", "trigger": "trigger = %(trigger)s",
               "since": "scheduled_for >= %(since)s", "until": "scheduled_for < %(until)s"}


def read_runs(conn, limit: int, **filters) -> list[dict]:
    """A page of runs (limit + 1 rows, for _page), newest first, by the filters given (the
    None ones are left out)."""
    asked = {name: value for name, value in filters.items() if value is not None}
    where = sql.SQL(" AND ").join(sql.SQL(RUN_FILTERS[name]) for name in asked) \
        if asked else sql.SQL("true")
    # Planned with its values each time (prepare=False): a generic plan knows neither the
    # filters' values nor the limit (db/admin.sql says why the plan matters).
    query = sql.SQL(queries("admin.sql")["runs"]).format(where=where)
    return conn.execute(query, {**asked, "limit": limit + 1}, prepare=False).fetchall()


@router.get("/runs", summary="Runs, newest first")
def list_runs(_: Reader, ctx: Ctx, job: str | None = None,
              status: RunStatus | None = None,
              trigger: str | None = None, since: datetime | None = None,
              until: datetime | None = None, cursor: str | None = None,
              limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> dict:
    if job is not None:
        _job(job)
    for instant in (since, until):
        if instant is not None and instant.tzinfo is None:
            raise HTTPException(422, "since and until need an offset (…+05:30 or …Z)")
    with ctx.pool.connection() as conn:
        rows = read_runs(conn, limit, before=_cursor(cursor), job=job, status=status,
                         trigger=trigger, since=since, until=until)
    return _page([_localized(ctx, row) for row in rows], limit, "run_id")


@router.get("/runs/{run_id}", summary="One run: its result, error and attempts")
def get_run(run_id: int, _: Reader, ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        row = conn.execute(queries("admin.sql")["run"], {"run_id": run_id}).fetchone()
    if row is None:
        raise HTTPException(404, f"no run {run_id}")
    return _localized(ctx, row)


# the system -------------------------------------------------------------------------------


@router.get("/health", summary="Every health check, with its figure and verdict")
def get_health(_: Reader, ctx: Ctx) -> dict:
    return health.check_all(ctx.settings, JOBS.values()).as_json()


@router.get("/processes", summary="The workers' and schedulers' heartbeats")
def list_processes(_: Reader, ctx: Ctx) -> dict:
    with ctx.pool.connection() as conn:
        known = liveness.processes(conn, timedelta(seconds=ctx.settings.process_stale_seconds))
    return {"items": [_localized(ctx, dict(process)) for process in known],
            "next_cursor": None}


@router.get("/queues", summary="Each queue: waiting, unacked, delayed, dead")
def list_queues(_: Reader, ctx: Ctx) -> dict:
    names = sorted({job.queue for job in JOBS.values()})
    try:
        stats = queues.queue_stats(ctx.redis, names)
    except Exception as error:
        raise HTTPException(503, f"Redis unreachable: {error}") from None
    return {"items": [queue.as_json() for queue in stats], "next_cursor": None}


@router.get("/audit", summary="What was done through the admin, newest first")
def list_audit(_: Reader, ctx: Ctx, cursor: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> dict:
    with ctx.pool.connection() as conn:
        rows = conn.execute(queries("admin.sql")["audit"],
                            {"before": _cursor(cursor), "limit": limit + 1}).fetchall()
    return _page([_localized(ctx, row) for row in rows], limit, "audit_id")


def _letters(ctx: AdminContext, queue: str | None) -> list[queues.DeadLetter]:
    names = sorted({job.queue for job in JOBS.values()})
    if queue is not None and queue not in names:
        raise HTTPException(404, f"unknown queue {queue!r}; queues: {', '.join(names)}")
    try:
        return queues.dead_letters(ctx.redis, [queue] if queue else names)
    except Exception as error:
        raise HTTPException(503, f"Redis unreachable: {error}") from None


@router.get("/dead-letters", summary="Messages the workers gave up on, oldest first")
def list_dead_letters(_: Reader, ctx: Ctx, queue: str | None = None) -> dict:
    letters, now = _letters(ctx, queue), datetime.now(UTC)
    with ctx.pool.connection() as conn:
        runs = dead.outcomes(conn, letters)
    return {"items": [{"id": letter.message_id, "queue": letter.queue, "actor": letter.actor,
                       "slot": letter.slot, "died": ctx.local(letter.died_at),
                       "age_s": round(letter.age(now)), "error": dead.why(letter, runs)}
                      for letter in letters], "next_cursor": None}


@router.post("/dead-letters/{letter}/retry",
             summary="Send a dead letter's run again, and take it off the queue")
def retry_dead_letter(letter: str,
                      act: Annotated[Act, Depends(acting("retry", limited=True))]) -> dict:
    ctx = act.ctx
    try:
        found = queues.find(_letters(ctx, None), letter)
    except LookupError as error:
        act.record("refused", target=letter, detail=str(error))
        raise HTTPException(404, str(error)) from None
    try:
        with ctx.pool.connection() as conn:
            message, taken = dead.resend(conn, ctx.redis, workers.broker, found)
    except UsageError as error:
        act.record("refused", target=found.message_id, detail=str(error))
        raise HTTPException(422, str(error)) from None
    detail = f"{found.actor} {ctx.local(dead.slot(found))} sent as {message.message_id}"
    if taken:
        detail += f"; the slot is {taken} already: the run will be a duplicate"
    act.record("done", target=found.message_id, detail=detail)
    return {"id": found.message_id, "job": found.actor,
            "scheduled_for": ctx.local(dead.slot(found)), "message_id": message.message_id,
            "slot_already": taken}


class Purge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str | None = None
    #: Only those dead at least this long (seconds).
    older_than_s: int | None = None


@router.post("/dead-letters/purge", summary="Delete dead letters (of a queue, older than)")
def purge_dead_letters(act: Annotated[Act, Depends(acting("purge", limited=True))],
                       body: Annotated[Purge | None, Body()] = None) -> dict:
    body = body or Purge()
    older = None if body.older_than_s is None else timedelta(seconds=body.older_than_s)
    chosen = queues.older_than(_letters(act.ctx, body.queue), older)
    purged = queues.remove(act.ctx.redis, chosen) if chosen else 0
    act.record("done", target=body.queue, params=body.model_dump(exclude_none=True),
               detail=f"purged {purged} dead letter(s)")
    return {"purged": purged}
