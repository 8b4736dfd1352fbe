"""The actors through a real Dramatiq worker on the session's Redis: what reaches them as
messages (periodiq's, duplicates, retries, garbage) and what they make of it."""

from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
import redis

import workers
from workers.actors import job_actor
from workers.engine import runtime
from workers.engine.jobs import Job

#: How long a test waits for the worker to drain a queue (milliseconds).
DRAIN_TIMEOUT_MS = 30_000


class Flaky:
    """Fails its first `failures` calls, then succeeds."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def __call__(self, conn, run):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"transient failure {self.calls}")
        return {"calls": self.calls}


FLAKY = Flaky(failures=1)
FLAKY_JOB = Job(name="flaky_test_job", work=f"{__name__}:FLAKY", cron="* * * * *",
                description="a test job", lock_id=900, queue="tests", max_retries=2)
flaky_actor = job_actor(FLAKY_JOB, workers.broker)


@pytest.fixture
def worker(db):
    worker = dramatiq.Worker(workers.broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()
    # a Worker adds its own middleware to the broker; the next test's worker adds another
    workers.broker.middleware[:] = [m for m in workers.broker.middleware
                                    if getattr(m, "worker", None) is not worker]


def drain(queue: str) -> None:
    workers.broker.join(queue, timeout=DRAIN_TIMEOUT_MS)


def periodiq_time(instant: datetime) -> str:
    """scheduled_at as periodiq writes it: str() of a pendulum time, local offset."""
    return instant.astimezone(runtime.current().settings.timezone).isoformat()


def runs(conn, job: str):
    return conn.execute("SELECT * FROM job_runs WHERE job = %s ORDER BY scheduled_for",
                        [job]).fetchall()


def dead_letters(queue: str) -> set[str]:
    with redis.Redis.from_url(runtime.current().settings.redis_url) as client:
        return {key.decode() for key in client.zrange(f"dramatiq:{queue}.XQ", 0, -1)}


def test_duplicate_messages_for_a_slot_run_once(conn, worker):
    actor = workers.broker.get_actor("coin_deduction")
    now = datetime.now(UTC)
    for _ in range(3):  # three scheduler replicas
        actor.send_with_options(scheduled_at=periodiq_time(now))
    actor.send_with_options(kwargs={"scheduled_for": now.isoformat()})  # a manual enqueue
    drain("billing")

    [run] = runs(conn, "coin_deduction")
    assert (run["status"], run["attempt"]) == ("succeeded", 1)
    assert run["scheduled_for"] == now.replace(second=0, microsecond=0)
    assert run["message_id"]


def test_a_failed_run_is_retried_as_the_same_run(conn, worker):
    FLAKY.calls = 0
    slot = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    flaky_actor.send_with_options(kwargs={"scheduled_for": slot.isoformat()})
    drain("tests")

    [run] = runs(conn, FLAKY_JOB.name)
    assert (run["status"], run["attempt"], run["trigger"]) == ("succeeded", 2, "retry")
    assert FLAKY.calls == 2


@pytest.mark.parametrize("args, kwargs, options", [
    ((1,), {}, {}),
    ((), {"bogus": 1}, {}),
    ((), {"scheduled_for": "yesterday"}, {}),
    ((), {"scheduled_for": "2026-11-22T10:00:00"}, {}),  # no timezone
    ((), {"scheduled_for": 10**30}, {}),
    ((), {}, {"scheduled_at": "not a time"}),
], ids=["positional", "unknown field", "not a time", "naive time", "huge number",
        "bad scheduled_at"])
def test_an_invalid_message_is_dead_lettered_and_writes_nothing(conn, worker, args, kwargs,
                                                                options):
    message = workers.broker.get_actor("presence_cleanup").send_with_options(
        args=args, kwargs=kwargs, **options)
    drain("default")

    assert message.options["redis_message_id"] in dead_letters("default")
    assert runs(conn, "presence_cleanup") == []


def test_a_stale_scheduled_message_is_dropped_and_left_to_the_catch_up(conn, worker):
    stale = datetime.now(UTC) - timedelta(
        seconds=runtime.current().settings.periodiq_skip_delay + 60)
    message = workers.broker.get_actor("presence_cleanup").send_with_options(
        scheduled_at=periodiq_time(stale))
    drain("default")

    assert runs(conn, "presence_cleanup") == []
    assert message.options["redis_message_id"] not in dead_letters("default")


def test_the_catch_up_actor_enqueues_missed_slots_that_the_workers_then_run(conn, worker):
    workers.broker.get_actor("catch_up").send_with_options(
        kwargs={"scheduled_for": datetime.now(UTC).isoformat()})
    drain("default")
    drain("maintenance")
    drain("default")

    for name in ("badge_assignment", "log_rotation"):
        [run] = runs(conn, name)
        assert (run["status"], run["trigger"]) == ("succeeded", "enqueued")
