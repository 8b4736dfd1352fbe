"""Logging, for our own processes only (`configure_logging` runs where one boots, never
on import): readable lines on stdout and, when LOG_DIR is set, in a file per local day
(saathii-workers-YYYY-MM-DD.log), which log_rotation later compresses and expires.

Every run's outcome is one line of the logger "workers.runs" (RunLog, a subscriber of the
run hooks), with the result's key figures, for a person to scan:

    coin_deduction 2026-12-01 19:42+05:30 succeeded 0.41 s: calls_seen 1,200,
        minutes_charged 1,200, coins_charged 12,000, calls_ended 3, money_earned 180.00

ERROR with the traceback for a failed attempt; INFO for a run that did something (a
figure not zero) or was skipped; DEBUG for an idle run and a duplicate (with two
schedulers, every slot has one). A WARNING for a run near its time limit or an
after-commit step that failed. Times are in APP_TIMEZONE with their offset, in every line
of our processes (`configure_logging` gives the handlers Dramatiq's and periodiq's command
lines set up the same clock). LOG_FORMAT=json writes one JSON object per line instead:
time, level, logger, message, and for a run's outcome its job, slot, status, duration and
whole result.
"""

import json
import logging
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

from workers.engine.hooks import Finished, Subscriber
from workers.engine.runs import Status
from workers.settings import Settings

FILE_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
LOG_FILE_PREFIX = "saathii-workers-"
#: Loggers whose records go to the log file (the root logger belongs to the CLI in use).
FILE_LOGGERS = ("workers", "dramatiq", "periodiq")
#: The logger of the runs' outcomes.
RUN_LOGGER = "workers.runs"

run_log = logging.getLogger(RUN_LOGGER)


def local_minute(instant: datetime, timezone: ZoneInfo | None) -> str:
    """A slot as lines show it: "2026-12-01 19:42+05:30" (APP_TIMEZONE, with its offset)."""
    local = instant.astimezone(timezone) if timezone else instant
    return local.isoformat(sep=" ", timespec="minutes")


def _number(value: object) -> int | Decimal | None:
    """A result's value as a number, if it is one (money comes as a decimal string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def key_figures(result: dict | None) -> list[tuple[str, object]]:
    """The figures of a result worth a line: its numbers, counts by kind summed (calls_ended
    by reason), lists counted; anything else is left to `history --json`."""
    figures = []
    for name, value in (result or {}).items():
        if isinstance(value, dict):
            counts = [_number(v) for v in value.values()]
            if all(count is not None for count in counts):
                figures.append((name, sum(counts)))
        elif isinstance(value, list):
            figures.append((name, len(value)))
        elif (number := _number(value)) is not None:
            figures.append((name, number))
    return figures


def figures_text(result: dict | None) -> str:
    def shown(value) -> str:
        return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
    return ", ".join(f"{name} {shown(value)}" for name, value in key_figures(result))


def did_something(result: dict | None) -> bool:
    return any(value for _, value in key_figures(result))


def outcome_line(event: Finished, timezone: ZoneInfo | None) -> str:
    outcome = event.outcome
    head = f"{outcome.job} {local_minute(outcome.scheduled_for, timezone)} {outcome.status}"
    if outcome.status is not Status.DUPLICATE:
        head += f" {event.duration:.2f} s"
    if outcome.attempt and outcome.attempt > 1:
        head += f" (attempt {outcome.attempt})"
    detail = outcome.error or outcome.reason or figures_text(outcome.result)
    return f"{head}: {detail}" if detail else head


def outcome_level(event: Finished) -> int:
    status = event.outcome.status
    if status is Status.FAILED:
        return logging.ERROR
    if status is Status.SKIPPED or (status is Status.SUCCEEDED
                                    and did_something(event.outcome.result)):
        return logging.INFO
    return logging.DEBUG


class RunLog(Subscriber):
    """The run hooks' logging subscriber: a line per outcome."""

    def __init__(self, timezone: ZoneInfo | None = None):
        self.timezone = timezone

    def run_finished(self, event: Finished) -> None:
        outcome = event.outcome
        run = {"job": outcome.job, "slot": outcome.scheduled_for.isoformat(),
               "status": str(outcome.status), "duration": round(event.duration, 3),
               "attempt": outcome.attempt, "result": outcome.result,
               "error": outcome.error, "reason": outcome.reason}
        run_log.log(outcome_level(event), outcome_line(event, self.timezone),
                    exc_info=outcome.exception if outcome.status is Status.FAILED else None,
                    extra={"run": run})
        slot = local_minute(outcome.scheduled_for, self.timezone)
        for error in outcome.after_commit_errors:
            run_log.warning("%s %s: after-commit step failed; a later run repairs it",
                            outcome.job, slot, exc_info=error)
        if event.near_limit:
            run_log.warning(event.near_limit_message())


class LocalTimeFormatter(logging.Formatter):
    """A line's time in APP_TIMEZONE with its offset: 2026-12-01 19:42:07.123+05:30."""

    def __init__(self, fmt: str | None, timezone: ZoneInfo):
        super().__init__(fmt)
        self.timezone = timezone

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        when = datetime.fromtimestamp(record.created, self.timezone)
        return when.isoformat(sep=" ", timespec="milliseconds")


class JsonFormatter(LocalTimeFormatter):
    """One JSON object per line (LOG_FORMAT=json)."""

    def __init__(self, timezone: ZoneInfo):
        super().__init__(None, timezone)

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "process": record.process,
                 "message": record.getMessage()}
        run = getattr(record, "run", None)
        if run:
            entry.update({key: value for key, value in run.items() if value is not None})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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


def formatter(settings: Settings, fmt: str | None) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(settings.timezone)
    return LocalTimeFormatter(fmt, settings.timezone)


def configure_logging(settings: Settings) -> None:
    """Level for our loggers; one clock (and LOG_FORMAT) for every handler of this process,
    the ones its command line (dramatiq, periodiq) set up included; the daily file when
    LOG_DIR is set. Idempotent."""
    for handler in logging.getLogger().handlers:
        fmt = handler.formatter._fmt if handler.formatter else None
        if not isinstance(handler.formatter, LocalTimeFormatter):
            handler.setFormatter(formatter(settings, fmt))
    for name in FILE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(settings.log_level)
        if settings.log_dir and not any(
                isinstance(h, DailyFileHandler) for h in logger.handlers):
            handler = DailyFileHandler(settings.log_dir, settings.timezone)
            handler.setFormatter(formatter(settings, FILE_FORMAT))
            logger.addHandler(handler)
