"""python -m chaos --duration SECONDS --workers N --seed S [--shards K] [--minute-seconds X]
                   [--api broken|fixed] [--keep]

The JSON summary is the last line of stdout. Exit 0: no violation; 1: violations;
2: the harness failed (a server that would not start, a worker that would not boot,
Ctrl-C).
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from datetime import time as time_of_day
from pathlib import Path

from chaos.env import environment, free_port

EXIT_OK, EXIT_VIOLATIONS, EXIT_HARNESS = 0, 1, 2


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description="The workers under a storm of faults, judged by "
                                            "the ledger.")
    parser.add_argument("--duration", type=float, default=600,
                        help="length of the storm, in real seconds (default 600)")
    parser.add_argument("--workers", type=int, default=3,
                        help="dramatiq worker processes (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seeds faults and traffic")
    parser.add_argument("--shards", type=int, default=1,
                        help="billing shards, BILLING_SHARDS of every process (default 1)")
    parser.add_argument("--minute-seconds", type=float, default=1.0,
                        help="real seconds per logical minute (default 1.0)")
    parser.add_argument("--start-at", metavar="HH:MM",
                        help="start logical time at the next HH:MM of APP_TIMEZONE rather "
                             "than at the current minute (e.g. 22:00 to cross midnight)")
    parser.add_argument("--fault-interval", type=float, default=8.0,
                        help="mean real seconds between faults (default 8; every kind is "
                             "injected at least once however short the storm)")
    parser.add_argument("--kinds", default="all",
                        help="the fault kinds to inject, comma-separated; 'all' (default) "
                             "or 'none'")
    parser.add_argument("--api", choices=("broken", "fixed"),
                        help="traffic as the real Saathii API, on its own database adopted by"
                             " db init: its end route as written ('broken': it fails) or"
                             " with its one-line fix. Its writes have no transactions, so"
                             " 'all' kinds then leave out postgres_immediate_restart: a"
                             " crash mid-request breaks the API's own books")
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--listeners", type=int, default=16)
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directory (servers' data, every process's log)")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.duration <= 0 or args.workers < 1 or args.minute_seconds <= 0 or args.shards < 1:
        print("chaos: --duration, --workers, --shards and --minute-seconds must be positive",
              file=sys.stderr)
        return EXIT_HARNESS
    try:
        time_of_day.fromisoformat(args.start_at or "00:00")
    except ValueError:
        print(f"chaos: --start-at wants HH:MM, not {args.start_at!r}", file=sys.stderr)
        return EXIT_HARNESS
    postgres_port, redis_port = free_port(), free_port()
    env = environment(database_url=f"postgresql://postgres@127.0.0.1:{postgres_port}/saathii",
                      redis_url=f"redis://127.0.0.1:{redis_port}/0", shards=args.shards)
    # Before anything imports `workers`, whose settings are read once, at import.
    os.environ.pop("LOG_DIR", None)
    os.environ.update(env)
    from chaos.faults import KINDS
    from chaos.harness import Harness, Options
    from chaos.servers import HarnessError, Servers

    every = tuple(k for k in KINDS if not (args.api and k == "postgres_immediate_restart"))
    presets = {"all": every, "none": ()}
    kinds = presets[args.kinds] if args.kinds in presets else tuple(args.kinds.split(","))
    if unknown := set(kinds) - set(KINDS):
        print(f"chaos: unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}",
              file=sys.stderr)
        return EXIT_HARNESS

    # After the imports above, which exit on a bad setting (BILLING_SHARDS out of range).
    directory = Path(tempfile.mkdtemp(prefix="saathii-chaos-"))

    servers = Servers(directory / "servers", postgres_port=postgres_port, redis_port=redis_port)
    assert (servers.database_url, servers.redis_url) == (env["DATABASE_URL"], env["REDIS_URL"])
    options = Options(duration=args.duration, workers=args.workers, seed=args.seed,
                      minute_seconds=args.minute_seconds, start_at=args.start_at,
                      fault_interval=args.fault_interval,
                      kinds=kinds, customers=args.customers, listeners=args.listeners,
                      keep=args.keep, api=args.api)
    harness = Harness(options, directory, servers, env)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started ignoring SIGINT
        signal.signal(signum, _interrupt)
    code, summary = EXIT_HARNESS, {"seed": args.seed, "duration_s": args.duration}
    try:
        summary = harness.run()
        code = EXIT_VIOLATIONS if summary["violation_count"] else EXIT_OK
    except KeyboardInterrupt:
        summary["error"] = "interrupted"
    except HarnessError as error:
        summary["error"] = str(error)
    except Exception as error:
        traceback.print_exc()
        summary["error"] = f"{type(error).__name__}: {error}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if code == EXIT_HARNESS and summary["error"] != "interrupted":
            harness.progress(f"harness failed: {summary.get('error')}\n{harness.tails()}")
        harness.cleanup()
        if args.keep:
            harness.progress(f"run directory kept: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(summary), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
