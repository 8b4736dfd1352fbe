"""log_rotation on a real PostgreSQL and a temporary LOG_DIR, with explicit logical times."""

import gzip
import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from psycopg.types.json import Jsonb

from workers.engine.runs import RunOptions, Status, run_job
from workers.schedule import JOBS

IST = ZoneInfo("Asia/Kolkata")
JOB = JOBS["log_rotation"]
SLOT = datetime(2026, 11, 22, 1, 0, tzinfo=IST)  # the daily slot: local date 2026-11-22
TODAY = SLOT.date()


def options(log_dir: Path | None, **params) -> RunOptions:
    return RunOptions(
        timezone=IST, lock_timeout_ms=2000, abandon_grace=timedelta(seconds=60),
        settings={"log_dir": log_dir, "log_retention_days": 14, "job_runs_retention_days": 30,
                  **params})


def rotate(conn, log_dir: Path | None, at: datetime = SLOT, **params) -> dict:
    outcome = run_job(conn, JOB, at, options(log_dir, **params))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


def name(day: date, suffix: str = ".log") -> str:
    return f"saathii-workers-{day.isoformat()}{suffix}"


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


def write(path: Path, content: bytes, *, day: date | None = None) -> Path:
    """A file as the day's logger left it: written during `day` (its mtime at local noon)."""
    path.write_bytes(content)
    if day is not None:
        noon = datetime.combine(day, time(12), IST).timestamp()
        os.utime(path, (noon, noon))
    return path


def write_log(directory: Path, day: date, content: bytes | None = None) -> Path:
    return write(directory / name(day), content or f"records of {day}\n".encode(), day=day)


def write_archive(directory: Path, day: date, content: bytes | None = None) -> Path:
    return write(directory / name(day, ".log.gz"),
                 gzip.compress(content or f"records of {day}\n".encode()), day=day)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's content and mtime, by name."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in directory.iterdir() if p.is_file() and not p.is_symlink()}


def gunzip(path: Path) -> bytes:
    with gzip.open(path, "rb") as unpacked:
        return unpacked.read()


def test_todays_and_yesterdays_logs_are_untouched_and_older_ones_compressed(conn, tmp_path):
    originals = {n: write_log(tmp_path, days_ago(n), f"line of day -{n}\n".encode() * 500)
                 for n in range(5)}
    originals[3].chmod(0o640)
    recent = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in originals.items()}

    result = rotate(conn, tmp_path)

    assert result == {"compressed": 3, "deleted": 0, "job_runs_pruned": 0,
                      "log_dir": str(tmp_path)}
    for n in (0, 1):
        path = tmp_path / name(days_ago(n))
        assert (path.read_bytes(), path.stat().st_mtime_ns) == recent[n]
    for n in (2, 3, 4):
        archive = tmp_path / name(days_ago(n), ".log.gz")
        content, mtime = recent[n]
        assert gunzip(archive) == content
        assert archive.stat().st_mtime_ns == mtime
    assert (tmp_path / name(days_ago(3), ".log.gz")).stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name(days_ago(0)), name(days_ago(1))]
        + [name(days_ago(n), ".log.gz") for n in (2, 3, 4)])


def test_archives_past_retention_are_deleted_and_the_one_at_the_edge_is_kept(conn, tmp_path):
    edge = write_archive(tmp_path, days_ago(14))
    for n in (15, 40):
        write_archive(tmp_path, days_ago(n))
    write_log(tmp_path, days_ago(20))  # never compressed (the job was down): past retention

    result = rotate(conn, tmp_path)

    assert (result["compressed"], result["deleted"]) == (0, 3)
    assert [p.name for p in tmp_path.iterdir()] == [edge.name]


