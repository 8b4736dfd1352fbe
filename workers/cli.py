"""`python -m workers`: the operator's command line.

Exit codes: 0 done (a skipped or duplicate run included), 1 the job failed, 2 bad usage,
3 a service is unreachable or the schema is missing. Errors are one line on stderr.
"""

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dotenv import dotenv_values

import workers
from workers.engine import adoption, controls, cron, liveness, queues, redis_client, runtime
from workers.engine import letters as dead
from workers.engine.boot import boot
from workers.engine.broker import send_run
from workers.engine.db import connect, queries, schema_version
from workers.engine.runs import Status, run_job, slot_of
from workers.engine.schema import apply_schema
from workers.errors import AdoptionRefused, SchemaMissing, Unavailable, UsageError
from workers.observability import health, metrics
from workers.observability.logs import figures_text
from workers.observability.overdue import State, job_states
from workers.schedule import JOBS
from workers.settings import LOCAL_SERVICES_FILE, Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: The most rows `history` shows.
MAX_HISTORY = 10_000


def parse_as_of(text: str, timezone: ZoneInfo) -> datetime:
    """--as-of: cron.local_instant's, or UsageError saying what is expected."""
    try:
        return cron.local_instant(text, timezone)
    except ValueError as error:
        raise UsageError(f"invalid --as-of {error}") from None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers",
                                     description="Operate Saathii's background workers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["init"], help="init: apply db/schema.sql (idempotent)")

    run = commands.add_parser("run-task", help="run one job now, in this process")
    run.add_argument("job", choices=list(JOBS), metavar="JOB",
                     help=f"one of: {', '.join(JOBS)}")
    run.add_argument("--as-of", help="logical time of the run, ISO 8601 (default: now)")
    run.add_argument("--enqueue", action="store_true",
                     help="send it to the workers through Redis instead of running it here")

    status = commands.add_parser("status", help="each job's schedule and last run")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    history = commands.add_parser("history", help="recent runs, newest first")
    history.add_argument("job", nargs="?", choices=list(JOBS), metavar="JOB")
    history.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    history.add_argument("--json", action="store_true", help="machine-readable output")

    for name, text in (("pause", "skip a job's runs until resumed"),
                       ("resume", "let a paused job run again")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", choices=list(JOBS), metavar="JOB",
                             help=f"one of: {', '.join(JOBS)}")

    params = commands.add_parser("params", help="a job's parameters; set or unset overrides")
    params.add_argument("job", choices=list(JOBS), metavar="JOB",
                        help=f"one of: {', '.join(JOBS)}")
    params.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        type=parse_assignment,
                        help="override a parameter (VALUE is JSON: 90, null, \"text\"; "
                             "other text is a string); validated before it is written")
    params.add_argument("--unset", action="append", default=[], metavar="NAME",
                        help="remove an override: the setting or default applies again")
    params.add_argument("--json", action="store_true", help="machine-readable output")

    check = commands.add_parser(
        "health", help="every health check: exit 0 healthy, 1 degraded, 2 failing")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--process", choices=liveness.KINDS,
                       help="only whether a live process of this kind beats from this host"
                            " (a container's healthcheck)")

    queue = commands.add_parser("queues", help="each queue: waiting, unacked, delayed, dead")
    queue.add_argument("--json", action="store_true", help="machine-readable output")

    dead = commands.add_parser("dead-letters", help="messages the workers gave up on")
    dead.add_argument("action", choices=["list", "retry", "purge"])
    dead.add_argument("id", nargs="?", help="retry: the message id (or its start)")
    dead.add_argument("--queue", help="only this queue")
    dead.add_argument("--older-than", type=parse_age, metavar="AGE",
                      help="purge: only those dead this long (30m, 12h, 7d)")
    dead.add_argument("--yes", action="store_true", help="purge without asking")
    dead.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser("admin", help="serve the admin (HTTP API) at ADMIN_HOST:ADMIN_PORT")

    metrics = commands.add_parser(
        "metrics", help="serve Prometheus metrics at METRICS_HOST:METRICS_PORT/metrics")
    metrics.add_argument("--once", action="store_true",
                         help="print one scrape and exit instead of serving")

    held = commands.add_parser("adopted-calls",
                               help="calls held from billing when db init adopted the database")
    held.add_argument("--end", action="store_true",
                      help="end them at their parties' last sighting, charged nothing more")
    held.add_argument("--dry-run", action="store_true", help="with --end: say, change nothing")
    held.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    number, unit = text[:-1], text[-1:]
    if unit not in AGE_UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected an age like 30m, 12h or 7d, not {text!r}")
    return timedelta(seconds=int(number) * AGE_UNITS[unit])


