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
    try:
        configure_logging(settings)
        configure_logging(settings)  # idempotent: one handler per logger
        logging.getLogger("workers.test").warning("billing tick done")
        logging.getLogger("dramatiq.test").warning("worker booted")
    finally:
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
