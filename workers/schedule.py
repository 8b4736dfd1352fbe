"""The job table: one declaration per scheduled job.

Everything else reads from here: the Dramatiq actors and their periodiq
schedule, the run contract (lock, time limit, missed-run policy), the CLI's
status and run-task commands. Nothing else lists the jobs again.

Cron specs are read in APP_TIMEZONE, by workers.cron (not periodiq's own parser, whose
DST and Sunday defects workers.periodic works around); a bad spec fails at import.
"""

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from workers import cron

#: First key of every job's advisory lock: pg_try_advisory_xact_lock(LOCK_NAMESPACE, job.lock_id).
#: A constant of our own, so our locks never collide with another application's.
LOCK_NAMESPACE = 0x5AA7  # "SAAThii", 23207


class MissedRuns(StrEnum):
    """What to do about slots that passed without a successful run."""

    #: Nothing: the next regular run covers them (billing charges every owed minute anyway).
    SKIP = "skip"
    #: Run the latest missed slot once, however many were missed (coalesced).
    LATEST = "latest"
    #: Run every missed slot within the job's catch-up window, each once: for badges, a
    #: day without its badges would leave its calls unsettled.
    ALL = "all"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the users whose id mod count is index (see db/billing.sql)."""

    index: int
    count: int

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")


#: The one shard of an unsharded billing: every call.
EVERY_CALL = Shard(0, 1)
#: Lock ids of billing shards: BILLING_SHARD_LOCKS + shard index (unsharded: lock 1).
BILLING_SHARD_LOCKS = 1000


@dataclass(frozen=True, kw_only=True)
class Job:
    name: str
    cron: str
    description: str
    #: Second key of the job's advisory lock; unique per job, never reused.
    lock_id: int
    queue: str = "default"
    time_limit: timedelta = timedelta(minutes=5)
    #: Dramatiq retries of a failed run (the same slot, attempt + 1).
    max_retries: int = 0
    missed: MissedRuns = MissedRuns.SKIP
    #: How far back MissedRuns.ALL looks for missed slots.
    catch_up_window: timedelta = timedelta(days=7)
    #: The part of the calls a billing job bills; None for jobs that are not billing.
    shard: Shard | None = None

    def __post_init__(self):
        cron.parse(self.cron)  # refuse a bad spec where it is declared
        if self.time_limit <= timedelta(0):
            raise ValueError(f"{self.name}: time_limit must be positive")
        if self.max_retries < 0:
            raise ValueError(f"{self.name}: max_retries must be >= 0")


def billing_jobs(shards: int) -> list[Job]:
    """The coin_deduction job, or with `shards` > 1 one job per shard: each its own slot
    and advisory lock, so that many workers bill at once and any worker takes over a
    shard whose worker died at its next minute. Replicas configured with different shard
    counts never charge a minute twice (the ledger's unique keys and the calls' row locks
    hold across them); they only wait on each other."""
    if shards < 1:
        raise ValueError("billing needs at least one shard")
    if shards == 1:
        names = {EVERY_CALL: ("coin_deduction", 1)}
    else:
        names = {Shard(i, shards): (f"coin_deduction_{i}", BILLING_SHARD_LOCKS + i)
                 for i in range(shards)}
    return [
        Job(
            name=name,
            cron="* * * * *",
            description=("Charges every owed minute of every ongoing call; ends calls out of"
                         " coins." if shards == 1 else
                         f"Bills shard {shard.index} of {shards}: charges the owed minutes of"
                         " its callers' calls, ends calls out of coins, pays its listeners."),
            lock_id=lock_id,
            queue="billing",
            time_limit=timedelta(seconds=55),
            shard=shard,
        )
        for shard, (name, lock_id) in names.items()
    ]


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        *billing_jobs(1),
        Job(
            name="presence_cleanup",
            cron="*/5 * * * *",
            description="Marks silent users offline and clears expired busy states.",
            lock_id=2,
            time_limit=timedelta(minutes=2),
        ),
        Job(
            name="call_cleanup",
            cron="*/10 * * * *",
            description="Ends and settles calls whose parties went silent or whose time ran out.",
            lock_id=3,
            time_limit=timedelta(minutes=5),
        ),
        Job(
            name="badge_assignment",
            cron="1 0 * * *",
            description="Awards each active listener the day's badge from yesterday's minutes.",
            lock_id=4,
            time_limit=timedelta(minutes=10),
            max_retries=3,
            missed=MissedRuns.ALL,
        ),
        Job(
            name="log_rotation",
            cron="0 1 * * *",
            description="Compresses and expires old log files; prunes old run records.",
            lock_id=5,
            queue="maintenance",
            time_limit=timedelta(minutes=10),
            max_retries=3,
            missed=MissedRuns.LATEST,
        ),
        Job(
            name="catch_up",
            cron="* * * * *",
            description="Runs the latest missed slot of each job whose policy asks for it.",
            lock_id=6,
            time_limit=timedelta(seconds=30),
        ),
    )
}


def use_billing_shards(shards: int) -> None:
    """Replace the billing jobs of JOBS with `shards` of them (BILLING_SHARDS), at the
    entry point, before the actors are declared."""
    others = [job for job in JOBS.values() if job.shard is None]
    JOBS.clear()
    JOBS.update({job.name: job for job in (*billing_jobs(shards), *others)})


def get_job(name: str) -> Job:
    """The job called `name`; KeyError naming the valid jobs otherwise."""
    try:
        return JOBS[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r}; valid jobs: {', '.join(JOBS)}") from None
