"""The run contract's one extension point: subscribers hear of every run's moments.

- claimed: a run took its slot (job_runs row 'running', attempt n), before any work;
- started: it holds the job's lock and its work begins (a paused or locked-out run never
  starts);
- finished: every outcome, with its duration and result: succeeded, failed, skipped
  (paused, locked), and duplicate (a slot taken already: nothing was claimed).

Logging, Sentry (its events and cron monitors) and the process's heartbeat subscribe here.
A subscriber is told in the thread that ran the job (`started` inside the work's
transaction, so it must not block): what it does cannot change the run, and its failure is
logged and goes no further. Runs from a worker,
the CLI and tests pass through the same hooks, whichever subscribers their process has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.engine.jobs import Job
    from workers.engine.runs import RunOutcome

log = logging.getLogger(__name__)

#: A run whose work took more than this share of its job's time limit is near it: it
#: succeeded, but growth (more calls, say) would soon make it fail at the limit.
NEAR_LIMIT = 0.5


@dataclass(frozen=True)
class Claimed:
    job: Job
    scheduled_for: datetime
    attempt: int
    trigger: str
    run_id: int


@dataclass(frozen=True)
class Started:
    job: Job
    scheduled_for: datetime
    attempt: int
    trigger: str
    run_id: int


@dataclass(frozen=True)
class Finished:
    job: Job
    outcome: RunOutcome
    trigger: str
    #: Seconds from the claim to the end of its transaction (the work committed or rolled
    #: back), after-commit steps not included: what the job's time limit bounds. 0 for a
    #: duplicate, which claimed nothing.
    duration: float

    @property
    def scheduled_for(self) -> datetime:
        return self.outcome.scheduled_for

    @property
    def limit_share(self) -> float:
        """The share of the job's time limit the run took."""
        return self.duration / self.job.time_limit.total_seconds()

    @property
    def near_limit(self) -> bool:
        return self.outcome.status == "succeeded" and self.limit_share > NEAR_LIMIT

    def near_limit_message(self) -> str:
        limit = self.job.time_limit.total_seconds()
        hint = f" {self.job.near_limit_hint}" if self.job.near_limit_hint else ""
        return (f"{self.job.name} {self.scheduled_for.isoformat()} took"
                f" {self.duration:.1f} s, {self.limit_share:.0%} of its {limit:g} s time"
                f" limit.{hint}")


class Subscriber:
    """What a subscriber may implement; each defaults to nothing."""

    def run_claimed(self, event: Claimed) -> None:
        pass

    def run_started(self, event: Started) -> None:
        pass

    def run_finished(self, event: Finished) -> None:
        pass


class Hooks:
    """The subscribers of one process (or one test), told in the order they subscribed."""

    def __init__(self, *subscribers: Subscriber):
        self.subscribers = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def claimed(self, event: Claimed) -> None:
        for subscriber in self.subscribers:
            self._tell(subscriber.run_claimed, event)

    def started(self, event: Started) -> None:
        for subscriber in self.subscribers:
            self._tell(subscriber.run_started, event)

    def finished(self, event: Finished) -> None:
        for subscriber in self.subscribers:
            self._tell(subscriber.run_finished, event)

    @staticmethod
    def _tell(hook, event: Claimed | Started | Finished) -> None:
        try:
            hook(event)
        except Exception:
            log.exception("run hook %s failed on %s %s", hook.__qualname__, event.job.name,
                          event.scheduled_for.isoformat())
