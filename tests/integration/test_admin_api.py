"""The admin's JSON API through httpx (Starlette's TestClient, in-process ASGI) against a
real PostgreSQL and Redis: every route closed without a credential, the roles, bearer
tokens, the Saathii backend's JWTs, browser sessions with their same-origin and CSRF
checks, the rate limit, the audit rows, pagination, and the router mounted in a host app
under a prefix."""

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ledger import add_user, give_badge, start_call
from test_actors import drain, worker  # noqa: F401

import workers
from workers.admin import context, create_app, router
from workers.admin.access import SESSION_COOKIE
from workers.admin.api import statistics
from workers.engine import runtime
from workers.engine.runs import run_job
from workers.schedule import JOBS

ADMIN, READER = "admin-token-for-tests", "read-token-for-tests"
JWT_KEY = "a-jwt-key-for-tests-of-32-bytes-or-more"
SLOT = datetime(2026, 11, 22, 4, 30, tzinfo=UTC)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def saathii_jwt(role="admin", *, expires_in=3600, **claims) -> str:
    """A token as the Saathii backend's jwt_handler makes one."""
    payload = {"user_id": 7, "role": role, "type": "access",
               "exp": int(time.time()) + expires_in, **claims}
    return jwt.encode(payload, JWT_KEY, algorithm="HS256")


@pytest.fixture
def admin_context(db):
    def made(**changes):
        settings = runtime.current().settings.model_copy(update={
            "redis_url": db.redis_url, "admin_tokens": ADMIN, "admin_read_tokens": READER,
            "admin_jwt_key": JWT_KEY, **changes})
        from pydantic import SecretStr
        for name in ("admin_tokens", "admin_read_tokens", "admin_jwt_key"):
            value = getattr(settings, name)
            if isinstance(value, str):
                settings = settings.model_copy(update={name: SecretStr(value)})
        made_context = context.AdminContext.made(settings)
        context.use(made_context)
        return made_context
    made()
    yield made
    context.use(None)


@pytest.fixture
def client(admin_context):
    with TestClient(create_app(), base_url="http://admin.test") as test_client:
        yield test_client


def audit(conn) -> list[dict]:
    return conn.execute("SELECT actor, role, via, action, target, outcome, detail"
                        " FROM admin_audit ORDER BY audit_id").fetchall()


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route of the app's OpenAPI document, plus the document."""
    paths = app.openapi()["paths"]
    found = [(method.upper(), path) for path, methods in paths.items() for method in methods]
    return [*found, ("GET", "/openapi.json")]


def test_every_route_is_closed_without_a_credential(client):
    routes = api_routes(client.app)
    assert ("POST", "/api/jobs/{name}/trigger") in routes and len(routes) >= 12
    for method, path in routes:
        url = path.replace("{name}", "coin_deduction").replace("{run_id}", "1")
        answer = client.request(method, url)
        assert answer.status_code == 401, (method, url, answer.text)
        assert answer.headers["www-authenticate"] == "Bearer"
    for token in ("wrong", ADMIN + "x", ""):
        assert client.get("/api/jobs", headers=bearer(token)).status_code == 401


def test_a_reader_reads_everything_and_is_refused_every_action_which_is_audited(client, conn):
    for path in ("/api/jobs", "/api/jobs/coin_deduction", "/api/runs", "/api/health",
                 "/api/processes", "/api/queues", "/api/audit", "/api/session",
                 "/openapi.json"):
        answer = client.get(path, headers=bearer(READER))
        assert answer.status_code == 200, (path, answer.text)
    jobs = client.get("/api/jobs", headers=bearer(READER)).json()
    assert [job["name"] for job in jobs["items"]] == list(JOBS)
    assert jobs["items"][0]["timezone"] == "Asia/Kolkata"

    for action in ("pause", "resume", "trigger"):
        answer = client.post(f"/api/jobs/coin_deduction/{action}", headers=bearer(READER))
        assert answer.status_code == 403, answer.text
        assert "needs the admin role" in answer.json()["detail"]
    rows = audit(conn)
    assert [(r["action"], r["outcome"], r["role"], r["target"]) for r in rows] == [
        (action, "refused", "read_only", "coin_deduction")
        for action in ("pause", "resume", "trigger")]
    assert rows[0]["actor"].startswith("token ") and READER not in rows[0]["actor"]
    assert conn.execute("SELECT count(*) AS n FROM job_settings WHERE paused").fetchone()["n"] == 0


