"""The job table, row by row: each job's actor is declared from its row (queue, time
limit, retries, periodic schedule), its work and parameters resolve, and its code and SQL
are named as the job. A job added to the table is checked here without a line more."""

import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from workers.actors import TIME_LIMIT_MARGIN_MS, declare_actors
from workers.engine import cron
from workers.engine.broker import create_broker
from workers.engine.jobs import Job, JobParams, check_table
from workers.errors import InvalidParams
from workers.schedule import JOBS, table
from workers.settings import BrokerSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
KOLKATA = ZoneInfo("Asia/Kolkata")
#: Every job of the table, the billing shards included (BILLING_SHARDS=2).
ROWS = {**table(1), **table(2)}
SETTINGS = Settings(_env_file=None).model_dump()
#: The actors as the package declares them, on a broker of their own (it connects to
#: nothing): the package's own broker has this process's table only.
ACTORS = declare_actors(ROWS.values(), create_broker(BrokerSettings(_env_file=None)))
QUEUES = {"billing", "default", "maintenance"}


def base_name(job: Job) -> str:
    """The job's own name, without a shard's suffix."""
    return job.name.rsplit("_", 1)[0] if job.sharded else job.name


@pytest.mark.parametrize("job", ROWS.values(), ids=list(ROWS))
def test_each_jobs_actor_is_declared_from_its_row(job):
    actor = ACTORS[job.name]

    assert (actor.actor_name, actor.queue_name) == (job.name, job.queue)
    assert job.queue in QUEUES  # the queues docker/ and `make run` consume
    # Dramatiq's limit comes after the database's statement_timeout, which rolls back.
    assert actor.options["time_limit"] == job.time_limit / timedelta(milliseconds=1) \
        + TIME_LIMIT_MARGIN_MS
    assert actor.options["max_retries"] == job.max_retries
    periodic = actor.options["periodic"]
    periodic._timezone = KOLKATA  # what booting the scheduler would answer
    start = datetime(2026, 11, 22, tzinfo=UTC)
    fires = [periodic.next_valid_date(start)]
    for _ in range(3):
        fires.append(periodic.next_valid_date(fires[-1]))
    assert fires == list(cron.instants(job.cron, KOLKATA, start + timedelta(seconds=60),
                                       fires[-1] + timedelta(seconds=1)))[:4]
    # A run ends (or is cut off) before the job's next slot comes.
    assert job.time_limit < min(b - a for a, b in zip(fires, fires[1:], strict=False))


@pytest.mark.parametrize("job", ROWS.values(), ids=list(ROWS))
def test_each_jobs_work_and_parameters_resolve_and_validate(job):
    work = job.perform()
    assert list(inspect.signature(work).parameters) == ["conn", "run"]
    model = job.params_model()
    assert issubclass(model, JobParams)
    params = job.parameters(SETTINGS)
    for name in model.model_fields:  # a parameter named as a setting defaults to it
        if name in SETTINGS:
            assert getattr(params, name) == SETTINGS[name], name
    with pytest.raises(InvalidParams, match="unknown parameter 'no_such_parameter'"):
        job.parameters(SETTINGS, {"no_such_parameter": 1})


@pytest.mark.parametrize("job", ROWS.values(), ids=list(ROWS))
def test_each_job_is_one_module_and_one_sql_file_named_as_the_job(job):
    module = job.work.partition(":")[0]
    assert module in (f"workers.jobs.{base_name(job)}", f"workers.engine.{base_name(job)}")
    assert (ROOT / "db" / f"{base_name(job)}.sql").is_file()
    assert job.params is None or job.params.startswith(f"{module}:")


def test_the_whole_table_checks_out_and_each_lock_is_its_own():
    for shards in (1, 2, 64):
        check_table(table(shards).values(), SETTINGS)
    locks = [job.lock_id for job in ROWS.values()]
    assert len(set(locks)) == len(locks)


def test_a_row_whose_work_does_not_resolve_fails_the_check():
    row = Job(name="ghost", work="workers.jobs.ghost:ghost", cron="* * * * *",
              description="", lock_id=999)
    with pytest.raises(ModuleNotFoundError, match="workers.jobs.ghost"):
        check_table([*JOBS.values(), row], SETTINGS)


def test_a_setting_a_jobs_model_refuses_fails_the_check():
    with pytest.raises(InvalidParams, match="heartbeat_timeout_seconds"):
        check_table(JOBS.values(), {**SETTINGS, "heartbeat_timeout_seconds": 1})
