"""db/schema.sql on a real PostgreSQL: idempotent, additive, and refusing what money forbids."""

import psycopg
import pytest
from psycopg.rows import dict_row

from workers.engine.db import SCHEMA_VERSION, schema_version
from workers.engine.schema import apply_schema, statements
from workers.errors import AdoptionRefused, SchemaMissing

#: The original Saathii backend's tables as it created them: no user_roles.active, no
#: user_status.busy_until, no updated_at, no money constraints.
ORIGINAL_SAATHII = """
CREATE TABLE users (user_id serial PRIMARY KEY, username varchar(10) UNIQUE NOT NULL,
    dob date NOT NULL, phone varchar(20) UNIQUE NOT NULL, created_at timestamptz DEFAULT now());
CREATE TABLE user_roles (user_id int REFERENCES users, role varchar(20),
    assigned_at timestamptz DEFAULT now(), PRIMARY KEY (user_id, role));
CREATE TABLE user_wallets (wallet_id serial PRIMARY KEY, user_id int UNIQUE REFERENCES users,
    balance_coins bigint DEFAULT 0, withdrawable_money numeric(12,2) DEFAULT 0);
CREATE TABLE user_status (user_id int PRIMARY KEY REFERENCES users, is_online bool,
    last_seen timestamptz, is_busy bool, wait_time int);
INSERT INTO users (username, dob, phone) VALUES ('asha', '1990-01-01', '+911');
INSERT INTO user_roles (user_id, role) VALUES (1, 'listener');
INSERT INTO user_wallets (user_id, balance_coins) VALUES (1, 500);
INSERT INTO user_status (user_id, is_online, is_busy) VALUES (1, true, false);
"""


@pytest.fixture
def empty(db):
    """A database without our schema: a fresh one cloned from template0."""
    admin = psycopg.connect(db.url, autocommit=True)
    name = "empty_" + db.url.rsplit("/", 1)[1]
    admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    url = db.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        yield conn
    admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def columns(conn, table: str) -> set[str]:
    return {row["column_name"] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table])}


def test_a_database_without_the_schema_says_to_run_db_init(empty):
    with pytest.raises(SchemaMissing, match="db init"):
        schema_version(empty)


def test_init_creates_every_table_and_records_the_version(empty):
    applied = apply_schema(empty)
    assert (applied.version, applied.adoption) == (SCHEMA_VERSION, None)  # nothing adopted
    tables = {row["tablename"] for row in empty.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"users", "user_roles", "user_wallets", "user_transactions", "user_status",
                      "user_calls", "listener_badges", "badge_levels", "badge_days", "job_runs",
                      "job_settings", "job_processes", "health_checks", "job_run_totals",
                      "job_run_figures", "admin_audit", "schema_version",
                      "adopted_calls"}
    for table in tables - {"schema_version"}:
        assert {"created_at", "updated_at"} <= columns(empty, table), table


def test_an_older_schema_is_refused_until_init_runs(empty):
    apply_schema(empty)
    empty.execute("DELETE FROM schema_version WHERE version = %s", [SCHEMA_VERSION])
    with pytest.raises(SchemaMissing, match=f"version {SCHEMA_VERSION - 1}.*db init"):
        schema_version(empty)
    assert apply_schema(empty).version == SCHEMA_VERSION


def test_ended_calls_of_an_adopted_database_are_never_paid_again(empty):
    empty.execute(ORIGINAL_SAATHII)
    empty.execute("""
        INSERT INTO users (username, dob, phone) VALUES ('caller', '1990-01-01', '+914');
        CREATE TABLE user_calls (call_id serial PRIMARY KEY, user_id int, listener_id int,
            call_type varchar(10), start_time timestamptz, end_time timestamptz,
            duration_seconds int, duration_minutes int, coins_spent bigint,
            listener_money_earned numeric(12,2), status varchar(20));
        INSERT INTO user_calls (user_id, listener_id, call_type, start_time, end_time,
                                coins_spent, status)
        VALUES (2, 1, 'audio', now() - interval '1 hour', now() - interval '50 minutes',
                100, 'completed'),
               (2, 1, 'audio', now() - interval '1 minute', NULL, 10, 'ongoing');
    """)
    apply_schema(empty)
    rows = empty.execute("SELECT status, settled_at IS NOT NULL AS settled FROM user_calls"
                         " ORDER BY call_id").fetchall()
    assert [(r["status"], r["settled"]) for r in rows] == [("completed", True),
                                                           ("ongoing", False)]


