"""The fast clock, and the schedulers that run on it.

Logical time is a pure function of the real clock, shared by every process of a run:
it reads `start` (a whole minute) when the real clock reads `real_start`, and runs
60 / `minute_seconds` times faster. The schedulers, the traffic generator and the fault
injector each compute it from the same four numbers (passed on their command lines), so
they agree without talking to each other. Anything a process reads from it is never
earlier than a slot a scheduler has already sent: a scheduler sends minute m once the
clock reads m, and the clock only moves forward.

A scheduler (`python -m chaos.clock --name A <clock>`) stands in for periodiq, whose own
clock is the wall clock: for each logical minute m it sends every job of the job table
due at m (workers.engine.cron.instants in APP_TIMEZONE) with `scheduled_at` = m, as periodiq
does. Two of them run, so every slot arrives twice. An error sending (Redis restarting)
is retried until the next minute is due, then that minute is given up: the missed-run
policy and the next tick are what recover it, as in production. When the clock reaches
`end` it prints what it sent as one JSON line and exits.
"""

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

log = logging.getLogger("chaos.clock")

#: Pause between attempts to send a message while Redis is unreachable (real seconds).
SEND_RETRY_PAUSE = 0.2


@dataclass(frozen=True)
class LogicalClock:
    #: Logical time at `real_start`: a whole minute, aware.
    start: datetime
    #: time.time() when logical time read `start`.
    real_start: float
    #: Real seconds per logical minute.
    minute_seconds: float
    #: Length of the storm in logical minutes: the schedulers send [start, end).
    minutes: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)

    @property
    def speed(self) -> float:
        """Logical seconds per real second."""
        return 60 / self.minute_seconds

    def now(self) -> datetime:
        return self.at(time.time())

    def at(self, real: float) -> datetime:
        """Logical time when the real clock reads `real`."""
        return self.start + timedelta(seconds=(real - self.real_start) * self.speed)

    def real(self, logical: datetime) -> float:
        """time.time() when logical time reads `logical`."""
        return self.real_start + (logical - self.start).total_seconds() / self.speed

    def sleep_until(self, logical: datetime) -> None:
        delay = self.real(logical) - time.time()
        if delay > 0:
            time.sleep(delay)

    def minute_slots(self) -> list[datetime]:
        return [self.start + timedelta(minutes=k) for k in range(self.minutes)]

    def argv(self) -> list[str]:
        return ["--start", self.start.isoformat(), "--real-start", repr(self.real_start),
                "--minute-seconds", repr(self.minute_seconds), "--minutes", str(self.minutes)]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--start", type=datetime.fromisoformat, required=True)
        parser.add_argument("--real-start", type=float, required=True)
        parser.add_argument("--minute-seconds", type=float, required=True)
        parser.add_argument("--minutes", type=int, required=True)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LogicalClock":
        return cls(start=args.start, real_start=args.real_start,
                   minute_seconds=args.minute_seconds, minutes=args.minutes)


def wall_minute() -> datetime:
    """The wall clock's current minute, UTC."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


def due_jobs(clock: LogicalClock, timezone) -> dict[datetime, list[str]]:
    """For each logical minute of the storm, the jobs of the job table due then."""
    from workers.engine import cron
    from workers.schedule import JOBS

    due: dict[datetime, list[str]] = {minute: [] for minute in clock.minute_slots()}
    for job in JOBS.values():
        for instant in cron.instants(job.cron, timezone, clock.start, clock.end):
            due[instant].append(job.name)
    return due


def schedule(clock: LogicalClock, name: str) -> dict:
    """Send every slot of the storm as it comes due; what was sent, by job."""
    import workers
    from workers.settings import load_settings

    broker, timezone = workers.broker, load_settings().timezone
    sent, lost = Counter(), Counter()
    for minute, jobs in due_jobs(clock, timezone).items():
        clock.sleep_until(minute)
        scheduled_at = minute.astimezone(timezone).isoformat()
        for job in jobs:
            if send(broker.get_actor(job), scheduled_at, give_up=minute + timedelta(minutes=1),
                    clock=clock):
                sent[job] += 1
            else:
                lost[job] += 1
                log.warning("%s: gave up sending %s %s", name, job, scheduled_at)
    return {"scheduler": name, "sent": dict(sent), "lost": dict(lost)}


def send(actor, scheduled_at: str, *, give_up: datetime, clock: LogicalClock) -> bool:
    """Send one scheduled message, retrying while the broker fails, until `give_up`."""
    while True:
        try:
            actor.send_with_options(scheduled_at=scheduled_at)
            return True
        except Exception as error:  # redis-py's errors, or Dramatiq's wrapping of them
            if clock.now() >= give_up:
                return False
            log.info("send %s %s failed (%s); retrying", actor.actor_name, scheduled_at,
                     type(error).__name__)
            time.sleep(SEND_RETRY_PAUSE)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.clock")
    parser.add_argument("--name", required=True)
    LogicalClock.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(schedule(LogicalClock.from_args(args), args.name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
