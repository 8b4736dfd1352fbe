"""What the workers tell the API through Redis, always after their database commit.

- The hash `call:{call_id}` is the API's: it makes it when a call starts (user_id,
  listener_id, call_type, start_time, coins_spent) with a 2-hour TTL. While the call is
  ongoing each tick sets its coins_spent, where the hash is there (never making one, nor
  touching the TTL); it is deleted when the call ends.
- JSON events are published on CALL_CHANNEL (a call ended) and PRESENCE_CHANNEL (a
  user's presence or busy state changed), for the API to tell its clients.

A Redis failure here is reported by the run contract and never undoes the money that was
committed; call_cleanup later repairs the call hashes.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from redis import Redis

from workers.engine import redis_client

CALL_CHANNEL = "saathii:calls"
PRESENCE_CHANNEL = "saathii:presence"

SET_COINS_SPENT = Path(__file__).with_name("set_coins_spent.lua")


def call_key(call_id: int) -> str:
    return f"call:{call_id}"


def set_coins_spent(client: Redis, calls: Sequence[tuple[int, int]]) -> int:
    """Each (call_id, coins_spent) into the call's hash where there is one, in one round
    trip; how many hashes were set."""
    if not calls:
        return 0
    return redis_client.script(client, SET_COINS_SPENT)(
        keys=[call_key(call_id) for call_id, _ in calls], args=[coins for _, coins in calls])


def publish(client: Redis, channel: str, events: Iterable[dict]) -> int:
    """Publish each event as JSON on `channel`, in one round trip; how many were sent."""
    with client.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.publish(channel, json.dumps(event, default=str, sort_keys=True))
        return len(pipe.execute())
