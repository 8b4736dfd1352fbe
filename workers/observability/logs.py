"""Logging, for our own processes only (`configure_logging` runs where one boots, never
on import): readable lines on stdout and, when LOG_DIR is set, in a file per local day
(saathii-workers-YYYY-MM-DD.log), which log_rotation later compresses and expires.

Every run's outcome is one line of the logger "workers.runs" (RunLog, a subscriber of the
run hooks): INFO, or ERROR with the traceback for a failed attempt, and a WARNING for a
run near its time limit or an after-commit step that failed.
"""

import logging
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from workers.engine.hooks import Finished, Subscriber
from workers.engine.runs import Status
from workers.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
LOG_FILE_PREFIX = "saathii-workers-"
#: Loggers whose records go to the log file (the root logger belongs to the CLI in use).
FILE_LOGGERS = ("workers", "dramatiq", "periodiq")
#: The logger of the runs' outcomes.
RUN_LOGGER = "workers.runs"

run_log = logging.getLogger(RUN_LOGGER)


class RunLog(Subscriber):
    """The run hooks' logging subscriber: a line per outcome."""

    def run_finished(self, event: Finished) -> None:
        outcome = event.outcome
        line = f"{outcome.job} {outcome.scheduled_for.isoformat()}: {outcome.as_json()}"
        if outcome.status is Status.FAILED:
            run_log.error(line, exc_info=outcome.exception)
        else:
            run_log.info(line)
        for error in outcome.after_commit_errors:
            run_log.warning("%s %s: after-commit step failed; a later run repairs it",
                            outcome.job, outcome.scheduled_for.isoformat(), exc_info=error)
        if event.near_limit:
            run_log.warning(event.near_limit_message())


class DailyFileHandler(logging.Handler):
    """Appends to LOG_DIR/saathii-workers-<local date>.log, switching file at midnight.
    Several processes may append to the same file: each record is one write()."""

    def __init__(self, directory: Path, timezone: ZoneInfo):
        super().__init__()
        self.directory = directory
        self.timezone = timezone
        self._date = None
        self._file = None

    def path_for(self, when: datetime) -> Path:
        return self.directory / f"{LOG_FILE_PREFIX}{when.date().isoformat()}.log"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            when = datetime.fromtimestamp(record.created, self.timezone)
            if when.date() != self._date:
                self.close_file()
                self.directory.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path_for(when), "a", encoding="utf-8", buffering=1)
                self._date = when.date()
            self._file.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.close_file()
        super().close()


def configure_logging(settings: Settings) -> None:
    """Level for our loggers; the daily file when LOG_DIR is set. Idempotent."""
    for name in FILE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(settings.log_level)
        if settings.log_dir and not any(
                isinstance(h, DailyFileHandler) for h in logger.handlers):
            handler = DailyFileHandler(settings.log_dir, settings.timezone)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(handler)