def test_init_twice_changes_nothing(empty):
    apply_schema(empty)
    before = empty.execute("SELECT count(*) AS n FROM pg_constraint").fetchone()["n"]
    assert apply_schema(empty).version == SCHEMA_VERSION
    assert empty.execute("SELECT count(*) AS n FROM pg_constraint").fetchone()["n"] == before


def fillfactor(conn, table: str) -> str | None:
    options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                           [table]).fetchone()["reloptions"] or []
    return next((o.split("=")[1] for o in options if o.startswith("fillfactor=")), None)


def test_billed_tables_leave_room_for_the_minutes_new_versions(empty):
    apply_schema(empty)
    assert (fillfactor(empty, "user_calls"), fillfactor(empty, "user_wallets")) == ("50", "80")

    # A database of version 5 (user_calls at 60) is moved to 50 by the next db init.
    empty.execute("ALTER TABLE user_calls SET (fillfactor = 60)")
    empty.execute("DELETE FROM schema_version WHERE version = 6")
    assert apply_schema(empty).version == SCHEMA_VERSION
    assert fillfactor(empty, "user_calls") == "50"


def test_init_on_a_live_database_does_not_wait_for_its_queries(db, conn):
    with db.connect() as api, api.transaction():
        # A long transaction of the API: a write lock on user_calls (conflicts with CREATE
        # INDEX even when IF NOT EXISTS makes it a no-op), a read lock on user_wallets
        # (conflicts with ALTER TABLE ... ADD COLUMN IF NOT EXISTS likewise).
        api.execute("UPDATE user_calls SET status = status WHERE false")
        api.execute("SELECT count(*) FROM user_wallets")
        assert apply_schema(conn).version == SCHEMA_VERSION  # nothing to add: no table lock


def test_an_existing_saathii_database_adopts_the_schema_keeping_its_data(empty):
    empty.execute(ORIGINAL_SAATHII)

    apply_schema(empty)

    assert {"active", "updated_at"} <= columns(empty, "user_roles")
    assert {"busy_until", "is_active"} <= columns(empty, "user_status")
    assert empty.execute("SELECT active FROM user_roles").fetchone()["active"] is True
    assert empty.execute("SELECT balance_coins FROM user_wallets").fetchone()[
        "balance_coins"] == 500


def test_init_refuses_to_adopt_a_negative_balance_names_it_and_applies_nothing(empty):
    empty.execute(ORIGINAL_SAATHII)
    empty.execute("INSERT INTO users (username, dob, phone) VALUES ('b', '1990-01-01', '+95')")
    empty.execute("INSERT INTO user_wallets (user_id, balance_coins) VALUES (2, -5)")
    empty.execute("UPDATE user_wallets SET balance_coins = -10 WHERE user_id = 1")
    with pytest.raises(AdoptionRefused) as refused:
        apply_schema(empty)
    assert str(refused.value) == (
        "user_wallets: 2 rows break balance_coins_never_negative (balance_coins >= 0): fix"
        " them, then run db init again; nothing was applied")
    assert "active" not in columns(empty, "user_roles")
    assert empty.execute("SELECT to_regclass('schema_version') AS t").fetchone()["t"] is None


@pytest.fixture
def wallet(conn):
    conn.execute("INSERT INTO users (username, dob, phone) VALUES ('ravi', '1995-05-05', '+912')")
    conn.execute("INSERT INTO users (username, dob, phone) VALUES ('mira', '1993-03-03', '+913')")
    conn.execute("INSERT INTO user_wallets (user_id, balance_coins) VALUES (1, 30)")
    return conn


