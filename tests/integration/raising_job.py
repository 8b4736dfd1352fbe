"""A job whose work always raises, for the alerting tests: importing this module adds it to
the job table and declares its actor on the workers' broker, the way a real job's row does
(`dramatiq workers raising_job --path tests/integration`)."""

import workers
from workers.actors import job_actor
from workers.engine.jobs import Job
from workers.schedule import JOBS

#: A local variable's value the work holds when it raises: it must never reach Sentry.
#: (Built at run time: Sentry sends the source lines around a frame, and this one's.)
SECRET = "-".join(["a", "local", "value", "that", "must", "not", "leave"])


def explode(conn, run):
    secret = SECRET  # noqa: F841 (a local variable in the failing frame)
    raise RuntimeError(f"boom on attempt {run.attempt}")


JOB = Job(name="raising_test_job", work=f"{__name__}:explode", cron="* * * * *",
          description="Always fails.", lock_id=901, queue="tests", max_retries=2)
JOBS[JOB.name] = JOB
job_actor(JOB, workers.broker)
