"""What a row of the job table is (workers.schedule holds the rows), and reading it.

A row names the job's work and its parameters by reference ("module:attribute"), so the
table can be read (by the broker's actors, periodiq, the CLI, the catch-up) without
importing every job's code; `Job.work()` and `Job.params()` resolve them when a run needs
them, once per process, and `check_table` resolves all of them when a process boots.
"""

import functools
import importlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from workers.engine import cron
from workers.errors import InvalidParams

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
    """Shard `index` of `count`: the users whose id mod count is index (db/coin_deduction.sql)."""

    index: int
    count: int

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")


#: The one shard of an unsharded job: everything.
EVERYTHING = Shard(0, 1)


class JobParams(BaseModel):
    """A job's parameters. A field defaults to the setting of the same name when there is
    one (heartbeat_timeout_seconds to HEARTBEAT_TIMEOUT_SECONDS), else to its own default;
    job_settings.overrides replace them per job. Unknown names are refused: a misspelt
    override must fail the run, not be ignored. Values are read as JSON, strictly (90 is
    a number of seconds, "90" and true are not), since that is what overrides are."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @classmethod
    def resolve(cls, job: str, settings: Mapping[str, Any],
                overrides: Mapping[str, Any] | None = None) -> Self:
        """The parameters of a run of `job`: the settings' values, then `overrides`;
        InvalidParams naming the first bad one."""
        defaults = {name: settings[name] for name in cls.model_fields if name in settings}
        try:
            return cls.model_validate_json(json.dumps({**defaults, **(overrides or {})},
                                                      default=str))
        except ValidationError as error:
            raise InvalidParams(f"{job}: {describe(error)}") from None


class NoParams(JobParams):
    """The parameters of a job that has none."""


def describe(error: ValidationError) -> str:
    """The first problem of a validation error, on one line: where, why, what was given."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "parameters"
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown parameter {where!r}"
    return f"{where}: {reason} (got {first.get('input')!r})"


@functools.cache
def resolve(reference: str) -> Any:
    """The object a "package.module:attribute" reference names."""
    module, _, attribute = reference.partition(":")
    if not attribute:
        raise ValueError(f"{reference!r} is not a 'module:attribute' reference")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True, kw_only=True)
class Job:
    name: str
    #: The work: "module:function", called as function(conn, run) in the run's transaction.
    work: str
    cron: str
    description: str
    #: Second key of the job's advisory lock; unique per job, never reused.
    lock_id: int
    #: The parameters: "module:JobParams subclass"; None for a job that has none.
    params: str | None = None
    queue: str = "default"
    time_limit: timedelta = timedelta(minutes=5)
    #: Dramatiq retries of a failed run (the same slot, attempt + 1).
    max_retries: int = 0
    missed: MissedRuns = MissedRuns.SKIP
    #: How far back MissedRuns.ALL looks for missed slots.
    catch_up_window: timedelta = timedelta(days=7)
    #: A job that can be split into shards (see `shards`): the first lock id of its
    #: shards, each shard's lock id being this + its index. None: never sharded.
    shard_locks: int | None = None
    #: The part of the job's data this job works on; EVERYTHING unless sharded.
    shard: Shard = field(default=EVERYTHING)
    #: What to do about a run near its time limit, told with the warning (hooks.NEAR_LIMIT).
    near_limit_hint: str = ""
    #: How long past a slot before its run is overdue (health); None: a minute for an
    #: every-minute job, five minutes for any other.
    overdue_grace: timedelta | None = None

    def __post_init__(self):
        cron.parse(self.cron)  # refuse a bad spec where it is declared
        if self.time_limit <= timedelta(0):
            raise ValueError(f"{self.name}: time_limit must be positive")
        if self.max_retries < 0:
            raise ValueError(f"{self.name}: max_retries must be >= 0")
        if self.overdue_grace is not None and self.overdue_grace <= timedelta(0):
            raise ValueError(f"{self.name}: overdue_grace must be positive")

    def perform(self) -> Callable:
        """The work function."""
        return resolve(self.work)

    def params_model(self) -> type[JobParams]:
        return NoParams if self.params is None else resolve(self.params)

    def parameters(self, settings: Mapping[str, Any],
                   overrides: Mapping[str, Any] | None = None) -> JobParams:
        """The parameters of a run: see JobParams.resolve."""
        return self.params_model().resolve(self.name, settings, overrides)

    @property
    def grace(self) -> timedelta:
        """How long past a slot before its run is overdue."""
        if self.overdue_grace is not None:
            return self.overdue_grace
        every_minute = self.cron.split() == ["*"] * 5
        return timedelta(minutes=1 if every_minute else 5)

    @property
    def sharded(self) -> bool:
        return self.shard.count > 1


def shards(job: Job, count: int) -> list[Job]:
    """`job`, or with `count` > 1 one job per shard, `NAME_0` .. `NAME_{count-1}`: each its
    own slot, message and advisory lock, so that many workers run it at once and any worker
    takes over a shard whose worker died at its next slot."""
    if count < 1:
        raise ValueError(f"{job.name} needs at least one shard")
    if count == 1:
        return [job]
    if job.shard_locks is None:
        raise ValueError(f"{job.name} cannot be sharded")
    return [replace(job, name=f"{job.name}_{index}", lock_id=job.shard_locks + index,
                    shard=Shard(index, count),
                    description=f"Shard {index} of {count}: {job.description}")
            for index in range(count)]


def check_table(jobs: Iterable[Job], settings: Mapping[str, Any]) -> None:
    """Every row's work resolves, its parameters validate under the settings, and no two
    rows share a name or a lock: ValueError (InvalidParams) naming the first that fails."""
    names, locks = set(), set()
    for job in jobs:
        if job.name in names or job.lock_id in locks:
            raise ValueError(f"{job.name}: its name or lock id {job.lock_id} is taken")
        names.add(job.name)
        locks.add(job.lock_id)
        if not callable(job.perform()):
            raise ValueError(f"{job.name}: its work {job.work!r} is not callable")
        if not issubclass(job.params_model(), JobParams):
            raise ValueError(f"{job.name}: its params {job.params!r} are not JobParams")
        job.parameters(settings)