def test_retention_comes_from_the_params(conn, tmp_path):
    write_archive(tmp_path, days_ago(3))
    kept = write_archive(tmp_path, days_ago(2))

    assert rotate(conn, tmp_path, log_retention_days=2)["deleted"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [kept.name]


def test_foreign_files_are_never_touched(conn, tmp_path):
    old = days_ago(60).isoformat()
    for foreign in (f"saathii-workers-{old}.log.1", f"other-{old}.log",
                    f"saathii-workers-{old}.txt", f"saathii-workers-{old}.log.gz.bak",
                    f"saathii-workers-{old}.LOG", f"x-saathii-workers-{old}.log",
                    "saathii-workers-2026-13-01.log", "saathii-workers-latest.log"):
        write(tmp_path / foreign, b"not ours\n", day=days_ago(60))
    (tmp_path / name(days_ago(61))).mkdir()
    target = write(tmp_path / "elsewhere.log", b"a symlink's target\n")
    (tmp_path / name(days_ago(62))).symlink_to(target)
    before = snapshot(tmp_path)

    result = rotate(conn, tmp_path)

    assert (result["compressed"], result["deleted"]) == (0, 0)
    assert snapshot(tmp_path) == before
    assert (tmp_path / name(days_ago(61))).is_dir()
    assert (tmp_path / name(days_ago(62))).is_symlink()


def test_a_second_run_does_nothing(conn, tmp_path):
    for n in (0, 1, 2, 5, 20):
        write_log(tmp_path, days_ago(n))
    write_archive(tmp_path, days_ago(16))
    first = rotate(conn, tmp_path)
    assert (first["compressed"], first["deleted"]) == (2, 2)
    after_first = snapshot(tmp_path)

    again = rotate(conn, tmp_path, at=SLOT + timedelta(minutes=1))

    assert (again["compressed"], again["deleted"]) == (0, 0)
    assert snapshot(tmp_path) == after_first


def test_a_crashed_runs_partial_archive_is_redone_or_removed(conn, tmp_path):
    log = write_log(tmp_path, days_ago(3), b"the whole day\n")
    write(tmp_path / name(days_ago(3), ".log.gz.tmp"), b"\x1f\x8b half written")
    stray = write(tmp_path / name(days_ago(4), ".log.gz.tmp"), b"\x1f\x8b its log is gone")
    recent = write(tmp_path / name(days_ago(1), ".log.gz.tmp"), b"yesterday's: not touched")

    result = rotate(conn, tmp_path)

    assert result["compressed"] == 1
    assert gunzip(tmp_path / name(days_ago(3), ".log.gz")) == b"the whole day\n"
    assert not log.exists() and not stray.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name(days_ago(3), ".log.gz"), recent.name])


def test_a_log_beside_the_archive_a_crashed_run_finished_is_not_compressed_twice(conn, tmp_path):
    log = write_log(tmp_path, days_ago(3), b"the whole day\n" * 100)
    archive = write_archive(tmp_path, days_ago(3), b"the whole day\n" * 100)

    result = rotate(conn, tmp_path)

    assert result["compressed"] == 1
    assert not log.exists()
    assert gunzip(archive) == b"the whole day\n" * 100


def test_a_late_log_beside_an_archive_holding_other_records_is_appended_to_it(conn, tmp_path):
    archive = write_archive(tmp_path, days_ago(3), b"compressed earlier\n")
    log = write_log(tmp_path, days_ago(3), b"written after\n")
    mtime = log.stat().st_mtime_ns

    assert rotate(conn, tmp_path)["compressed"] == 1

    assert not log.exists()
    assert gunzip(archive) == b"compressed earlier\nwritten after\n"
    assert archive.stat().st_mtime_ns == mtime
    assert rotate(conn, tmp_path, at=SLOT + timedelta(minutes=1))["compressed"] == 0


@pytest.mark.parametrize("failing", ["os.fsync", "workers.jobs.log_rotation._fsync_dir"],
                         ids=["before the rename", "after the rename"])