def parse_assignment(text: str) -> tuple[str, object]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """The command line; `settings` given: run in a process that has set itself up (a
    test), without booting it."""
    args = make_parser().parse_args(argv)
    if settings is None:
        settings = boot("admin" if args.command == "admin" else "cli",
                        broker=workers.broker).settings
        if found := local_services(settings):
            print(f"saathii-workers: using the embedded {' and '.join(found)} of `make run`"
                  f" / `make db` ({LOCAL_SERVICES_FILE})", file=sys.stderr)
    try:
        return COMMANDS[args.command](args, settings)
    except UsageError as error:
        print(f"saathii-workers: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (Unavailable, SchemaMissing, AdoptionRefused) as error:
        print(f"saathii-workers: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def local_services(settings: Settings) -> list[str]:
    """The servers these settings took from the file `make run` / `make db` write, when
    neither the environment nor .env named them."""
    if not LOCAL_SERVICES_FILE.is_file():
        return []
    written = dotenv_values(LOCAL_SERVICES_FILE)
    dotenv = dotenv_values(".env") if os.path.isfile(".env") else {}
    return [name for variable, name, value in (
                ("DATABASE_URL", "PostgreSQL", settings.database_url),
                ("REDIS_URL", "Redis", settings.redis_url))
            if variable not in os.environ and variable not in dotenv
            and written.get(variable) == value]


def db_command(args, settings: Settings) -> int:
    with connect(settings.database_url, autocommit=True) as conn:
        applied = apply_schema(conn, settings)
    print(f"schema version {applied.version} applied")
    adoption = applied.adoption
    if adoption is not None and adoption.calls:
        print(f"adoption: {adoption.calls} call{'s' if adoption.calls > 1 else ''} left"
              f" 'ongoing' with parties silent past the heartbeat timeout (oldest started"
              f" {local(adoption.oldest, settings)}, {adoption.coins_at_stake} coins at"
              f" stake) {'are' if adoption.calls > 1 else 'is'} held from billing, and their"
              " parties stay busy in the API:"
              " see `python -m workers adopted-calls`")
    return EXIT_OK


def run_task(args, settings: Settings) -> int:
    as_of = (datetime.now(UTC) if args.as_of is None
             else parse_as_of(args.as_of, settings.timezone))
    if args.enqueue:
        return enqueue(args.job, as_of, settings)
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        outcome = run_job(conn, JOBS[args.job], as_of, runtime.current().run_options(),
                          trigger="cli")
    print(json.dumps(outcome.as_json()))
    return EXIT_FAILED if outcome.status is Status.FAILED else EXIT_OK


def enqueue(name: str, as_of: datetime, settings: Settings) -> int:
    """Send the run to the workers, unless its slot is already taken: a worker would drop
    that message as a duplicate, so say so instead of "enqueued"."""
    slot = slot_of(as_of)
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        taken = conn.execute(queries("runs.sql")["last_attempt"],
                             {"job": name, "scheduled_for": slot}).fetchone()
    if taken is not None and taken["status"] in ("succeeded", "running"):
        print(json.dumps({"job": name, "scheduled_for": slot.isoformat(), "status": "duplicate",
                          "detail": f"attempt {taken['attempt']} of this slot"
                                    f" {taken['status']} (on {taken['host']}:{taken['pid']}):"
                                    " not enqueued, a worker would drop it"}))
        return EXIT_OK
    redis_client.ping(settings.redis_url)
    message = send_run(workers.broker, name, as_of)
    print(json.dumps({"job": name, "scheduled_for": slot_of(as_of).isoformat(),
                      "status": "enqueued",
                      "message_id": message.message_id}))
    return EXIT_OK


def status(args, settings: Settings) -> int:
    sql = queries("runs.sql")
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        last = {row["job"]: row for row in conn.execute(sql["latest_runs"])}
        paused = {row["job"] for row in conn.execute(sql["paused_jobs"])}
        warnings = money_warnings(conn)
        now = datetime.now(UTC)
        states = job_states(conn, JOBS.values(), now, settings.timezone)
        known = liveness.processes(conn, timedelta(seconds=settings.process_stale_seconds))
    redis_client.ping(settings.redis_url)
    rows = []
    for job in JOBS.values():
        run = last.get(job.name)
        rows.append({
            "job": job.name, "cron": job.cron, "timezone": settings.app_timezone,
            "next_run": local(cron.next_after(job.cron, settings.timezone, now), settings),
            "paused": job.name in paused, "state": str(states[job.name].state),
            "last_status": run["status"] if run else None,
            "last_started": local(run["started_at"], settings) if run else None,
            "last_duration": seconds(run["duration"]) if run else None,
        })
    processes = [{"kind": p["kind"], "host": p["host"], "pid": p["pid"],
                  "alive": p["alive"], "last_beat_s": round(p["beat_age"], 1),
                  "started": local(p["started_at"], settings), "queues": ",".join(p["queues"]),
                  "running": ",".join(run["job"] for run in p["running"])} for p in known]
    if args.json:
        print(json.dumps({"jobs": rows, "processes": processes}))
    else:
        print_table(rows, ["job", "cron", "timezone", "next_run", "state", "last_status",
                           "last_started", "last_duration"])
        print()
        if processes:
            print_table(processes, ["kind", "host", "pid", "alive", "last_beat_s", "started",
                                    "queues", "running"])
        else:
            print("no worker or scheduler has a heartbeat: none is running")
    for state in states.values():
        if state.state in (State.OVERDUE, State.OVERRUNNING):
            warnings.append(f"{state.job} is {state.state}: {state.detail}")
    for warning in warnings:
        print(f"saathii-workers: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def money_warnings(conn) -> list[str]:
    """What an operator must decide on that the workers will not (db/status.sql)."""
    sql, warnings = queries("status.sql"), []
    api = conn.execute(sql["paid_by_the_api"]).fetchone()
    if api["calls"]:
        warnings.append(
            f"{api['calls']} call(s) were paid by the API's own hang-up: "
            f"{api['credited_coins']} coins credited to balance_coins where ₹{api['due']}"
            " was due to withdrawable_money; the workers paid them nothing more")
    held = conn.execute(sql["held_since_adoption"]).fetchone()
    if held["calls"]:
        warnings.append(
            f"{held['calls']} call(s) held from billing since adoption are still 'ongoing'"
            f" ({held['coins_at_stake']} coins at stake): `python -m workers adopted-calls`")
    return warnings


def health_command(args, settings: Settings) -> int:
    """Exit 0 healthy, 1 degraded, 2 failing; each check on a line."""
    report = (health.own_process_check(settings, args.process) if args.process
              else health.check_all(settings, JOBS.values()))
    if args.json:
        print(json.dumps(report.as_json(), default=str))
    else:
        rows = [{"check": c.name, "verdict": str(c.verdict),
                 "figure": c.figure if not isinstance(c.figure, dict) else None,
                 "detail": c.detail} for c in report.checks]
        print_table(rows, ["check", "verdict", "figure", "detail"], width=None)
        print(f"{report.verdict}: " + {0: "healthy", 1: "degraded", 2: "failing"}[
            report.exit_code])
    return report.exit_code


def queues_command(args, settings: Settings) -> int:
    names = sorted({job.queue for job in JOBS.values()})
    with (redis_client.client(settings.redis_url) as client,
          redis_client.failures_as_ours(redis_client.describe(settings.redis_url))):
        stats = queues.queue_stats(client, names)
    rows = [queue.as_json() for queue in stats]
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows, ["queue", "waiting", "unacked", "delayed", "dead", "oldest_age_s"])
    return EXIT_OK


def admin_command(args, settings: Settings) -> int:
    from workers.admin.app import serve  # FastAPI and uvicorn: for this command only

    return serve(settings)


def metrics_command(args, settings: Settings) -> int:
    if args.once:
        print(metrics.render(settings, JOBS.values()), end="")
        return EXIT_OK
    try:
        return metrics.serve(settings, JOBS.values())
    except OSError as error:  # the port is taken, or the address is not ours
        raise UsageError(f"cannot serve metrics on {settings.metrics_host}:"
                         f"{settings.metrics_port}: {error.strerror or error}") from None


def dead_letters_command(args, settings: Settings) -> int:
    names = sorted({job.queue for job in JOBS.values()})
    if args.queue is not None and args.queue not in names:
        raise UsageError(f"unknown queue {args.queue!r}; queues: {', '.join(names)}")
    if (args.action == "retry") != (args.id is not None):
        raise UsageError("retry takes one message id; list and purge take none")
    with (redis_client.client(settings.redis_url) as client,
          redis_client.failures_as_ours(redis_client.describe(settings.redis_url))):
        letters = queues.dead_letters(client, [args.queue] if args.queue else names)
        if args.action == "list":
            return list_dead_letters(letters, args, settings)
        if args.action == "retry":
            return retry_dead_letter(client, letters, args.id, settings)
        return purge_dead_letters(client, letters, args)


def list_dead_letters(letters, args, settings: Settings) -> int:
    now, runs = datetime.now(UTC), {}
    if letters:
        with connect(settings.database_url, autocommit=True) as conn:
            runs = dead.outcomes(conn, letters)
    rows = [{"id": letter.message_id, "queue": letter.queue, "actor": letter.actor,
             "slot": letter.slot, "died": local(letter.died_at, settings),
             "age_s": round(letter.age(now)), "error": dead.why(letter, runs)}
            for letter in letters]
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows, ["id", "queue", "actor", "slot", "died", "age_s", "error"],
                    width=None)
    return EXIT_OK


def retry_dead_letter(client, letters, wanted: str, settings: Settings) -> int:
    """Send the dead letter's run again as a new message, and take it off the dead-letter
    queue. A run for a slot that already succeeded is a duplicate, a no-op: say so."""
    try:
        letter = queues.find(letters, wanted)
    except LookupError as error:
        raise UsageError(str(error)) from None
    with connect(settings.database_url, autocommit=True) as conn:
        message, taken = dead.resend(conn, client, workers.broker, letter)
    note = ("" if taken is None else
            f"; that slot is {taken} already, so the run will be a duplicate and do nothing")
    print(f"{letter.actor} {local(dead.slot(letter), settings)} sent again as message"
          f" {message.message_id}{note}")
    return EXIT_OK


def purge_dead_letters(client, letters, args) -> int:
    chosen = queues.older_than(letters, args.older_than)
    if not chosen:
        print("no dead letters to purge")
        return EXIT_OK
    if not args.yes:
        answer = input(f"purge {len(chosen)} dead letter(s)? [y/N] ") if sys.stdin.isatty() \
            else ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged (confirm, or pass --yes)")
            return EXIT_USAGE
    print(f"purged {queues.remove(client, chosen)} dead letter(s)")
    return EXIT_OK


def history(args, settings: Settings) -> int:
    if not 1 <= args.limit <= MAX_HISTORY:
        raise UsageError(f"--limit must be between 1 and {MAX_HISTORY}")
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        runs = conn.execute(queries("runs.sql")["history"],
                            {"job": args.job, "limit": args.limit}).fetchall()
    rows = [{
        "started": local(run["started_at"], settings), "job": run["job"],
        "scheduled_for": local(run["scheduled_for"], settings), "status": run["status"],
        "attempt": run["attempt"], "trigger": run["trigger"],
        "duration": seconds(run["duration"]), "where": f"{run['host']}:{run['pid']}",
        "detail": run["error"] or run["skip_reason"], "result": run["result"],
    } for run in runs]
    if args.json:  # everything
        print(json.dumps(rows, default=str))
    else:  # a line a person can scan: the result's key figures
        for row in rows:
            row["detail"] = row["detail"] or figures_text(row["result"])
        print_table(rows, ["started", "job", "scheduled_for", "status", "attempt", "trigger",
                           "duration", "where", "detail"], width=None)
    return EXIT_OK


def set_paused(args, settings: Settings) -> int:
    paused = args.command == "pause"
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        was = controls.set_paused(conn, JOBS[args.job], paused)
    state = "paused" if paused else "resumed"
    already = " (already)" if was == paused else ""
    print(f"{args.job} {state}{already}")
    return EXIT_OK


def params(args, settings: Settings) -> int:
    """Each parameter of the job: its value, the setting or default it has without an
    override, and the override. With --set / --unset, the overrides are changed first,
    once the job's model accepts the result."""
    job, defaults = JOBS[args.job], settings.model_dump()
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        if args.set or args.unset:
            overrides = controls.change_overrides(conn, job, defaults, values=dict(args.set),
                                                  removed=args.unset)
        else:
            overrides = controls.overrides(conn, job)
    base = job.parameters(defaults).model_dump(mode="json")
    now = job.parameters(defaults, overrides).model_dump(mode="json")
    rows = [{"parameter": name, "value": now[name], "without_override": base[name],
             "override": overrides.get(name), "overridden": name in overrides}
            for name in now]
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows, ["parameter", "value", "without_override", "overridden"])
    return EXIT_OK


