"""Runs one slot of a job in its own process, holding the job's lock until a release
file appears: the other replica in the replica tests.

    python lock_holder.py JOB SLOT_ISO RELEASE_FILE

Prints "holding" once its work runs (lock held, a marker user written), and the run's
outcome as JSON when done.
"""

import json
import sys
from datetime import datetime
from pathlib import Path

from workers.engine.db import connect
from workers.engine.runs import run_job
from workers.engine.runtime import run_options
from workers.schedule import JOBS
from workers.settings import Settings


def main(job: str, slot: str, release_file: str) -> None:
    release = Path(release_file)

    def hold(conn, run):
        conn.execute("INSERT INTO users (username, dob, phone)"
                     " VALUES ('holder', '2000-01-01', '+910000000000')")
        print("holding", flush=True)
        while not release.exists():
            conn.execute("SELECT pg_sleep(0.02)")
        return {"held": True}

    settings = Settings()
    with connect(settings.database_url, autocommit=True) as conn:
        outcome = run_job(conn, JOBS[job], datetime.fromisoformat(slot), run_options(settings),
                          trigger="replica", work=hold)
    print(json.dumps(outcome.as_json()), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
