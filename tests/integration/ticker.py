"""Billing ticks in a process of its own, straight through workers.jobs.coin_deduction and
so without the job's advisory lock: what the replica tests race against each other.

    python ticker.py ISO_TIME [ISO_TIME ...]     one tick per time, in order
    python ticker.py --forever ISO_TIME          the same tick again and again, until killed
    python ticker.py --shard I/K ISO_TIME ...    ticks of billing shard I of K only
"""

import sys
from datetime import datetime, timedelta

from workers.engine.db import connect
from workers.engine.jobs import EVERYTHING, Shard
from workers.jobs.coin_deduction import deduct_per_minute_coins
from workers.settings import Settings

HEARTBEAT = timedelta(seconds=120)


def main(args: list[str]) -> None:
    forever = args[:1] == ["--forever"]
    args = args[forever:]
    shard = EVERYTHING
    if args[:1] == ["--shard"]:
        shard = Shard(*map(int, args[1].split("/")))
        args = args[2:]
    times = [datetime.fromisoformat(text) for text in args]
    settings = Settings()
    with connect(settings.database_url, autocommit=True) as conn:
        print("ready", flush=True)
        while True:
            for at in times:
                deduct_per_minute_coins(conn, at, timezone=settings.timezone,
                                        shard=shard)
            if not forever:
                return


if __name__ == "__main__":
    main(sys.argv[1:])
