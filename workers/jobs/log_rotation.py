"""log_rotation, daily at 01:00 local: the log files, then the run records.

The log files are LOG_DIR/saathii-workers-YYYY-MM-DD.log, one per local day (workers.logs).
Counted in local days before the run's local date (its logical time, never the wall clock):

    today, yesterday         left as they are: today's is being written, yesterday's may
                             still get a late record around midnight
    2 .. retention days ago  compressed to .log.gz (content, mode and mtime kept)
    older than retention     deleted, .log and .log.gz alike

Only files named like that are ever touched. File operations are not transactional, so each
step leaves a state the next run completes: a .log is first compressed to .log.gz.tmp, made
durable, renamed over .log.gz, and only then unlinked. A crash leaves either a stale .tmp
(overwritten or removed) or a .log beside a .log.gz that already holds it (the .log is
unlinked). A .log.gz that holds something else keeps it: the .log is added to it.
"""

import gzip
import logging
import os
import re
import shutil
import stat
import zlib
from datetime import date, timedelta
from pathlib import Path

import psycopg
from pydantic import Field

from workers.engine.db import queries
from workers.engine.jobs import JobParams
from workers.engine.runs import RunContext
from workers.errors import UnreadableArchive
from workers.observability.logs import LOG_FILE_PREFIX
from workers.settings import DEFAULT_JOB_RUNS_RETENTION_DAYS, DEFAULT_LOG_RETENTION_DAYS

log = logging.getLogger(__name__)

#: The log files of the run's local date and of the day before are never touched (days).
UNTOUCHED_DAYS = 2
#: Read and write size when copying files (bytes).
CHUNK_SIZE = 1024 * 1024

_OWN_FILE = re.compile(
    rf"{re.escape(LOG_FILE_PREFIX)}(?P<day>\d{{4}}-\d{{2}}-\d{{2}})"
    r"(?P<suffix>\.log(?:\.gz(?:\.tmp)?)?)", re.ASCII)
LOG, ARCHIVE, PARTIAL = ".log", ".log.gz", ".log.gz.tmp"


class Params(JobParams):
    #: Where the log files are (LOG_DIR); None: no files, only the run records.
    log_dir: Path | None = None
    #: Compressed log files are deleted after this many days (LOG_RETENTION_DAYS).
    log_retention_days: int = Field(DEFAULT_LOG_RETENTION_DAYS, ge=1)
    #: job_runs rows are deleted this many days after their slot (JOB_RUNS_RETENTION_DAYS).
    job_runs_retention_days: int = Field(DEFAULT_JOB_RUNS_RETENTION_DAYS, ge=1)


def log_rotation(conn: psycopg.Connection, run: RunContext) -> dict:
    """Compress and expire the log files, then prune old run records."""
    params = run.params
    # Files first, the DELETE last: a failure among the files rolls back nothing worth
    # keeping (the retry redoes both), and a failing DELETE leaves every file in a state
    # the retry finds complete. It also holds the DELETE's row locks the shortest time.
    compressed = deleted = 0
    if params.log_dir is not None:
        compressed, deleted = rotate_logs(params.log_dir, run.local_time.date(),
                                          params.log_retention_days)
    pruned = conn.execute(queries("log_rotation.sql")["prune_job_runs"], {
        "scheduled_for": run.scheduled_for,
        "retention_days": params.job_runs_retention_days}).rowcount
    return {"compressed": compressed, "deleted": deleted, "job_runs_pruned": pruned,
            "log_dir": None if params.log_dir is None else str(params.log_dir)}


def rotate_logs(directory: Path, today: date, retention_days: int) -> tuple[int, int]:
    """Compress and expire the log files in `directory` as of the local date `today`;
    returns how many .log files were compressed and how many .log/.log.gz were deleted."""
    compressed = deleted = 0
    last_compressed = today - timedelta(days=UNTOUCHED_DAYS)
    oldest_kept = today - timedelta(days=retention_days)
    for day, suffixes in sorted(_own_files(directory).items()):
        if day > last_compressed:
            continue
        path = {suffix: directory / f"{LOG_FILE_PREFIX}{day.isoformat()}{suffix}"
                for suffix in (LOG, ARCHIVE, PARTIAL)}
        if day < oldest_kept:
            for suffix in (LOG, ARCHIVE):
                if suffix in suffixes:
                    path[suffix].unlink()
                    log.info("deleted %s: past %d days of retention", path[suffix].name,
                             retention_days)
                    deleted += 1
        elif LOG in suffixes:
            _compress(path[LOG], path[ARCHIVE], path[PARTIAL])
            log.info("compressed %s", path[LOG].name)
            compressed += 1
        if PARTIAL in suffixes:  # a crashed run's: its .log is compressed by now, or gone
            path[PARTIAL].unlink(missing_ok=True)
    return compressed, deleted


def _own_files(directory: Path) -> dict[date, set[str]]:
    """The suffixes present per day among this project's regular files in `directory`."""
    days: dict[date, set[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _OWN_FILE.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                day = date.fromisoformat(match["day"])
            except ValueError:  # shaped like a date but not one: not our file
                continue
            days.setdefault(day, set()).add(match["suffix"])
    return days


def _compress(source: Path, archive: Path, partial: Path) -> None:
    """Move `source` into `archive` (gzip) through `partial`, then unlink `source`."""
    if archive.exists():
        if _ends_with(archive, source):
            # A run crashed between renaming the archive in place and unlinking the .log.
            source.unlink()
            return
        log.warning("%s exists and lacks %s: adding it as another gzip member",
                    archive.name, source.name)
    info = source.stat()
    try:
        with open(partial, "wb") as raw:
            if archive.exists():
                # A record came after the day was compressed: keep what the archive holds,
                # append the rest as a second gzip member (gunzip reads members in order).
                with open(archive, "rb") as earlier:
                    shutil.copyfileobj(earlier, raw, CHUNK_SIZE)
            with open(source, "rb") as text, gzip.GzipFile(
                    filename=source.name, mode="wb", fileobj=raw,
                    mtime=int(info.st_mtime)) as packed:
                shutil.copyfileobj(text, packed, CHUNK_SIZE)
            raw.flush()
            os.fsync(raw.fileno())  # the content is on disk before the rename publishes it
        os.chmod(partial, stat.S_IMODE(info.st_mode))
        os.utime(partial, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(partial, archive)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_dir(archive.parent)  # the rename is durable before the .log goes
    source.unlink()


def _ends_with(archive: Path, source: Path) -> bool:
    """Whether the archive's uncompressed content ends with the whole of `source`."""
    size = source.stat().st_size
    try:
        total = _unpacked_size(archive)
        if total < size:
            return False
        with gzip.open(archive, "rb") as unpacked, open(source, "rb") as text:
            unpacked.seek(total - size)
            while chunk := text.read(CHUNK_SIZE):
                if unpacked.read(len(chunk)) != chunk:
                    return False
            return True
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UnreadableArchive(f"{archive} is not readable gzip ({error}); {source.name} "
                                "left uncompressed until it is repaired or removed") from error


def _unpacked_size(archive: Path) -> int:
    total = 0
    with gzip.open(archive, "rb") as unpacked:
        while chunk := unpacked.read(CHUNK_SIZE):
            total += len(chunk)
    return total


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

