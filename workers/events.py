"""What the workers tell the API through Redis, always after their database commit.

- The hash `call:{call_id}` holds the call's coins_spent while it is ongoing; it is
  deleted when the call ends.
- JSON events are published on CALL_CHANNEL (a call ended) and PRESENCE_CHANNEL (a
  user's presence or busy state changed), for the API to tell its clients.

A Redis failure here is logged by the run contract and never undoes the money that was
committed; call_cleanup later repairs the call hashes.
"""

import json
from collections.abc import Iterable, Sequence

from redis import Redis

CALL_CHANNEL = "saathii:calls"
PRESENCE_CHANNEL = "saathii:presence"


#: HSET coins_spent of each hash KEYS[i] to ARGV[i]: a batch of calls in one command. A
#: pipeline of HSETs costs the client a command each to pack and a reply each to parse:
#: 2.5x slower (200,000 calls: 2.5 s against 1.0 s).
_SET_COINS_SPENT = """
for i, key in ipairs(KEYS) do
    redis.call('HSET', key, 'coins_spent', ARGV[i])
end
return #KEYS
"""


def call_key(call_id: int) -> str:
    return f"call:{call_id}"


def set_coins_spent(client: Redis, calls: Sequence[tuple[int, int]]) -> None:
    """Each (call_id, coins_spent) into the call's hash, in one round trip."""
    if calls:
        client.register_script(_SET_COINS_SPENT)(
            keys=[call_key(call_id) for call_id, _ in calls],
            args=[coins for _, coins in calls])


def publish(client: Redis, channel: str, events: Iterable[dict]) -> int:
    """Publish each event as JSON on `channel`, in one round trip; how many were sent."""
    with client.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.publish(channel, json.dumps(event, default=str, sort_keys=True))
        return len(pipe.execute())
