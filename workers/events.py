"""What the workers tell the API through Redis, always after their database commit.

- The hash `call:{call_id}` holds the call's coins_spent while it is ongoing; it is
  deleted when the call ends.
- JSON events are published on CALL_CHANNEL (a call ended) and PRESENCE_CHANNEL (a
  user's presence or busy state changed), for the API to tell its clients.

A Redis failure here is logged by the run contract and never undoes the money that was
committed; call_cleanup later repairs the call hashes.
"""

import json
from collections.abc import Iterable

from redis import Redis

CALL_CHANNEL = "saathii:calls"
PRESENCE_CHANNEL = "saathii:presence"


def call_key(call_id: int) -> str:
    return f"call:{call_id}"


def publish(client: Redis, channel: str, events: Iterable[dict]) -> int:
    """Publish each event as JSON on `channel`, in one round trip; how many were sent."""
    with client.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.publish(channel, json.dumps(event, default=str, sort_keys=True))
        return len(pipe.execute())
