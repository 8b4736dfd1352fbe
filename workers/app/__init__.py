"""What the Saathii app calls: the public programmatic API of saathii-workers.

Every function takes a connection the caller owns (psycopg 3, dict rows or not) and the
logical time where the rule needs one; none reads the environment or boots anything, so
the Saathii API can import and call them in its own process. The Redis contract (the call
hashes and the event channels) is what the workers write for the API to read.

This list is pinned by tests/unit/test_exported_members.py and the README's API section.
"""

from workers.app.calls import end_call
from workers.app.events import CALL_CHANNEL, PRESENCE_CHANNEL, call_key
from workers.app.wallets import get_user_coin_balance, update_user_coin_balance

__all__ = [
    "CALL_CHANNEL",
    "PRESENCE_CHANNEL",
    "call_key",
    "end_call",
    "get_user_coin_balance",
    "update_user_coin_balance",
]
