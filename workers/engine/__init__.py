"""The engine: how any job runs. The run contract and its hooks, the job table's rows and
their controls, the missed-run catch-up, cron and periodiq's schedule, the broker and the
actors' runtime, process boot, and the PostgreSQL and Redis boundaries."""