def test_an_admin_pauses_and_resumes_a_job_and_each_is_audited(client, conn):
    paused = client.post("/api/jobs/call_cleanup/pause", headers=bearer(ADMIN))
    assert paused.json() == {"job": "call_cleanup", "paused": True, "was_paused": False}
    job = client.get("/api/jobs/call_cleanup", headers=bearer(ADMIN)).json()
    assert (job["paused"], job["state"]) == (True, "paused")
    assert client.post("/api/jobs/call_cleanup/resume", headers=bearer(ADMIN)).json()[
        "was_paused"] is True
    assert client.post("/api/jobs/nope/pause", headers=bearer(ADMIN)).status_code == 404

    rows = audit(conn)
    assert [(r["action"], r["outcome"], r["role"], r["via"], r["detail"][:21]) for r in rows] == [
        ("pause", "done", "admin", "token", "was running; now paus"),
        ("resume", "done", "admin", "token", "was paused; now runni"),
        ("pause", "refused", "admin", "token", "unknown job 'nope'; j")]  # by the route
    page = client.get("/api/audit", headers=bearer(READER)).json()
    assert [item["action"] for item in page["items"]] == ["pause", "resume", "pause"]  # newest
    assert page["items"][0]["target"] == "nope"


def test_a_trigger_sends_a_run_unless_its_slot_is_taken(client, conn, db):
    sent = client.post("/api/jobs/presence_cleanup/trigger", headers=bearer(ADMIN),
                       json={"as_of": "2026-11-22T10:00+05:30"})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["status"], sent.json()["scheduled_for"]) == (
        "enqueued", "2026-11-22T10:00:00+05:30")
    with redis.Redis.from_url(db.redis_url) as client_redis:
        assert client_redis.llen(f"dramatiq:{JOBS['presence_cleanup'].queue}") == 1

    run_job(conn, JOBS["presence_cleanup"], SLOT, runtime.current().run_options())
    again = client.post("/api/jobs/presence_cleanup/trigger", headers=bearer(ADMIN),
                        json={"as_of": SLOT.isoformat()}).json()
    assert again["status"] == "duplicate"
    assert "succeeded: not sent" in again["detail"]
    bad = client.post("/api/jobs/presence_cleanup/trigger", headers=bearer(ADMIN),
                      json={"as_of": "yesterday"})
    assert bad.status_code == 422 and "expected ISO 8601" in bad.json()["detail"]
    assert client.post("/api/jobs/presence_cleanup/trigger", headers=bearer(ADMIN),
                       json={"as_of": "2026-11-22", "extra": 1}).status_code == 422
    assert [(r["outcome"], r["action"]) for r in audit(conn)] == [
        ("done", "trigger"), ("refused", "trigger"), ("refused", "trigger"),
        ("refused", "trigger")]  # the last: a body with a field it does not have
    assert audit(conn)[-1]["detail"].startswith("invalid request: ")


def test_triggers_past_the_rate_limit_are_refused_with_429(admin_context, conn):
    admin_context(admin_actions_per_minute=2)
    with TestClient(create_app(), base_url="http://admin.test") as limited:
        answers = [limited.post("/api/jobs/catch_up/trigger", headers=bearer(ADMIN),
                                json={"as_of": f"2026-11-22T10:0{i}+05:30"})
                   for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 0 < int(answers[2].headers["retry-after"]) <= 60
    assert audit(conn)[-1]["outcome"] == "refused"
    assert "more than 2 triggers a minute" in audit(conn)[-1]["detail"]


def test_the_saathii_backends_jwts_carry_their_role(client):
    assert client.get("/api/jobs", headers=bearer(saathii_jwt("read_only"))).status_code == 200
    assert client.post("/api/jobs/catch_up/pause",
                       headers=bearer(saathii_jwt("read_only"))).status_code == 403
    assert client.post("/api/jobs/catch_up/pause",
                       headers=bearer(saathii_jwt("admin"))).status_code == 200
    who = client.get("/api/session", headers=bearer(saathii_jwt("admin"))).json()
    assert (who["actor"], who["via"], who["role"]) == ("jwt 7", "jwt", "admin")

    expired = client.get("/api/jobs", headers=bearer(saathii_jwt(expires_in=-10)))
    assert (expired.status_code, expired.json()["detail"]) == (401, "token expired")
    refresh = client.get("/api/jobs", headers=bearer(saathii_jwt(type="refresh")))
    assert refresh.status_code == 401
    customer = client.get("/api/jobs", headers=bearer(saathii_jwt("customer")))
    assert customer.status_code == 403
    forged = jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, "not-the-key" * 4,
                        algorithm="HS256")
    assert client.get("/api/jobs", headers=bearer(forged)).status_code == 401


