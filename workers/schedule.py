"""The job table: one row per job. Nothing else lists the jobs.

The broker's actors and periodiq's schedule, the run contract (lock, time limit, missed-run
policy, parameters), the catch-up and the CLI read it. A row names its work function and
its parameters' model ("module:attribute", see workers.engine.jobs.Job); the job's code is
one module of workers/jobs (or the engine's, for the catch-up) and its SQL one file of db/,
both named as the job.

Cron specs are read in APP_TIMEZONE, by workers.engine.cron (not periodiq's own parser,
whose DST and Sunday defects workers.engine.periodic works around); a bad spec fails here.
"""

from datetime import timedelta

from workers.engine.jobs import Job, MissedRuns, shards

#: Lock ids of the billing shards (BILLING_SHARDS > 1): this + the shard's index.
BILLING_SHARD_LOCKS = 1000


def table(billing_shards: int = 1) -> dict[str, Job]:
    """Every job by name; coin_deduction split into `billing_shards` jobs when > 1."""
    rows = (
        *shards(Job(
            name="coin_deduction",
            work="workers.jobs.coin_deduction:coin_deduction",
            params="workers.jobs.coin_deduction:Params",
            cron="* * * * *",
            description="Charges every owed minute of every ongoing call; ends calls out of"
                        " coins or whose party went silent; settles ended calls.",
            lock_id=1,
            shard_locks=BILLING_SHARD_LOCKS,
            queue="billing",
            time_limit=timedelta(seconds=55),
            near_limit_hint="Split billing further: raise BILLING_SHARDS.",
        ), billing_shards),
        Job(
            name="presence_cleanup",
            work="workers.jobs.presence_cleanup:presence_cleanup",
            params="workers.jobs.presence_cleanup:Params",
            cron="*/5 * * * *",
            description="Marks silent users offline and clears expired busy states.",
            lock_id=2,
            time_limit=timedelta(minutes=2),
        ),
        Job(
            name="call_cleanup",
            work="workers.jobs.call_cleanup:call_cleanup",
            params="workers.jobs.call_cleanup:Params",
            cron="*/10 * * * *",
            description="Ends and settles calls whose parties went silent or whose time ran out.",
            lock_id=3,
            time_limit=timedelta(minutes=5),
        ),
        Job(
            name="badge_assignment",
            work="workers.jobs.badge_assignment:badge_assignment",
            cron="1 0 * * *",
            description="Awards each active listener the day's badge from yesterday's minutes.",
            lock_id=4,
            time_limit=timedelta(minutes=10),
            max_retries=3,
            missed=MissedRuns.ALL,
        ),
        Job(
            name="log_rotation",
            work="workers.jobs.log_rotation:log_rotation",
            params="workers.jobs.log_rotation:Params",
            cron="0 1 * * *",
            description="Compresses and expires old log files; prunes old run records.",
            lock_id=5,
            queue="maintenance",
            time_limit=timedelta(minutes=10),
            max_retries=3,
            missed=MissedRuns.LATEST,
        ),
        Job(
            name="health_check",
            work="workers.jobs.health_check:health_check",
            params="workers.jobs.health_check:Params",
            cron="*/5 * * * *",
            description="Records every health check; alerts once when one turns failing.",
            lock_id=7,
            time_limit=timedelta(minutes=1),
        ),
        Job(
            name="catch_up",
            work="workers.engine.catch_up:catch_up",
            cron="* * * * *",
            description="Runs the latest missed slot of each job whose policy asks for it.",
            lock_id=6,
            time_limit=timedelta(seconds=30),
        ),
    )
    return {job.name: job for job in rows}


#: The jobs of this process. BILLING_SHARDS replaces it at the package's import
#: (`use_billing_shards`), before the actors are declared.
JOBS: dict[str, Job] = table()


def use_billing_shards(count: int) -> None:
    """Make JOBS the table with billing split into `count` shards."""
    new = table(count)
    JOBS.clear()
    JOBS.update(new)


def get_job(name: str) -> Job:
    """The job called `name`; KeyError naming the valid jobs otherwise."""
    try:
        return JOBS[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r}; valid jobs: {', '.join(JOBS)}") from None
