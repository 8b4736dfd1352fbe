"""The fault injector: a seeded schedule of production faults, one at a time, in a thread
of the harness (which owns the servers and the worker processes it breaks).

The schedule: the storm's middle (after a short warm-up, before a short cool-down) is cut
into equal slots, one fault each at a seeded random point of its slot; the kinds come in
rounds, each round every kind once in a seeded order, so a run of any length injects
every kind, and a long one every kind about equally often.

The kinds:
- worker_sigkill: SIGKILL a worker's whole process group, half the time one caught with a
  run in progress (its job_runs row 'running'), and start it again a moment later. Its
  unacknowledged and prefetched messages come back once its broker heartbeat is older
  than DRAMATIQ_HEARTBEAT_TIMEOUT_MS; its run is left 'running' until the next claim of
  the job finds its database session gone and marks it abandoned.
- redis_restart_no_persistence: shut Redis down without saving and start it empty, a few
  milliseconds into a logical minute, when that minute's messages are queued or in
  flight: they are lost.
- redis_crash_aof: turn AOF on, then at the same moment of a minute SIGKILL Redis and
  start it again from its AOF: the messages survive, and so do deliveries whose
  acknowledgement did not reach the AOF (they are redelivered).
- postgres_immediate_restart: wait (up to a couple of seconds) for a job's transaction to
  hold its advisory lock, then shut PostgreSQL down immediately (SIGQUIT to the
  postmaster) and start it again: crash recovery; every connection is gone.
- lock_holder_terminated: wait for a backend to hold a job's advisory lock, then
  pg_terminate_backend it, inside one server-side loop so the window is not missed.
- stale_message: send a job a scheduled message for a slot long past: an old logical
  minute as periodiq would send it (scheduled_at), the same as the catch-up would
  (scheduled_for), or one older than PERIODIQ_SKIP_DELAY by the wall clock, which
  periodiq's middleware drops.
- finished_message_replayed: enqueue again, with its own message id, the message of a
  run that succeeded (what an at-least-once redelivery looks like).

A fault that finds nothing to act on in time (no lock held) is counted as missed, not
injected. A server that will not come back is a harness failure (HarnessError).
"""

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import dramatiq
import psycopg
import redis

from chaos import checks
from chaos.clock import wall_minute
from chaos.env import SKIP_DELAY
from chaos.servers import HarnessError
from workers.engine import cron
from workers.engine.jobs import LOCK_NAMESPACE
from workers.schedule import JOBS

log = logging.getLogger("chaos.faults")

KINDS = ("worker_sigkill", "redis_restart_no_persistence", "redis_crash_aof",
         "postgres_immediate_restart", "lock_holder_terminated", "stale_message",
         "finished_message_replayed")
#: No fault in the storm's first and last seconds: the start is for warming up, the end
#: for the last fault to finish before the storm does (seconds).
WARMUP = 3.0
COOLDOWN = 5.0
#: Longest wait for a job's transaction to hold its lock (seconds).
LOCK_WAIT = 5.0
#: How long a crashed PostgreSQL stays down before its restart (seconds, uniform).
POSTGRES_DOWN = (0.2, 1.5)
#: How long a killed worker stays down before its restart (seconds, uniform).
WORKER_DOWN = (0.5, 2.5)
#: How long Redis logs to its AOF before it is killed (seconds, uniform).
AOF_RUNNING = (0.3, 1.5)
#: Redis goes down this long after a logical minute began (real seconds, uniform): the
#: minute's messages are then queued, or delivered and not yet acknowledged.
JUST_AFTER_A_MINUTE = (0.002, 0.03)

#: A server-side loop (no round trip per look): find a backend holding one of the jobs'
#: advisory locks (the two-key form: classid = namespace, objid = job, objsubid 2),
#: optionally terminate it, and report it as a NOTICE "holder <pid> <lock id>".
WATCH_LOCKS = """
DO $$
DECLARE
    holder record;
BEGIN
    FOR attempt IN 1..{tries} LOOP
        SELECT l.pid, l.objid INTO holder FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.classid = {namespace} AND l.objsubid = 2
          AND l.objid > 0 AND l.granted AND l.pid <> pg_backend_pid()
        LIMIT 1;
        IF FOUND THEN
            IF {terminate} THEN
                PERFORM pg_terminate_backend(holder.pid);
            END IF;
            RAISE NOTICE 'holder % %', holder.pid, holder.objid;
            RETURN;
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$
"""

