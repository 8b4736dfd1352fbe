"""The Redis broker's queues as an operator sees them: depth, delayed, unacknowledged and
dead-lettered messages, and the dead letters themselves (list, retry, purge).

Dramatiq's Redis broker keeps, per queue Q (namespace `dramatiq`): the list `Q` of waiting
message ids and the hash `Q.msgs` of every message not yet acknowledged (waiting or
delivered); `Q.DQ` and `Q.DQ.msgs` the same for delayed messages (retries waiting for their
backoff); `Q.XQ`, a sorted set of dead-lettered ids scored by when they died (ms), and
`Q.XQ.msgs` their bodies. Dead letters expire after the broker's dead_message_ttl (7 days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
from redis import Redis

NAMESPACE = "dramatiq"


def _key(queue: str, suffix: str = "") -> str:
    return f"{NAMESPACE}:{queue}{suffix}"


def _decode(data: bytes) -> dramatiq.Message | None:
    try:
        return dramatiq.Message.decode(data)
    except Exception:  # noqa: BLE001 - a body we cannot read is shown as such
        return None


def _age(millis: float | None, now: datetime) -> float | None:
    return None if millis is None else max(0.0, now.timestamp() - millis / 1000)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    #: Messages waiting to be delivered.
    waiting: int
    #: Delivered to a worker and not yet acknowledged (running, or held by a dead worker).
    unacked: int
    #: Retries waiting for their backoff.
    delayed: int
    dead: int
    #: Seconds since the oldest waiting message was enqueued; None when none waits.
    oldest_age: float | None

    def as_json(self) -> dict:
        return {"queue": self.queue, "waiting": self.waiting, "unacked": self.unacked,
                "delayed": self.delayed, "dead": self.dead,
                "oldest_age_s": None if self.oldest_age is None else round(self.oldest_age, 1)}


def queue_stats(redis: Redis, queues: list[str], now: datetime | None = None) -> list[QueueStats]:
    """The figures of each queue, read in one round trip (plus one per non-empty queue for
    its oldest message)."""
    now = now or datetime.now(UTC)
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(_key(queue))
        pipe.hlen(_key(queue, ".msgs"))
        pipe.hlen(_key(queue, ".DQ.msgs"))
        pipe.zcard(_key(queue, ".XQ"))
        pipe.lindex(_key(queue), 0)
    figures = pipe.execute()
    stats = []
    for i, queue in enumerate(queues):
        waiting, unacked_or_waiting, delayed, dead, first = figures[5 * i:5 * i + 5]
        oldest = None
        if first is not None:
            body = redis.hget(_key(queue, ".msgs"), first)
            message = _decode(body) if body else None
            oldest = _age(message.message_timestamp, now) if message else None
        stats.append(QueueStats(queue, waiting, max(0, unacked_or_waiting - waiting), delayed,
                                dead, oldest))
    return stats


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    #: The broker's id of this copy (the key in Q.XQ); retry and purge name it.
    redis_id: str
    message: dramatiq.Message | None
    died_at: datetime

    @property
    def message_id(self) -> str:
        return self.message.message_id if self.message else self.redis_id

    @property
    def actor(self) -> str:
        return self.message.actor_name if self.message else "(unreadable)"

    @property
    def slot(self) -> str | None:
        """The slot the message asked for, as it carried it."""
        if self.message is None:
            return None
        return (self.message.kwargs.get("scheduled_for")
                or self.message.options.get("scheduled_at"))

    @property
    def traceback_tail(self) -> str | None:
        """The last line of the traceback Dramatiq kept, if it kept one: only a retried
        message's copy carries the traceback of the attempt before."""
        traceback = (self.message.options.get("traceback") if self.message else None) or ""
        lines = [line for line in traceback.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else None

    def age(self, now: datetime) -> float:
        return max(0.0, (now - self.died_at).total_seconds())


def dead_letters(redis: Redis, queues: list[str]) -> list[DeadLetter]:
    """Every dead letter of `queues`, oldest first."""
    found = []
    for queue in queues:
        entries = redis.zrange(_key(queue, ".XQ"), 0, -1, withscores=True)
        if not entries:
            continue
        bodies = redis.hmget(_key(queue, ".XQ.msgs"), [redis_id for redis_id, _ in entries])
        for (redis_id, score), body in zip(entries, bodies, strict=True):
            found.append(DeadLetter(
                queue, redis_id.decode(), _decode(body) if body else None,
                datetime.fromtimestamp(score / 1000, UTC)))
    return sorted(found, key=lambda letter: letter.died_at)


def find(letters: list[DeadLetter], wanted: str) -> DeadLetter:
    """The dead letter whose message id (or broker id) is `wanted` or starts with it;
    LookupError saying why not."""
    matches = [letter for letter in letters
               if wanted in (letter.message_id, letter.redis_id)
               or letter.message_id.startswith(wanted)]
    if not matches:
        raise LookupError(f"no dead letter {wanted!r}")
    if len(matches) > 1:
        raise LookupError(f"{wanted!r} names {len(matches)} dead letters: give more of the id")
    return matches[0]


def remove(redis: Redis, letters: list[DeadLetter]) -> int:
    """Delete `letters` from their dead-letter queues; how many were there."""
    pipe = redis.pipeline(transaction=True)
    for letter in letters:
        pipe.zrem(_key(letter.queue, ".XQ"), letter.redis_id)
        pipe.hdel(_key(letter.queue, ".XQ.msgs"), letter.redis_id)
    return sum(pipe.execute()[::2])


def older_than(letters: list[DeadLetter], age: timedelta | None,
               now: datetime | None = None) -> list[DeadLetter]:
    if age is None:
        return letters
    now = now or datetime.now(UTC)
    return [letter for letter in letters if letter.age(now) >= age.total_seconds()]
