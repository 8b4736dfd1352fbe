"""Log files: one per local day in LOG_DIR, appended by every process."""

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from workers.observability.logs import DailyFileHandler

IST = ZoneInfo("Asia/Kolkata")


def record(message: str, when: datetime) -> logging.LogRecord:
    entry = logging.LogRecord("workers.test", logging.INFO, __file__, 1, message, None, None)
    entry.created = when.timestamp()
    return entry


def test_records_go_to_the_file_of_their_local_day(tmp_path):
    handler = DailyFileHandler(tmp_path, IST)
    handler.emit(record("before midnight", datetime(2026, 11, 22, 23, 59, tzinfo=IST)))
    handler.emit(record("after midnight", datetime(2026, 11, 23, 0, 0, tzinfo=IST)))
    handler.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "saathii-workers-2026-11-22.log", "saathii-workers-2026-11-23.log"]
    assert (tmp_path / "saathii-workers-2026-11-22.log").read_text() == "before midnight\n"
    assert (tmp_path / "saathii-workers-2026-11-23.log").read_text() == "after midnight\n"


def test_a_second_process_appends_to_the_same_day_file(tmp_path):
    when = datetime(2026, 11, 22, 12, 0, tzinfo=IST)
    for message in ("first process", "second process"):
        handler = DailyFileHandler(tmp_path, IST)
        handler.emit(record(message, when))
        handler.close()
    assert (tmp_path / "saathii-workers-2026-11-22.log").read_text() \
        == "first process\nsecond process\n"


def test_with_log_dir_set_the_workers_log_to_the_day_file_too(tmp_path, monkeypatch):
    from workers.observability.logs import FILE_LOGGERS, configure_logging
    from workers.settings import Settings

    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    settings = Settings(_env_file=None)
    before = {name: list(logging.getLogger(name).handlers) for name in FILE_LOGGERS}
    formats = {handler: handler.formatter for handler in logging.getLogger().handlers}
    try:
        configure_logging(settings)
        configure_logging(settings)  # idempotent: one handler per logger
        logging.getLogger("workers.test").warning("billing tick done")
        logging.getLogger("dramatiq.test").warning("worker booted")
    finally:
        for handler, kept in formats.items():  # the test runner's own handlers
            handler.setFormatter(kept)
        for name in FILE_LOGGERS:
            logger = logging.getLogger(name)
            for handler in set(logger.handlers) - set(before[name]):
                handler.close()
                logger.removeHandler(handler)
    [path] = (tmp_path / "logs").iterdir()
    assert path.name.startswith("saathii-workers-") and path.name.endswith(".log")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert "billing tick done" in lines[0] and "worker booted" in lines[1]


def finished(status, *, result=None, error=None, reason=None, attempt=1, duration=0.414):
    from workers.engine.hooks import Finished
    from workers.engine.runs import RunOutcome
    from workers.schedule import JOBS

    outcome = RunOutcome(job="coin_deduction", scheduled_for=datetime(2026, 12, 1, 14, 12,
                                                                      tzinfo=ZoneInfo("UTC")),
                         status=status, attempt=attempt, result=result, error=error,
                         reason=reason)
    return Finished(job=JOBS["coin_deduction"], outcome=outcome, trigger="schedule",
                    duration=duration)


TICK = {"calls_seen": 1200, "minutes_charged": 1200, "coins_charged": 12000,
        "calls_ended": {"heartbeat_timeout": 2, "insufficient_coins": 1},
        "money_earned": "180.00", "ended": [{"call": 1}], "note": "text is left out"}


def test_an_outcome_is_one_line_of_key_figures_in_local_time():
    from workers.engine.runs import Status
    from workers.observability.logs import outcome_line

    assert outcome_line(finished(Status.SUCCEEDED, result=TICK), IST) == (
        "coin_deduction 2026-12-01 19:42+05:30 succeeded 0.41 s: calls_seen 1,200,"
        " minutes_charged 1,200, coins_charged 12,000, calls_ended 3, money_earned 180.00,"
        " ended 1")
    assert outcome_line(finished(Status.FAILED, error="RuntimeError: boom", attempt=2), IST) \
        == "coin_deduction 2026-12-01 19:42+05:30 failed 0.41 s (attempt 2): RuntimeError: boom"
    assert outcome_line(finished(Status.DUPLICATE, reason="duplicate: slot already succeeded"),
                        IST) == ("coin_deduction 2026-12-01 19:42+05:30 duplicate: duplicate:"
                                 " slot already succeeded")


def test_idle_runs_and_duplicates_are_debug_and_runs_that_did_something_info():
    from workers.engine.runs import Status
    from workers.observability.logs import outcome_level

    idle = {"calls_seen": 0, "calls_ended": {}, "money_earned": "0.00"}
    assert outcome_level(finished(Status.SUCCEEDED, result=TICK)) == logging.INFO
    assert outcome_level(finished(Status.SUCCEEDED, result=idle)) == logging.DEBUG
    assert outcome_level(finished(Status.DUPLICATE, reason="taken")) == logging.DEBUG
    assert outcome_level(finished(Status.SKIPPED, reason="paused")) == logging.INFO
    assert outcome_level(finished(Status.FAILED, error="boom")) == logging.ERROR


def test_log_format_json_is_one_object_per_line_with_the_run(monkeypatch):
    import json

    from workers.engine.runs import Status
    from workers.observability.logs import RunLog, formatter
    from workers.settings import Settings

    monkeypatch.setenv("LOG_FORMAT", "json")
    settings = Settings(_env_file=None)
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    keep = Keep()
    keep.setFormatter(formatter(settings, None))
    runs = logging.getLogger("workers.runs")
    runs.addHandler(keep)
    try:
        RunLog(IST).run_finished(finished(Status.SUCCEEDED, result=TICK))
    finally:
        runs.removeHandler(keep)
    [entry] = [json.loads(line) for line in lines]
    assert entry["time"].endswith("+05:30")
    assert (entry["level"], entry["logger"], entry["job"], entry["status"]) == (
        "INFO", "workers.runs", "coin_deduction", "succeeded")
    assert entry["slot"] == "2026-12-01T14:12:00+00:00" and entry["duration"] == 0.414
    assert entry["result"] == TICK  # whole
    assert entry["message"].startswith("coin_deduction 2026-12-01 19:42+05:30 succeeded")