@pytest.mark.parametrize("statement, constraint", [
    ("UPDATE user_wallets SET balance_coins = balance_coins - 40",
     "balance_coins_never_negative"),
    ("UPDATE user_wallets SET withdrawable_money = -0.01", "withdrawable_money_never_negative"),
    ("INSERT INTO user_calls (user_id, listener_id, call_type, coins_spent)"
     " VALUES (1, 2, 'audio', -10)", "coins_spent_never_negative"),
    ("INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,"
     " video_rate_per_minute) VALUES (2, '2026-11-22', 'gold', 0, 10)", "badge_rates_positive"),
])
def test_the_database_refuses_what_money_forbids(wallet, statement, constraint):
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        wallet.execute(statement)


def test_no_check_of_ours_refuses_a_write_the_api_makes_after_it_moved_money(wallet):
    """The API debits minute 1, then inserts the call: a caller calling themselves (a
    customer who is also a listener) must not have the call refused after the debit."""
    wallet.execute("INSERT INTO user_calls (user_id, listener_id, call_type, coins_spent)"
                   " VALUES (1, 1, 'audio', 10)")
    assert wallet.execute("SELECT conname FROM pg_constraint"
                          " WHERE conname = 'caller_is_not_listener'").fetchall() == []


def test_deleting_an_account_as_the_api_does_is_not_stopped_by_our_ledger_keys(wallet):
    """The API deletes a user's wallet rows, then the user: their calls go (cascade), and
    the other party's ledger rows naming those calls keep their money, without a call."""
    wallet.execute("INSERT INTO user_wallets (user_id, balance_coins) VALUES (2, 0)")
    call = wallet.execute("INSERT INTO user_calls (user_id, listener_id, call_type, coins_spent)"
                          " VALUES (1, 2, 'audio', 10) RETURNING call_id").fetchone()["call_id"]
    wallet.execute("INSERT INTO user_transactions (wallet_id, tx_type, money_change, call_id)"
                   " SELECT wallet_id, 'earn', 1.00, %s FROM user_wallets WHERE user_id = 2",
                   [call])
    wallet.execute("DELETE FROM user_transactions WHERE wallet_id IN"
                   " (SELECT wallet_id FROM user_wallets WHERE user_id = 1)")
    wallet.execute("DELETE FROM user_wallets WHERE user_id = 1")
    wallet.execute("ALTER TABLE user_calls DROP CONSTRAINT user_calls_user_id_fkey,"
                   " ADD FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE")  # as the API
    wallet.execute("DELETE FROM users WHERE user_id = 1")
    [earn] = wallet.execute("SELECT call_id, money_change FROM user_transactions").fetchall()
    assert (earn["call_id"], str(earn["money_change"])) == (None, "1.00")


@pytest.mark.parametrize("statement", [
    "INSERT INTO user_transactions (wallet_id, tx_type) VALUES (1, 'gift')",
    "INSERT INTO user_calls (user_id, listener_id, call_type) VALUES (1, 2, 'chat')",
    "INSERT INTO user_calls (user_id, listener_id, call_type, status)"
    " VALUES (1, 2, 'audio', 'paused')",
    "INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,"
    " video_rate_per_minute) VALUES (2, '2026-11-22', 'platinum', 1, 6)",
    "INSERT INTO job_runs (job, scheduled_for, status) VALUES ('x', now(), 'maybe')",
])
def test_the_database_refuses_unknown_kinds(wallet, statement):
    with pytest.raises(psycopg.errors.CheckViolation):
        wallet.execute(statement)


def test_a_slot_has_one_run_row(conn):
    conn.execute("INSERT INTO job_runs (job, scheduled_for, status)"
                 " VALUES ('coin_deduction', '2026-11-22T10:00Z', 'succeeded')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO job_runs (job, scheduled_for, status)"
                     " VALUES ('coin_deduction', '2026-11-22T15:30+05:30', 'running')")


def test_the_script_splits_at_semicolons_outside_quotes_and_comments():
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (b text DEFAULT 'x;y', c text DEFAULT 'it''s; fine');
    DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;
    -- trailing comment
    """
    assert [" ".join(statement.split()) for statement in statements(script)] == [
        "-- a comment; with a semicolon CREATE TABLE a (b text DEFAULT 'x;y', c text"
        " DEFAULT 'it''s; fine')",
        "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$"]
