"""Prometheus metrics, read from PostgreSQL and Redis at scrape time.

`python -m workers metrics` serves them at /metrics (METRICS_HOST:METRICS_PORT). Nothing
is counted in this process: every figure is read from the database (the runs' counters,
kept by a trigger as attempts end; the last runs; overdue and paused jobs; the heartbeats;
the ongoing calls) and from Redis (the queues), so one scraper sees every worker of every
host, and a restart of this process loses nothing. A server that cannot be reached is a
gauge at 0 (saathii_database_up, saathii_redis_up), not a failed scrape: the rest is still
served.
"""

import logging
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from workers.engine import liveness, queues, redis_client
from workers.engine.db import connect, queries
from workers.engine.jobs import Job
from workers.errors import Unavailable
from workers.observability.overdue import State, job_states
from workers.settings import Settings

log = logging.getLogger(__name__)

#: The statuses an attempt ends with: each job has a series of each from the start, so
#: that a rate() sees the first failure.
ENDED = ("succeeded", "failed", "skipped", "abandoned")
#: The attempts whose durations the histogram holds: those that did the work.
TIMED = ("succeeded", "failed")
CALL_TYPES = ("audio", "video")


class SaathiiCollector(Collector):
    """The registry's one collector: every family, read afresh at each scrape."""

    def __init__(self, settings: Settings, jobs: Iterable[Job],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.settings, self.jobs, self.clock = settings, list(jobs), clock

    def collect(self) -> Iterator[Metric]:
        began = time.monotonic()
        now = self.clock()
        yield from database_families(self.settings, self.jobs, now)
        yield from redis_families(self.settings.redis_url, self.jobs, now)
        yield GaugeMetricFamily("saathii_scrape_duration_seconds",
                                "How long this scrape took to read its figures",
                                value=time.monotonic() - began)


def registry(settings: Settings, jobs: Iterable[Job], **kwargs) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SaathiiCollector(settings, jobs, **kwargs))
    return registry


def render(settings: Settings, jobs: Iterable[Job], now: datetime | None = None) -> str:
    """One scrape in the text format, as of `now`."""
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    return generate_latest(registry(settings, jobs, clock=clock)).decode()


def _up(name: str, server: str, up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, f"1 when {server} answered this scrape", value=int(up))


def database_families(settings: Settings, jobs: list[Job], now: datetime) -> list[Metric]:
    try:
        with connect(settings.database_url, autocommit=True) as conn:
            families = job_families(conn, jobs, now, settings)
            families += process_families(
                conn, timedelta(seconds=settings.process_stale_seconds))
            families += call_families(conn)
    except (Unavailable, psycopg.Error) as error:
        log.warning("metrics: PostgreSQL: %s", str(error).splitlines()[0])
        return [_up("saathii_database_up", "PostgreSQL", False)]
    return [_up("saathii_database_up", "PostgreSQL", True), *families]


def job_families(conn, jobs: list[Job], now: datetime, settings: Settings) -> list[Metric]:
    sql = queries("metrics.sql")
    names = [job.name for job in jobs]
    runs = CounterMetricFamily("saathii_job_runs", "Attempts that ended, by status",
                               labels=["job", "status"])
    counts = defaultdict(int, {(job, status): 0 for job in names for status in ENDED})
    buckets = defaultdict(lambda: defaultdict(int))  # job -> le -> attempts
    seconds = defaultdict(float)
    for row in conn.execute(sql["run_totals"]):
        counts[row["job"], row["status"]] += row["runs"]
        if row["status"] in TIMED:
            buckets[row["job"]][row["le"]] += row["runs"]
            seconds[row["job"]] += row["seconds"]
    for (job, status), count in sorted(counts.items()):
        runs.add_metric([job, status], count)

    durations = HistogramMetricFamily(
        "saathii_job_run_duration_seconds",
        "How long the attempts that did the work (succeeded or failed) took",
        labels=["job"])
    bounds = conn.execute("SELECT run_duration_buckets() AS b").fetchone()["b"]
    for job in sorted(set(names) | set(buckets)):
        cumulative, observed = 0, buckets[job]
        points = []
        for bound in [*bounds, float("inf")]:
            cumulative += observed.get(bound, 0)
            points.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        durations.add_metric([job], points, sum_value=seconds[job])

    figures = CounterMetricFamily(
        "saathii_job_figure", "The sum of each number in a job's succeeded results",
        labels=["job", "figure"])
    totals = defaultdict(float)
    for row in conn.execute(sql["run_figures"]):
        figures.add_metric([row["job"], row["figure"]], float(row["total"]))
        totals[row["figure"]] += float(row["total"])
    coins = CounterMetricFamily("saathii_coins_charged", "Coins the billing runs charged",
                                value=totals["coins_charged"])
    money = CounterMetricFamily("saathii_money_earned_rupees",
                                "Rupees the billing runs paid the listeners",
                                value=totals["money_earned"])

    success = GaugeMetricFamily("saathii_job_last_success_timestamp_seconds",
                                "When the job's last success ended (Unix time)",
                                labels=["job"])
    lag = GaugeMetricFamily("saathii_job_lag_seconds",
                            "How late the run of the job's latest slot started",
                            labels=["job"])
    for row in conn.execute(sql["last_runs"], {"jobs": names}):
        if row["last_success"] is not None:
            success.add_metric([row["job"]], row["last_success"].timestamp())
        if row["lag_seconds"] is not None:
            lag.add_metric([row["job"]], float(row["lag_seconds"]))

    states = job_states(conn, jobs, now, settings.timezone)
    flags = {state: GaugeMetricFamily(f"saathii_job_{state.name.lower()}",
                                      f"1 when the job is {state}", labels=["job"])
             for state in (State.OVERDUE, State.OVERRUNNING, State.PAUSED)}
    for name, state in states.items():
        for flag, family in flags.items():
            family.add_metric([name], int(state.state is flag))
    return [runs, durations, figures, coins, money, success, lag, *flags.values()]


