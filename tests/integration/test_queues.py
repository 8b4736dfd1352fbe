"""`python -m workers queues` and `dead-letters list|retry|purge` against the session's
Redis, with dead letters a real Dramatiq worker made: a run that failed (a bad override of
its parameters) and a message refused as invalid."""

import json
from datetime import UTC, datetime

import pytest
from test_actors import drain, runs, worker  # noqa: F401

import workers
import workers.cli
from workers.engine import runtime
from workers.engine.runs import run_job
from workers.schedule import JOBS
from workers.settings import Settings

S1 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
S2 = datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
BAD_OVERRIDE = """INSERT INTO job_settings (job, overrides)
                  VALUES ('presence_cleanup', '{"presence_inactive_minutes": "soon"}')"""


@pytest.fixture
def cli(db, capsys):
    settings = Settings(_env_file=None, database_url=db.url, redis_url=db.redis_url)

    def run(*argv: str) -> tuple[int, str, str]:
        code = workers.cli.main(list(argv), settings)
        out, err = capsys.readouterr()
        return code, out, err
    return run


def dead(cli) -> list[dict]:
    code, out, _ = cli("dead-letters", "list", "--json")
    assert code == 0
    return json.loads(out)


def test_queues_counts_waiting_messages_and_their_age(cli):
    for slot in (S1, S2):  # no worker: they wait
        workers.broker.get_actor("log_rotation").send_with_options(
            kwargs={"scheduled_for": slot.isoformat()})

    code, out, _ = cli("queues", "--json")

    assert code == 0
    by_queue = {row["queue"]: row for row in json.loads(out)}
    assert set(by_queue) == {job.queue for job in JOBS.values()}
    assert by_queue["maintenance"]["waiting"] == 2
    assert by_queue["maintenance"]["oldest_age_s"] is not None
    assert (by_queue["maintenance"]["unacked"], by_queue["maintenance"]["dead"]) == (0, 0)
    assert by_queue["billing"] == {"queue": "billing", "waiting": 0, "unacked": 0,
                                   "delayed": 0, "dead": 0, "oldest_age_s": None}


def test_a_failed_run_is_listed_retried_once_fixed_and_a_done_slot_is_said_to_be_a_no_op(
        conn, worker, cli):  # noqa: F811
    conn.execute(BAD_OVERRIDE)
    actor = workers.broker.get_actor("presence_cleanup")
    first, second = (actor.send_with_options(kwargs={"scheduled_for": slot.isoformat()})
                     for slot in (S1, S2))
    drain("default")

    letters = sorted(dead(cli), key=lambda letter: letter["slot"])  # two threads: either died first
    assert [(d["id"], d["actor"], d["queue"]) for d in letters] == [
        (first.message_id, "presence_cleanup", "default"),
        (second.message_id, "presence_cleanup", "default")]
    assert "presence_inactive_minutes" in letters[0]["error"]
    assert letters[0]["slot"] == S1.isoformat()

    conn.execute("UPDATE job_settings SET overrides = '{}'")  # the operator's fix
    run_job(conn, JOBS["presence_cleanup"], S2, runtime.current().run_options())  # S2 done

    code, out, _ = cli("dead-letters", "retry", first.message_id[:8])
    assert code == 0
    assert out.startswith("presence_cleanup 2026-11-22T15:30:00+05:30 sent again as message")
    code, out, _ = cli("dead-letters", "retry", second.message_id)
    assert code == 0
    assert "that slot is succeeded already, so the run will be a duplicate" in out
    drain("default")

    assert dead(cli) == []
    assert [(r["scheduled_for"], r["status"], r["attempt"])
            for r in runs(conn, "presence_cleanup")] == [(S1, "succeeded", 2),
                                                         (S2, "succeeded", 2)]
    code, _, err = cli("dead-letters", "retry", first.message_id)
    assert (code, err.strip()) == (2, f"saathii-workers: no dead letter {first.message_id!r}")


def test_purge_asks_first_and_keeps_what_is_younger_than_asked(conn, worker, cli):  # noqa: F811
    workers.broker.get_actor("presence_cleanup").send_with_options(kwargs={"bogus": 1})
    drain("default")
    [letter] = dead(cli)
    assert letter["error"] == "refused as an invalid message: it never ran"
    code, _, _ = cli("dead-letters", "retry", letter["id"])
    assert code == 2  # not a run of a job's slot: nothing to send again

    assert cli("dead-letters", "purge")[0] == 2  # no terminal to confirm on, no --yes
    assert cli("dead-letters", "purge", "--older-than", "1d", "--yes")[1].strip() == \
        "no dead letters to purge"
    assert len(dead(cli)) == 1
    assert cli("dead-letters", "purge", "--queue", "default", "--yes")[1].strip() == \
        "purged 1 dead letter(s)"
    assert dead(cli) == []
    assert cli("dead-letters", "list", "--queue", "nowhere")[0] == 2
