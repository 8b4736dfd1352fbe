"""What both benches do around their measurement: Ctrl-C and SIGTERM interrupt it, the
servers stop and the temporary directory goes (unless kept) whatever happened, and a
failure becomes one line for the exit message."""

import shutil
import signal
import traceback
from pathlib import Path

import psycopg
import redis


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def measure(bench, directory: Path, *, keep: bool,
            harness_errors: tuple[type[Exception], ...]) -> tuple[dict | None, str | None]:
    """(what `bench.measure()` returned, None), or (None, why it did not). `bench` has
    measure(), stop() and progress(message); `harness_errors` are the bench's own, whose
    text says it all."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        return bench.measure(), None
    except KeyboardInterrupt:
        return None, "interrupted"
    except harness_errors as failure:
        return None, str(failure)
    except (OSError, RuntimeError, psycopg.Error, redis.RedisError) as failure:
        return None, f"{type(failure).__name__}: {failure}"
    except Exception as failure:  # a defect of the harness: its traceback too
        traceback.print_exc()
        return None, f"{type(failure).__name__}: {failure}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.stop()
        if keep:
            bench.progress(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