def test_a_failure_midway_breaks_nothing_and_the_retry_completes_the_work(
        conn, tmp_path, monkeypatch, failing):
    content = b"the whole day\n" * 100
    log = write_log(tmp_path, days_ago(3), content)
    with monkeypatch.context() as patch:
        patch.setattr(failing, _disk_full)
        failed = run_job(conn, JOB, SLOT, options(tmp_path))
    assert failed.status is Status.FAILED and "No space left" in failed.error
    assert log.read_bytes() == content, "the .log stays until its archive is in place"
    assert not (tmp_path / name(days_ago(3), ".log.gz.tmp")).exists()

    retried = run_job(conn, JOB, SLOT, options(tmp_path))

    assert retried.status is Status.SUCCEEDED and retried.attempt == 2
    assert retried.result["compressed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [name(days_ago(3), ".log.gz")]
    assert gunzip(tmp_path / name(days_ago(3), ".log.gz")) == content


def _disk_full(*args):
    raise OSError(28, "No space left on device")


def test_an_unreadable_archive_fails_the_run_and_keeps_both_files(conn, tmp_path):
    archive = write(tmp_path / name(days_ago(3), ".log.gz"), b"\x1f\x8b not gzip at all")
    log = write_log(tmp_path, days_ago(3))
    insert_run(conn, "coin_deduction", SLOT - timedelta(days=90), "succeeded")
    before = snapshot(tmp_path)

    outcome = run_job(conn, JOB, SLOT, options(tmp_path))

    assert outcome.status is Status.FAILED
    assert "UnreadableArchive" in outcome.error and archive.name in outcome.error
    assert snapshot(tmp_path) == before and log.exists()
    assert count_runs(conn, "coin_deduction") == 1, "nothing is pruned by a failed run"


def test_without_a_log_dir_only_run_records_are_pruned(conn):
    insert_run(conn, "coin_deduction", SLOT - timedelta(days=90), "succeeded")

    assert rotate(conn, None) == {"compressed": 0, "deleted": 0, "job_runs_pruned": 1,
                                  "log_dir": None}


def test_a_missing_log_dir_fails_the_run(conn, tmp_path):
    outcome = run_job(conn, JOB, SLOT, options(tmp_path / "absent"))
    assert outcome.status is Status.FAILED and "FileNotFoundError" in outcome.error


@pytest.mark.parametrize("override", [{"log_retention_days": 0},
                                      {"job_runs_retention_days": "30"},
                                      {"log_retention_days": True},
                                      {"log_dir": 7}])
def test_bad_params_from_overrides_fail_the_run_and_touch_nothing(conn, tmp_path, override):
    conn.execute("INSERT INTO job_settings (job, overrides) VALUES ('log_rotation', %s)",
                 [Jsonb(override)])
    write_log(tmp_path, days_ago(5))
    before = snapshot(tmp_path)

    outcome = run_job(conn, JOB, SLOT, options(tmp_path))

    assert outcome.status is Status.FAILED
    assert outcome.error.startswith("InvalidParams: log_rotation: ")
    assert snapshot(tmp_path) == before


def insert_run(conn, job: str, slot: datetime, status: str) -> None:
    conn.execute("INSERT INTO job_runs (job, scheduled_for, status) VALUES (%s, %s, %s)",
                 [job, slot, status])


def count_runs(conn, job: str) -> int:
    return conn.execute("SELECT count(*) AS n FROM job_runs WHERE job = %s",
                        [job]).fetchone()["n"]


def test_run_records_past_retention_are_pruned_but_recent_and_running_ones_kept(conn):
    cutoff = SLOT - timedelta(days=30)
    old = {("coin_deduction", cutoff - timedelta(minutes=1), "succeeded"),
           ("badge_assignment", cutoff - timedelta(days=10), "failed"),
           ("presence_cleanup", cutoff - timedelta(days=10), "skipped"),
           ("call_cleanup", cutoff - timedelta(days=10), "abandoned")}
    kept = {("coin_deduction", cutoff, "succeeded"),
            ("coin_deduction", SLOT - timedelta(days=1), "failed"),
            ("catch_up", cutoff - timedelta(days=10), "running")}
    for row in old | kept:
        insert_run(conn, *row)

    result = rotate(conn, None)

    assert result["job_runs_pruned"] == len(old)
    left = {(r["job"], r["scheduled_for"], r["status"]) for r in conn.execute(
        "SELECT job, scheduled_for, status FROM job_runs WHERE job <> 'log_rotation'")}
    assert left == kept
    [own] = conn.execute("SELECT status FROM job_runs WHERE job = 'log_rotation'").fetchall()
    assert own["status"] == "succeeded"


@pytest.mark.parametrize(("local", "compressed", "untouched"), [
    # 00:30 on the 22nd: the 20th is two days old, the 21st is yesterday.
    (datetime(2026, 11, 22, 0, 30, tzinfo=IST), {19, 20}, {21, 22}),
    # 23:30 on the 21st: the same UTC date (18:00 vs 19:00 UTC), yet the 20th is yesterday.
    (datetime(2026, 11, 21, 23, 30, tzinfo=IST), {19}, {20, 21, 22}),
])
def test_the_local_date_of_the_logical_time_decides_which_logs_are_old(
        conn, tmp_path, local, compressed, untouched):
    assert local.astimezone(UTC).date() == date(2026, 11, 21)
    for day in compressed | untouched:
        write_log(tmp_path, date(2026, 11, day))

    assert rotate(conn, tmp_path, at=local)["compressed"] == len(compressed)

    assert {p.name for p in tmp_path.iterdir()} == (
        {name(date(2026, 11, day), ".log.gz") for day in compressed}
        | {name(date(2026, 11, day)) for day in untouched})
