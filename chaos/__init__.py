"""`make chaos`: the workers under a storm of production faults, judged by the ledger.

    python -m chaos --duration SECONDS --workers N --seed S [--minute-seconds X] [--keep]
                    [--start-at HH:MM] [--kinds all|none|KIND,...] [--fault-interval S]

(`make chaos DURATION=600 WORKERS=3 SEED=1`; `--start-at 22:00` puts local midnight and
the daily badges inside the storm; `--kinds` narrows the faults to some kinds.)

One run, in a temporary directory of its own:

1. Servers (chaos.servers). A real PostgreSQL 16 and Redis 6.2 (workers.embedded) on
   free TCP ports; the schema applied; a population of customers (with wallets and coin
   purchases) and listeners (a few with badges) made as the API makes it (chaos.traffic).
2. Processes. N `dramatiq workers --processes 1 --threads 2`, two fast-clock schedulers
   (chaos.clock) and one traffic generator (chaos.traffic), each a process in a session of
   its own, logging to a file of its own.
3. The storm. Logical time runs `60 / minute_seconds` times faster than real time, from the
   wall clock's current minute (so no logical slot is older than the wall clock by more
   than a minute, and periodiq's stale-message middleware drops nothing unless asked to).
   Both schedulers send every job due in each logical minute with that minute as
   `scheduled_at`, so every slot arrives twice; the traffic generator starts, ends and pays
   for calls on the same clock. A fault injector (chaos.faults) works through a seeded
   schedule: SIGKILLed workers, Redis restarted without persistence and crashed with AOF,
   PostgreSQL shut down immediately mid-transaction, the advisory-lock holder's backend
   terminated, stale messages and replays of finished ones.
4. Settling. Faults, traffic and schedulers stop; both servers are up and every worker
   alive; the queues drain; a final round at the end of logical time runs through the
   real CLI (`python -m workers run-task ... --as-of END`): catch_up first (the missed-run
   policy; the workers then run what it asked for, such as a day's badges, which
   settlement waits for), then the billing job (coin_deduction, or each of its shards
   with --shards K: the final tick), call_cleanup and
   presence_cleanup; the queues drain again and the workers stop gracefully.
5. Checks (chaos.checks, SQL in chaos/checks.sql), from the database alone: every
   (call, minute) charged at most once and every owed minute charged; balances equal the
   ledger and never went negative; each call's coins equal its spends, each ended call
   settled once at its listener's badge rate; per job and slot at most one success and no
   run left running without an owner.

The JSON summary is the last line of stdout; progress goes to stderr. Exit status: 0 no
violation, 1 violations, 2 the harness itself failed (a server that would not start, a
worker that would not boot, Ctrl-C).
"""