def login(client, token: str, prefix: str = ""):
    return client.post(f"{prefix}/login", data={"token": token}, follow_redirects=False,
                       headers={"Sec-Fetch-Site": "same-origin"})


def test_a_browser_session_acts_only_same_origin_with_its_csrf_token(client, conn):
    answer = login(client, ADMIN)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    session = client.get("/api/session").json()
    assert (session["via"], session["role"], session["may_act"]) == ("session", "admin", True)
    csrf = session["csrf_token"]

    same = {"Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/jobs/catch_up/pause", headers=same).status_code == 403  # no token
    assert client.post("/api/jobs/catch_up/pause", headers={
        "Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf}).status_code == 403
    assert client.post("/api/jobs/catch_up/pause", headers={
        "Origin": "http://evil.test", "X-CSRF-Token": csrf}).status_code == 403
    assert client.post("/api/jobs/catch_up/pause", headers={
        **same, "X-CSRF-Token": csrf + "x"}).status_code == 403
    done = client.post("/api/jobs/catch_up/pause", headers={**same, "X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    by_origin = client.post("/api/jobs/catch_up/resume", headers={  # an older browser
        "Origin": "http://admin.test", "X-CSRF-Token": csrf})
    assert by_origin.status_code == 200, by_origin.text
    outcomes = [(r["action"], r["outcome"], r["via"]) for r in audit(conn)]
    assert outcomes == [("login", "done", "token"), *[("pause", "refused", "session")] * 4,
                        ("pause", "done", "session"), ("resume", "done", "session")]

    assert client.post("/logout", headers=same, follow_redirects=False).status_code == 303
    assert client.get("/api/session").status_code == 401


def test_a_reader_session_and_a_bad_login(client):
    assert login(client, "wrong").status_code == 401
    assert "invalid token" in login(client, "wrong").text
    assert client.post("/login", data={"token": ADMIN},
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    login(client, READER)
    assert client.get("/api/session").json()["may_act"] is False


def test_a_tampered_or_expired_session_is_refused(client, admin_context):
    login(client, ADMIN)
    value = client.cookies[SESSION_COOKIE]
    body, _, signature = value.partition(".")
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, body + "." + "0" * len(signature))
    assert client.get("/api/jobs").status_code == 401
    ctx = context.current()
    identity = ctx.access.session(value)
    old = ctx.access.new_session(identity, now=time.time() - 9 * 3600)  # 8 h sessions
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, old)
    answer = client.get("/api/jobs")
    assert (answer.status_code, answer.json()["detail"]) == (401,
                                                             "session expired: log in again")


def test_runs_are_paginated_by_cursor_newest_first_and_filtered(client, conn):
    conn.execute("INSERT INTO job_runs (job, scheduled_for, status, finished_at)"
                 " SELECT CASE WHEN n %% 3 = 0 THEN 'catch_up' ELSE 'coin_deduction' END,"
                 " %s::timestamptz + n * interval '1 minute',"
                 " CASE WHEN n %% 10 = 0 THEN 'failed' ELSE 'succeeded' END, now()"
                 " FROM generate_series(1, 120) n", [SLOT])
    seen, cursor = [], None
    while True:
        page = client.get("/api/runs", headers=bearer(READER),
                          params={"limit": 50, **({"cursor": cursor} if cursor else {})}).json()
        seen += [run["run_id"] for run in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 120 and seen == sorted(seen, reverse=True)
    failed = client.get("/api/runs", headers=bearer(READER),
                        params={"status": "failed", "job": "coin_deduction"}).json()["items"]
    assert failed and {(r["status"], r["job"]) for r in failed} == {("failed", "coin_deduction")}
    since = (SLOT + timedelta(minutes=100)).isoformat()
    recent = client.get("/api/runs", headers=bearer(READER), params={"since": since}).json()
    assert len(recent["items"]) == 21
    one = client.get(f"/api/runs/{seen[0]}", headers=bearer(READER)).json()
    assert one["run_id"] == seen[0] and one["scheduled_for"].endswith("+05:30")
    assert client.get("/api/runs/0", headers=bearer(READER)).status_code == 404
    assert client.get("/api/runs", headers=bearer(READER),
                      params={"cursor": "x"}).status_code == 422
    assert client.get("/api/runs", headers=bearer(READER),
                      params={"status": "lost"}).status_code == 422


def test_the_router_mounts_in_a_host_app_under_its_prefix(admin_context):
    host = FastAPI()

    @host.get("/")
    def home():
        return {"host": True}

    host.include_router(router, prefix="/workers")
    with TestClient(host, base_url="http://api.test") as client:
        assert client.get("/").json() == {"host": True}
        assert client.get("/workers/api/jobs").status_code == 401
        jobs = client.get("/workers/api/jobs", headers=bearer(ADMIN))
        assert jobs.status_code == 200 and jobs.json()["items"]
        answer = login(client, ADMIN, "/workers")
        assert answer.headers["location"] == "/workers/"
        assert "Path=/workers" in answer.headers["set-cookie"]
        assert client.get("/workers/api/session").json()["via"] == "session"


def test_dead_letters_are_listed_retried_and_purged_by_an_admin(client, conn, worker):  # noqa: F811
    conn.execute("INSERT INTO job_settings (job, overrides)"
                 " VALUES ('presence_cleanup', '{\"presence_inactive_minutes\": \"soon\"}')")
    sent = workers.broker.get_actor("presence_cleanup").send_with_options(
        kwargs={"scheduled_for": SLOT.isoformat()})
    workers.broker.get_actor("presence_cleanup").send_with_options(kwargs={"bogus": 1})
    drain("default")

    letters = client.get("/api/dead-letters", headers=bearer(READER)).json()["items"]
    by_id = {letter["id"]: letter for letter in letters}
    assert "presence_inactive_minutes" in by_id[sent.message_id]["error"]
    assert client.post(f"/api/dead-letters/{sent.message_id}/retry",
                       headers=bearer(READER)).status_code == 403

    conn.execute("UPDATE job_settings SET overrides = '{}'")  # the operator's fix
    retried = client.post(f"/api/dead-letters/{sent.message_id[:8]}/retry",
                          headers=bearer(ADMIN))
    assert retried.status_code == 200, retried.text
    assert (retried.json()["job"], retried.json()["slot_already"]) == ("presence_cleanup", None)
    drain("default")
    assert conn.execute("SELECT status FROM job_runs WHERE job = 'presence_cleanup'"
                        ).fetchone()["status"] == "succeeded"
    [invalid] = client.get("/api/dead-letters", headers=bearer(ADMIN)).json()["items"]
    assert client.post(f"/api/dead-letters/{invalid['id']}/retry",
                       headers=bearer(ADMIN)).status_code == 422  # names no slot
    assert client.post("/api/dead-letters/purge", headers=bearer(ADMIN),
                       json={"older_than_s": 86400}).json() == {"purged": 0}
    assert client.post("/api/dead-letters/purge", headers=bearer(ADMIN),
                       json={"queue": "default"}).json() == {"purged": 1}
    assert client.get("/api/dead-letters", headers=bearer(ADMIN)).json()["items"] == []
    assert client.get("/api/dead-letters", headers=bearer(ADMIN),
                      params={"queue": "nowhere"}).status_code == 404
    assert [(r["action"], r["outcome"]) for r in audit(conn)] == [
        ("retry", "refused"), ("retry", "done"), ("retry", "refused"), ("purge", "done"),
        ("purge", "done")]


def test_the_pages_send_a_stranger_to_log_in_and_show_a_reader_no_buttons(client):
    stranger = client.get("/", follow_redirects=False)
    assert (stranger.status_code, stranger.headers["location"]) == (303, "/login")
    assert client.get("/static/htmx-2.0.11.min.js", follow_redirects=False).status_code == 303

    login(client, READER)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert all(f'id="job-{name}"' in page.text for name in JOBS)
    assert "Pause" not in page.text and "Run now" not in page.text
    assert 'hx-trigger="every 5s [document.visibilityState' in page.text  # the default
    assert "every 15s" in client.get("/?refresh=15").text
    assert "every" not in client.get("/?refresh=0").text.split('id="overview"')[1][:300]
    assert client.get("/static/htmx-2.0.11.min.js").status_code == 200
    for path in ("/partials/overview", "/jobs/coin_deduction", "/partials/jobs/coin_deduction",
                 "/runs", "/audit"):
        assert client.get(path).status_code == 200, path
    assert client.get("/jobs/nope").status_code == 404

    client.cookies.clear()
    login(client, ADMIN)
    page = client.get("/").text
    assert "Run now" in page and 'hx-confirm="Pause coin_deduction?' in page
    csrf = client.get("/api/session").json()["csrf_token"]
    assert f'"X-CSRF-Token": "{csrf}"' in page  # every htmx request carries it


def test_the_statistics_agree_with_the_ledger(client, conn):
    """Two calls at 15:30 local: one runs out of coins at minute 3, one goes on; a gold
    listener. The figures are read from the billing runs' results: they must be what the
    ledger says those runs wrote."""
    t0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)  # 15:30 IST
    far = t0 + timedelta(days=1)
    poor, rich = add_user(conn, coins=30, seen=far), add_user(conn, coins=1000, seen=far)
    gold, plain = (add_user(conn, role="listener", seen=far),
                   add_user(conn, role="listener", seen=far))
    give_badge(conn, gold, t0.date(), "gold")
    start_call(conn, poor, gold, t0)
    start_call(conn, rich, plain, t0, "video")
    for minute in range(1, 5):
        run_job(conn, JOBS["coin_deduction"], t0 + minute * timedelta(minutes=1),
                runtime.current().run_options())

    found = statistics(context.current(), t0 + timedelta(minutes=4, seconds=30))

    ledger = conn.execute(
        "SELECT -sum(coins_change) FILTER (WHERE tx_type = 'spend' AND call_minute > 1)"
        " AS charged, sum(money_change) FILTER (WHERE tx_type = 'earn') AS earned"
        " FROM user_transactions").fetchone()
    assert found["coins_charged_today"] == ledger["charged"] == 20 + 4 * 60  # minutes 2-3, 2-5
    assert found["coins_charged_last_hour"] == ledger["charged"]
    assert found["money_earned_today"] == str(ledger["earned"])
    assert (found["users"], found["customers"], found["listeners"]) == (4, 2, 2)
    assert found["ongoing_calls"] == {"audio": 0, "video": 1}
    assert found["calls_ended_today"] == {"insufficient_coins": 1}
    assert found["badges_today"] == {"gold": 1}
    assert found["today"] == "2026-11-22"
    tomorrow = statistics(context.current(), t0 + timedelta(hours=12))  # 03:30 the next day
    assert (tomorrow["coins_charged_today"], tomorrow["calls_ended_today"]) == (0, {})

    served = client.get("/api/statistics", headers=bearer(READER))
    assert served.status_code == 200 and served.json()["users"] == 4
    add_user(conn)
    again = client.get("/api/statistics", headers=bearer(READER)).json()
    assert (again["users"], again["as_of"]) == (4, served.json()["as_of"])  # at most 5 s old


def test_an_action_that_breaks_is_audited_as_failed(client, conn):
    conn.execute("ALTER TABLE job_settings RENAME TO job_settings_gone")  # pause cannot write
    with pytest.raises(Exception, match="job_settings"):
        client.post("/api/jobs/catch_up/pause", headers=bearer(ADMIN))
    [row] = audit(conn)
    assert (row["action"], row["target"], row["outcome"]) == ("pause", "catch_up", "failed")
    assert "job_settings" in row["detail"]