def adopted_calls(args, settings: Settings) -> int:
    """The calls db init held from billing at adoption; with --end, ended uncharged."""
    if args.dry_run and not args.end:
        raise UsageError("--dry-run goes with --end")
    with connect(settings.database_url, autocommit=True) as conn:
        schema_version(conn)
        calls = adoption.held_calls(conn)
        ended = adoption.end_held_calls(conn) if args.end and not args.dry_run else 0
    rows = [{"call": call["call_id"], "caller": call["caller_id"],
             "listener": call["listener_id"], "type": call["call_type"],
             "started": local(call["start_time"], settings),
             "last_seen": local(call["last_seen"], settings),
             "coins_spent": call["coins_spent"], "coins_at_stake": call["coins_at_stake"]}
            for call in calls]
    if args.json:
        print(json.dumps({"held": rows, "ended": ended}))
        return EXIT_OK
    print_table(rows, ["call", "caller", "listener", "type", "started", "last_seen",
                       "coins_spent", "coins_at_stake"])
    stake = sum(call["coins_at_stake"] for call in calls)
    if args.end:
        verb = "would end" if args.dry_run else "ended"
        print(f"{verb} {len(calls) if args.dry_run else ended} held call(s) at their parties'"
              f" last sighting, uncharged ({stake} coins at stake not charged)")
    else:
        print(f"{len(calls)} held call(s), {stake} coins at stake; `--end` ends them,"
              " uncharged (`--end --dry-run` first)")
    return EXIT_OK


def local(instant: datetime | None, settings: Settings) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(settings.timezone).isoformat(timespec="seconds")


def seconds(duration) -> float | None:
    return None if duration is None else round(duration.total_seconds(), 3)


def print_table(rows: list[dict], columns: list[str], *, width: int | None = 60) -> None:
    """Rows under their column names; a cell longer than `width` is cut (None: never)."""
    def cell(value) -> str:
        if value is None:
            return "-"
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        return text if width is None or len(text) <= width else text[:width - 3] + "..."

    table = [columns] + [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        cells = (value.ljust(width) for value, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())


COMMANDS = {"db": db_command, "run-task": run_task, "status": status, "history": history,
            "pause": set_paused, "resume": set_paused, "params": params,
            "adopted-calls": adopted_calls, "health": health_command,
            "queues": queues_command, "dead-letters": dead_letters_command,
            "metrics": metrics_command, "admin": admin_command}