def process_families(conn, stale_after: timedelta) -> list[Metric]:
    alive = GaugeMetricFamily("saathii_processes_alive",
                              "Processes whose heartbeat is fresh, by kind", labels=["kind"])
    counts = dict.fromkeys(liveness.KINDS, 0)
    for process in liveness.processes(conn, stale_after):
        if process["alive"]:
            counts[process["kind"]] = counts.get(process["kind"], 0) + 1
    for kind, count in counts.items():
        alive.add_metric([kind], count)
    return [alive]


def call_families(conn) -> list[Metric]:
    ongoing = GaugeMetricFamily("saathii_ongoing_calls", "Calls in progress, by type",
                                labels=["call_type"])
    counts = dict.fromkeys(CALL_TYPES, 0)
    for row in conn.execute(queries("metrics.sql")["ongoing_calls"]):
        counts[row["call_type"]] = row["calls"]
    for call_type, count in counts.items():
        ongoing.add_metric([call_type], count)
    return [ongoing]


def redis_families(url: str, jobs: list[Job], now: datetime) -> list[Metric]:
    try:
        with (redis_client.client(url) as client,
              redis_client.failures_as_ours(redis_client.describe(url))):
            stats = queues.queue_stats(client, sorted({job.queue for job in jobs}), now)
    except Unavailable as error:
        log.warning("metrics: Redis: %s", error)
        return [_up("saathii_redis_up", "Redis", False)]
    families = {
        "waiting": GaugeMetricFamily("saathii_queue_depth", "Messages waiting, by queue",
                                     labels=["queue"]),
        "unacked": GaugeMetricFamily("saathii_queue_unacked",
                                     "Messages delivered and not yet acknowledged",
                                     labels=["queue"]),
        "delayed": GaugeMetricFamily("saathii_queue_delayed",
                                     "Retries waiting for their backoff", labels=["queue"]),
        "dead": GaugeMetricFamily("saathii_dead_letters", "Dead-lettered messages, by queue",
                                  labels=["queue"]),
        "oldest_age": GaugeMetricFamily("saathii_queue_oldest_age_seconds",
                                        "Age of the oldest waiting message (0: none waits)",
                                        labels=["queue"]),
    }
    for queue in stats:
        for figure, family in families.items():
            family.add_metric([queue.queue], getattr(queue, figure) or 0)
    return [_up("saathii_redis_up", "Redis", True), *families.values()]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # a scrape every 15 s is not news
        log.debug("metrics: " + format, *args)


def only_metrics(app):
    """The exposition app at /metrics; 404 elsewhere."""
    def routed(environ, start_response):
        if environ.get("PATH_INFO", "/") in ("/metrics", "/metrics/"):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"saathii-workers: the metrics are at /metrics\n"]
    return routed


def serve(settings: Settings, jobs: Iterable[Job]) -> int:
    """Serve /metrics until SIGTERM or Ctrl-C."""
    app = only_metrics(make_wsgi_app(registry(settings, jobs)))
    server = make_server(settings.metrics_host, settings.metrics_port, app,
                         ThreadingWSGIServer, handler_class=_QuietHandler)
    signal.signal(signal.SIGTERM, _stop)
    log.info("metrics at http://%s:%d/metrics", settings.metrics_host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _stop(signum, frame):
    raise KeyboardInterrupt