#: Likewise for a run in progress (its row 'running') in one of the worker processes
#: `pids`: NOTICE "run <worker pid> <job>".
WATCH_RUNS = """
DO $$
DECLARE
    run record;
BEGIN
    FOR attempt IN 1..{tries} LOOP
        SELECT r.pid, r.job INTO run FROM job_runs r
        WHERE r.status = 'running' AND r.pid IN ({pids})
          AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid)
        LIMIT 1;
        IF FOUND THEN
            RAISE NOTICE 'run % %', run.pid, run.job;
            RETURN;
        END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$
"""


class Missed(Exception):
    """The fault found nothing to act on in time."""


@dataclass(frozen=True)
class Fault:
    #: Seconds into the storm.
    at: float
    kind: str


def plan(rng: random.Random, *, duration: float, interval: float,
         kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """The storm's faults: at least one of each of `kinds`, one per `interval` seconds if
    that makes more."""
    if not kinds:
        return []
    window = max(duration - WARMUP - COOLDOWN, 1.0)
    count = max(len(kinds), int(window // interval))
    order: list[str] = []
    while len(order) < count:
        order += rng.sample(kinds, len(kinds))
    slot = window / count
    return [Fault(at=WARMUP + (i + rng.uniform(0.0, 0.7)) * slot, kind=kind)
            for i, kind in enumerate(order[:count])]


class Injector(threading.Thread):
    """Works through `faults` against `harness` (its servers, workers and clock)."""

    def __init__(self, harness, faults: list[Fault], rng: random.Random):
        super().__init__(name="fault-injector", daemon=True)
        self.harness, self.faults, self.rng = harness, faults, rng
        self.stopping = threading.Event()
        self.injected: Counter = Counter()
        self.missed: Counter = Counter()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        clock = self.harness.clock
        for fault in self.faults:
            delay = clock.real_start + fault.at - time.time()
            if self.stopping.wait(max(delay, 0.0)):
                return
            try:
                detail = getattr(self, fault.kind)()
                self.injected[fault.kind] += 1
                self.harness.progress(f"fault {fault.kind}: {detail}")
            except HarnessError as error:
                self.error = error
                return
            except Exception as error:  # a fault that could not be injected; carry on
                self.missed[fault.kind] += 1
                self.harness.progress(f"fault {fault.kind} missed: "
                                      f"{type(error).__name__}: {error}")

    # Processes ---------------------------------------------------------------------------

    def worker_sigkill(self) -> str:
        """Half the time, the worker caught running a job (its run's row says 'running');
        otherwise, or when none is caught in time, any worker."""
        workers = self.harness.workers
        victim, during = None, ""
        if self.rng.random() < 0.5:
            groups = {pid: w for w in workers if w.alive() for pid in w.members()}
            found = self.watch(WATCH_RUNS.format(tries=int(LOCK_WAIT * 1000),
                                                 pids=",".join(map(str, groups)) or "0"))
            if found is not None:
                pid, job = found.split()
                victim, during = groups[int(pid)], f" while running {job}"
        with self.harness.workers_lock:
            victim = victim or self.rng.choice([w for w in workers if w.alive()] or workers)
            pid = victim.pid
            victim.kill()
            down = self.rng.uniform(*WORKER_DOWN)
            time.sleep(down)
            victim.start()
        return f"{victim.name} (pid {pid}){during} killed, restarted after {down:.1f} s"

    # Redis -------------------------------------------------------------------------------

    def queued(self) -> int:
        """Messages in the queues (waiting or delivered and not yet acknowledged)."""
        with redis.Redis.from_url(self.harness.servers.redis_url, socket_timeout=5) as client:
            return sum(client.hlen(key) for key in client.scan_iter("dramatiq:*.msgs"))

    def just_after_a_minute(self) -> None:
        """Wait for the next logical minute's messages to be sent and not yet done: a
        few milliseconds past the minute."""
        now = self.harness.clock.now()
        self.harness.clock.sleep_until(now.replace(second=0, microsecond=0)
                                       + timedelta(minutes=1))
        time.sleep(self.rng.uniform(*JUST_AFTER_A_MINUTE))

    def redis_restart_no_persistence(self) -> str:
        self.just_after_a_minute()
        before = self.queued()
        self.harness.servers.restart_redis()
        return f"{before} queued messages before, {self.queued()} after"

    def redis_crash_aof(self) -> str:
        servers = self.harness.servers
        servers.enable_aof()
        time.sleep(self.rng.uniform(*AOF_RUNNING))
        self.just_after_a_minute()
        before = self.queued()
        servers.crash_redis_with_aof()
        return f"{before} queued messages before, {self.queued()} after"

    # PostgreSQL --------------------------------------------------------------------------

    def watch_locks(self, *, terminate: bool, notify=None) -> str | None:
        """'<pid> <lock id>' of a backend found holding a job's lock (terminated if asked),
        or None after LOCK_WAIT. `notify` runs as soon as one is found."""
        return self.watch(WATCH_LOCKS.format(tries=int(LOCK_WAIT * 1000),
                                             namespace=LOCK_NAMESPACE,
                                             terminate="true" if terminate else "false"),
                          notify=notify)

    def watch(self, sql: str, *, notify=None) -> str | None:
        """Run a watching loop; what its NOTICE reported (past its first word), if any."""
        found: list[str] = []

        def on_notice(diagnostic) -> None:
            found.append(diagnostic.message_primary.split(" ", 1)[1])
            if notify is not None:
                notify()

        try:
            with psycopg.connect(self.harness.servers.database_url, autocommit=True,
                                 connect_timeout=5) as conn:
                conn.add_notice_handler(on_notice)
                conn.execute(sql)
        except psycopg.OperationalError:
            if not found:  # `notify` (a crash) ends this connection too; anything else is
                raise      # an error
        return found[0] if found else None

    def postgres_immediate_restart(self) -> str:
        servers = self.harness.servers
        holder = self.watch_locks(terminate=False, notify=servers.crash_postgres)
        if holder is None:
            servers.crash_postgres()
        down = self.rng.uniform(*POSTGRES_DOWN)
        time.sleep(down)
        servers.start_postgres()
        during = f"while backend {holder.split()[0]} held the lock of " \
                 f"{job_of(holder)}" if holder else "with no job transaction seen"
        return f"immediate shutdown {during}; down {down:.1f} s"

    def lock_holder_terminated(self) -> str:
        holder = self.watch_locks(terminate=True)
        if holder is None:
            raise Missed(f"no job held its lock within {LOCK_WAIT} s")
        return f"terminated backend {holder.split()[0]} holding the lock of {job_of(holder)}"

    # Messages ----------------------------------------------------------------------------

    def stale_message(self) -> str:
        clock = self.harness.clock
        job = JOBS[self.rng.choice(checks.billing_job_names() * 3
                                   + ["call_cleanup", "presence_cleanup"])]
        actor = dramatiq.get_broker().get_actor(job.name)
        variant = self.rng.choice(["old_slot", "old_slot_enqueued", "older_than_skip_delay"])
        if variant == "older_than_skip_delay":
            slot = wall_minute() - timedelta(seconds=SKIP_DELAY + self.rng.randint(60, 3600))
        else:
            now = clock.now()
            slots = list(cron.instants(job.cron, self.harness.timezone, clock.start,
                                       max(clock.start + timedelta(minutes=1),
                                           now - timedelta(minutes=2))))
            slot = self.rng.choice(slots) if slots else clock.start
        at = slot.astimezone(self.harness.timezone).isoformat()
        if variant == "old_slot_enqueued":
            actor.send_with_options(kwargs={"scheduled_for": at})
        else:
            actor.send_with_options(scheduled_at=at)
        return f"{job.name} {variant} {at}"

    def finished_message_replayed(self) -> str:
        with psycopg.connect(self.harness.servers.database_url, autocommit=True,
                             connect_timeout=5) as conn:
            runs = conn.execute(
                "SELECT job, scheduled_for, trigger, message_id FROM job_runs"
                " WHERE status = 'succeeded' AND message_id IS NOT NULL"
                " ORDER BY finished_at DESC LIMIT 20").fetchall()
        if not runs:
            raise Missed("no finished run to replay")
        job, slot, trigger, message_id = self.rng.choice(runs)
        at = slot.astimezone(self.harness.timezone).isoformat()
        by_schedule = trigger == "schedule"
        message = dramatiq.Message(
            queue_name=JOBS[job].queue, actor_name=job, args=(),
            kwargs={} if by_schedule else {"scheduled_for": at},
            options={"scheduled_at": at} if by_schedule else {}, message_id=message_id)
        dramatiq.get_broker().enqueue(message)
        return f"{job} {at} (message {message_id}, {trigger})"


def job_of(holder: str) -> str:
    lock_id = int(holder.split()[1])
    return next((job.name for job in JOBS.values() if job.lock_id == lock_id), str(lock_id))
