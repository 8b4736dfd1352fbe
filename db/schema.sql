-- saathii-workers schema, applied by `python -m workers db init` (workers.engine.schema).
--
-- Idempotent and additive: every statement creates what is missing and never drops,
-- renames or rewrites the API's tables or columns. An existing Saathii database adopts
-- the workers by running it: the API's tables keep their names and columns; columns we
-- add have defaults, so the API's inserts keep working. Constraints that money needs are
-- added by name, once.
--
-- It runs on a live database beside the API, one statement at a time, each its own
-- transaction with a short lock_timeout (retried when it runs out), so that no API
-- query waits long behind it: a statement that needs a table lock takes it for a moment
-- and does no work under it (columns with constant defaults, constraints added NOT VALID
-- and validated later under a lock that lets writes through, indexes built
-- CONCURRENTLY, backfills by index after the lock is gone).

-- Helpers of this script (temporary: gone with the session). Each checks the catalog
-- first and alters a table only when something is missing, because ALTER TABLE takes an
-- ACCESS EXCLUSIVE lock even when IF NOT EXISTS makes it a no-op: on a live database that
-- would queue every query of the API's tables behind it.
CREATE OR REPLACE FUNCTION pg_temp.add_column(tbl regclass, name text, definition text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = tbl AND attname = name AND NOT attisdropped) THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', tbl, name, definition);
    END IF;
END $$;

-- A constraint is added NOT VALID: its lock is held for a moment, and no row is read
-- under it; validate_constraints() below then checks the rows without blocking writes.
-- (db init first counts the rows each missing CHECK would refuse, and stops, naming them,
-- before anything is applied.)
CREATE TEMPORARY TABLE IF NOT EXISTS unvalidated (tbl regclass, name text);
CREATE OR REPLACE FUNCTION pg_temp.add_constraint(tbl regclass, name text, definition text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = tbl AND conname = name) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', tbl, name, definition);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = tbl AND conname = name AND NOT convalidated) THEN
        INSERT INTO unvalidated VALUES (tbl, name);
    END IF;
END $$;

-- A trigger, created only when the table has none of that name (CREATE TRIGGER takes a
-- SHARE ROW EXCLUSIVE lock on the table, which would queue the API's writes).
CREATE OR REPLACE FUNCTION pg_temp.add_trigger(tbl regclass, name text, definition text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = name) THEN
        EXECUTE format('CREATE TRIGGER %I %s', name, definition);
    END IF;
END $$;

-- Storage parameters of a table, set only when they differ (ALTER TABLE SET takes a
-- SHARE UPDATE EXCLUSIVE lock; it applies to pages written from then on).
CREATE OR REPLACE FUNCTION pg_temp.set_storage(tbl regclass, parameter text, value text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class
                   WHERE oid = tbl
                     AND format('%s=%s', parameter, value) = ANY(reloptions)) THEN
        EXECUTE format('ALTER TABLE %s SET (%s = %s)', tbl, parameter, value);
    END IF;
END $$;

-- The Saathii tables --------------------------------------------------------------

CREATE TABLE IF NOT EXISTS users (
    user_id     serial PRIMARY KEY,
    username    varchar(10) NOT NULL UNIQUE,
    dob         date NOT NULL,
    phone       varchar(20) NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS user_roles (
    user_id     integer NOT NULL REFERENCES users (user_id),
    role        varchar(20) NOT NULL CHECK (role IN ('customer', 'listener')),
    active      boolean NOT NULL DEFAULT true,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role)
);

CREATE TABLE IF NOT EXISTS user_wallets (
    wallet_id           serial PRIMARY KEY,
    user_id             integer NOT NULL UNIQUE REFERENCES users (user_id),
    balance_coins       bigint NOT NULL DEFAULT 0,
    withdrawable_money  numeric(12, 2) NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS user_transactions (
    transaction_id  serial PRIMARY KEY,
    wallet_id       integer NOT NULL REFERENCES user_wallets (wallet_id),
    tx_type         varchar(20) NOT NULL
                    CHECK (tx_type IN ('purchase', 'spend', 'earn', 'withdraw', 'bonus',
                                       'referral_bonus')),
    coins_change    bigint NOT NULL DEFAULT 0,
    money_change    numeric(12, 2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS user_status (
    user_id     integer PRIMARY KEY REFERENCES users (user_id),
    is_online   boolean NOT NULL DEFAULT false,
    last_seen   timestamptz,
    is_busy     boolean NOT NULL DEFAULT false,
    wait_time   integer,
    busy_until  timestamptz,
    is_active   boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS user_calls (
    call_id                serial PRIMARY KEY,
    user_id                integer NOT NULL REFERENCES users (user_id),
    listener_id            integer NOT NULL REFERENCES users (user_id),
    call_type              varchar(10) NOT NULL CHECK (call_type IN ('audio', 'video')),
    start_time             timestamptz NOT NULL DEFAULT now(),
    end_time               timestamptz,
    duration_seconds       integer,
    duration_minutes       integer,
    coins_spent            bigint NOT NULL DEFAULT 0,
    listener_money_earned  numeric(12, 2) NOT NULL DEFAULT 0,
    status                 varchar(20) NOT NULL DEFAULT 'ongoing'
                           CHECK (status IN ('ongoing', 'completed', 'dropped'))
);

CREATE TABLE IF NOT EXISTS listener_badges (
    listener_id            integer NOT NULL REFERENCES users (user_id),
    date                   date NOT NULL,
    badge                  varchar(10) NOT NULL
                           CHECK (badge IN ('basic', 'bronze', 'silver', 'gold')),
    audio_rate_per_minute  numeric(5, 2) NOT NULL,
    video_rate_per_minute  numeric(5, 2) NOT NULL,
    assigned_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (listener_id, date)
);

-- Columns an older Saathii database may lack. The original code read user_roles.active
-- and user_status.busy_until without the schema having them.
SELECT pg_temp.add_column('user_roles', 'active', 'boolean NOT NULL DEFAULT true');
SELECT pg_temp.add_column('user_status', 'busy_until', 'timestamptz');
SELECT pg_temp.add_column('user_status', 'is_active', 'boolean NOT NULL DEFAULT true');
-- When presence_cleanup set the user offline (schema 8): only such a user is brought back
-- online when seen again, never one the API's logout set offline.
SELECT pg_temp.add_column('user_status', 'offline_marked_at', 'timestamptz');

-- Every table has created_at and updated_at.
SELECT pg_temp.add_column('users', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('users', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_roles', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_roles', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_wallets', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_wallets', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_transactions', 'created_at',
                          'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_transactions', 'updated_at',
                          'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_status', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_status', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_calls', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_calls', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('listener_badges', 'created_at',
                          'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('listener_badges', 'updated_at',
                          'timestamptz NOT NULL DEFAULT now()');

-- Money constraints: the database refuses what must never happen. Added by name so a
-- second init skips them; on an existing database with offending rows, init stops and
-- names the constraint instead of adopting bad data silently.


SELECT pg_temp.add_constraint('user_wallets', 'balance_coins_never_negative',
                              'CHECK (balance_coins >= 0)');
SELECT pg_temp.add_constraint('user_wallets', 'withdrawable_money_never_negative',
                              'CHECK (withdrawable_money >= 0)');
SELECT pg_temp.add_constraint('user_calls', 'coins_spent_never_negative',
                              'CHECK (coins_spent >= 0)');
SELECT pg_temp.add_constraint('user_calls', 'listener_money_earned_never_negative',
                              'CHECK (listener_money_earned >= 0)');
SELECT pg_temp.add_constraint('listener_badges', 'badge_rates_positive',
    'CHECK (audio_rate_per_minute > 0 AND video_rate_per_minute > 0)');

CREATE INDEX CONCURRENTLY IF NOT EXISTS user_calls_ongoing
    ON user_calls (call_id)
    WHERE status = 'ongoing';
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_calls_listener_start
    ON user_calls (listener_id, start_time);
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_status_last_seen ON user_status (last_seen);
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_transactions_wallet
    ON user_transactions (wallet_id);

-- Prices, pay and the ledger's keys ---------------------------------------------------

-- What a started minute of a call costs its caller, in coins.
CREATE OR REPLACE FUNCTION call_rate(call_type text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE call_type WHEN 'audio' THEN 10 WHEN 'video' THEN 60 END
$$;

-- When a call's parties were last seen together: the earlier of the two parties'
-- last_seen (a party never seen was not seen), never before the call started. Billing
-- owes a minute only near this sighting. Inlined by the planner, as call_rate() is.
CREATE OR REPLACE FUNCTION parties_seen(start_time timestamptz, caller_seen timestamptz,
                                        listener_seen timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(start_time, least(coalesce(caller_seen, '-infinity'),
                                      coalesce(listener_seen, '-infinity')))
$$;

-- Whether user `id` is one of shard `shard` of `shards` (billing's split, see
-- db/coin_deduction.sql): with one shard, everyone. A SQL expression the planner inlines,
-- so each statement plans as if it were written out: with one shard the test folds away;
-- with more, int4eq() rather than `=` makes the planner estimate a third of the rows, not
-- the one in two hundred it assumes of an equality on an expression (which plans a
-- million index lookups where one hash join does).
CREATE OR REPLACE FUNCTION in_shard(id integer, shard integer, shards integer)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT shards = 1 OR int4eq(id % shards, shard)
$$;

-- When a call asked to end at `asked` really ends: never before its last paid minute
-- began, so no paid minute lies after its end. (A late tick, or a late hang-up, may end a
-- call whose minutes a later tick already charged.)
CREATE OR REPLACE FUNCTION call_end_time(asked timestamptz, start_time timestamptz,
                                         coins_spent bigint, call_type text)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(asked, start_time
                           + (coins_spent / call_rate(call_type) - 1) * interval '1 minute')
$$;

-- Calls that were ongoing when `db init` first adopted an existing database, their parties
-- unseen for longer than the heartbeat timeout: the workers never bill them (their minutes
-- are from before the workers, and nothing shows they were talked). `python -m workers
-- adopted-calls` lists them and ends them, uncharged, when an operator decides to.
CREATE TABLE IF NOT EXISTS adopted_calls (
    call_id         integer PRIMARY KEY,  -- no foreign key: the API deletes calls
    held_at         timestamptz NOT NULL DEFAULT now(),
    -- Their parties' last sighting when adopted, and what billing them then would have
    -- charged (every owed minute, within the maximum length).
    last_seen       timestamptz,
    coins_at_stake  bigint NOT NULL CHECK (coins_at_stake >= 0),
    ended_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Where each ongoing call stands at logical time `as_of`: its rate, the minutes it has
-- paid (coins_spent / rate) and the minutes it owes. Minute k starts at start_time +
-- (k - 1) minutes (minute 1 at once) and is owed once it has started, if
-- - its parties were seen near its start: it starts before their last sighting (the
--   earlier of the two parties' last_seen, never before the call started) + `slack`.
--   A minute whose parties have not been seen since is not owed yet: a later sighting
--   makes it owed, and a tick defers it, never charges it to take it back;
-- - and the call is not past its maximum length, `max_minutes`.
-- A call whose parties have not been seen for longer than `heartbeat` is silent: it is
-- decided then, and ends at the sighting + `slack` (silent_end), owing only the minutes
-- started before that. A call reaches its maximum length at max_end. Calls that start
-- after `as_of` (a late tick) are not there yet; calls held since adoption
-- (adopted_calls) are the operator's.
DROP FUNCTION IF EXISTS ongoing_calls_at(timestamptz, interval);
CREATE OR REPLACE FUNCTION ongoing_calls_at(as_of timestamptz, heartbeat interval,
                                            slack interval, max_minutes integer)
RETURNS TABLE (call_id integer, caller_id integer, listener_id integer,
               start_time timestamptz, rate integer, paid bigint, seen timestamptz,
               silent boolean, silent_end timestamptz, max_end timestamptz,
               over_max boolean, due integer)
LANGUAGE sql STABLE AS $$
    SELECT c.call_id, c.user_id, c.listener_id, c.start_time, r.rate,
           c.coins_spent / r.rate, h.seen, h.seen + heartbeat < as_of, h.seen + slack,
           m.max_end, m.max_end <= as_of,
           least(floor(extract(epoch FROM as_of - c.start_time) / 60) + 1,
                 ceil(extract(epoch FROM least(h.seen + slack, m.max_end) - c.start_time)
                      / 60))::integer
    FROM user_calls c
    LEFT JOIN user_status caller ON caller.user_id = c.user_id
    LEFT JOIN user_status listener ON listener.user_id = c.listener_id
    CROSS JOIN LATERAL (SELECT call_rate(c.call_type) AS rate) r
    CROSS JOIN LATERAL (
        SELECT parties_seen(c.start_time, caller.last_seen, listener.last_seen) AS seen
    ) h
    CROSS JOIN LATERAL (SELECT c.start_time + max_minutes * interval '1 minute' AS max_end) m
    WHERE c.status = 'ongoing' AND c.start_time <= as_of
      AND c.call_id NOT IN (SELECT a.call_id FROM adopted_calls a)
$$;

-- The daily badges: the minutes a listener must have talked on the previous local day,
-- and what a paid minute then earns them, in rupees. 'basic' is also the pay of a day
-- without a badge row.
CREATE TABLE IF NOT EXISTS badge_levels (
    badge                  varchar(10) PRIMARY KEY
                           CHECK (badge IN ('basic', 'bronze', 'silver', 'gold')),
    min_minutes            integer NOT NULL UNIQUE CHECK (min_minutes >= 0),
    audio_rate_per_minute  numeric(5, 2) NOT NULL CHECK (audio_rate_per_minute > 0),
    video_rate_per_minute  numeric(5, 2) NOT NULL CHECK (video_rate_per_minute > 0),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
INSERT INTO badge_levels (badge, min_minutes, audio_rate_per_minute, video_rate_per_minute)
VALUES ('basic', 0, 1.00, 6.00), ('bronze', 180, 1.25, 7.00), ('silver', 360, 1.50, 8.50),
       ('gold', 540, 1.80, 10.00)
ON CONFLICT (badge) DO NOTHING;

-- The listeners who hold a badge for local day `day`: the listener role, active there; an
-- active account (user_status.is_active: the API deactivates accounts through it); and
-- an account that existed on that day (created before it ended, in `tz`).
CREATE OR REPLACE FUNCTION active_listeners_on(day date, tz text)
RETURNS TABLE (user_id integer) LANGUAGE sql STABLE AS $$
    SELECT r.user_id
    FROM user_roles r
    JOIN users u ON u.user_id = r.user_id
    LEFT JOIN user_status s ON s.user_id = r.user_id
    WHERE r.role = 'listener' AND r.active AND coalesce(s.is_active, true)
      AND coalesce(u.created_at, '-infinity') < (day + 1)::timestamp AT TIME ZONE tz
$$;

-- The local days whose badges have been assigned. A call is settled only once its local
-- start day is here: it is paid at that day's badge rate, never at 'basic' for want of a
-- badge that the 00:01 run (or its catch-up) assigns a moment later.
CREATE TABLE IF NOT EXISTS badge_days (
    date         date PRIMARY KEY,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Which call and which of its minutes a 'spend' pays, which call an 'earn' settles. The
-- API sets them for the minute 1 it charges; the workers for everything they write.
-- (Plain columns, their constraints added apart: a column added with one reads every row
-- under the ALTER's lock.)
SELECT pg_temp.add_column('user_transactions', 'call_id', 'integer');
SELECT pg_temp.add_constraint('user_transactions', 'user_transactions_call_id_fkey',
    'FOREIGN KEY (call_id) REFERENCES user_calls (call_id) ON DELETE SET NULL');
SELECT pg_temp.add_column('user_transactions', 'call_minute', 'integer');
SELECT pg_temp.add_constraint('user_transactions', 'user_transactions_call_minute_check',
                              'CHECK (call_minute >= 1)');
-- Exactly once, by construction: a (call, minute) is charged at most once, a call is
-- settled at most once, whoever writes it and however often.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS user_transactions_one_spend_per_call_minute
    ON user_transactions (call_id, call_minute)
    WHERE tx_type = 'spend';
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS user_transactions_one_earn_per_call
    ON user_transactions (call_id)
    WHERE tx_type = 'earn';
SELECT pg_temp.add_constraint('user_transactions', 'call_spend_names_its_minute',
    'CHECK (tx_type <> ''spend'' OR call_id IS NULL OR call_minute IS NOT NULL)');

-- Why a call ended, and when its listener was paid. Calls that ended before the workers
-- took over were settled by the old system: never pay them a second time. The column is
-- added with the adoption's time as its default, so that every call there is reads as
-- settled without a row being written (a constant default rewrites nothing), then has no
-- default for the calls to come; the few still ongoing, found by their index, are
-- unsettled again.
SELECT pg_temp.add_column('user_calls', 'end_reason', 'varchar(30)');
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'user_calls'::regclass
                   AND attname = 'settled_at' AND NOT attisdropped) THEN
        EXECUTE format('ALTER TABLE user_calls ADD COLUMN settled_at timestamptz DEFAULT %L',
                       now());
        ALTER TABLE user_calls ALTER COLUMN settled_at DROP DEFAULT;
        UPDATE user_calls SET settled_at = NULL WHERE status = 'ongoing';
    END IF;
END $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_calls_unsettled
    ON user_calls (call_id)
    WHERE status <> 'ongoing' AND settled_at IS NULL;
-- What the workers record of a call's billing and pay (schema 8): the sighting of its
-- parties its billing closed on; its listener's pay, exact, in rupees (the API keeps
-- listener_money_earned as whole rupees); and who paid it: these workers (an 'earn' row
-- into withdrawable_money) or the API's own hang-up (coins into balance_coins).
SELECT pg_temp.add_column('user_calls', 'parties_last_seen', 'timestamptz');
SELECT pg_temp.add_column('user_calls', 'listener_pay', 'numeric(12, 2)');
SELECT pg_temp.add_column('user_calls', 'paid_by', 'varchar(10)');
SELECT pg_temp.add_constraint('user_calls', 'user_calls_paid_by_check',
                              'CHECK (paid_by IN (''workers'', ''api''))');
-- Whether the API's minute-1 spend row (it names no call) has been linked to the call.
-- The calls there are when the column is added read true (by its default then, without a
-- row written) but for those not settled yet: old settled calls are never looked at
-- again.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'user_calls'::regclass
                   AND attname = 'first_minute_linked' AND NOT attisdropped) THEN
        ALTER TABLE user_calls ADD COLUMN first_minute_linked boolean NOT NULL DEFAULT true;
        ALTER TABLE user_calls ALTER COLUMN first_minute_linked SET DEFAULT false;
        UPDATE user_calls SET first_minute_linked = false
        WHERE status = 'ongoing' OR settled_at IS NULL;
    END IF;
END $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_calls_first_minute_unlinked
    ON user_calls (call_id)
    WHERE NOT first_minute_linked;

-- A constraint of ours that an API route can break after it has written money fails it
-- half-done (it writes without a transaction): the API debits minute 1 before it inserts
-- the call, so a check that refused a caller calling themselves lost those coins. Such
-- checks are not kept (see README, Beside the Saathii API).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'caller_is_not_listener'
               AND conrelid = 'user_calls'::regclass) THEN
        ALTER TABLE user_calls DROP CONSTRAINT caller_is_not_listener;
    END IF;
END $$;
-- The API deletes an account's calls (users cascade): a spend or earn row of the other
-- party then loses its call_id rather than stopping the deletion half-way.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'user_transactions_call_id_fkey'
               AND conrelid = 'user_transactions'::regclass AND confdeltype <> 'n') THEN
        ALTER TABLE user_transactions DROP CONSTRAINT user_transactions_call_id_fkey;
        ALTER TABLE user_transactions ADD CONSTRAINT user_transactions_call_id_fkey
            FOREIGN KEY (call_id) REFERENCES user_calls (call_id) ON DELETE SET NULL NOT VALID;
        INSERT INTO unvalidated VALUES ('user_transactions', 'user_transactions_call_id_fkey');
    END IF;
END $$;

-- An ended call stays ended (schema 10). The API's hang-up reads the call 'ongoing', then
-- writes its end with a statement that no longer asks (WHERE call_id = $1), then credits
-- the listener: when a tick ended the call in between (the hang-up waits on the tick's
-- row lock), that write would turn our end into the API's and its credit pay the
-- listener a second time. Refused here, it fails the route before it has written
-- anything, as the same hang-up a moment later finds the call already ended. Only a
-- change of the end itself is refused: settling an ended call writes other columns. (A
-- column trigger with a WHEN: a billing tick's coins_spent updates do not fire it.)
CREATE OR REPLACE FUNCTION refuse_reopening_an_ended_call() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'call % already ended (%, %)', OLD.call_id, OLD.status, OLD.end_reason
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ended_call_stays_ended',
              HINT = 'an ended call''s status and end_time are final';
END $$;
SELECT pg_temp.add_trigger('user_calls', 'ended_call_stays_ended', $$
    BEFORE UPDATE OF status, end_time ON user_calls
    FOR EACH ROW
    WHEN (OLD.status <> 'ongoing'
          AND (NEW.status IS DISTINCT FROM OLD.status
               OR NEW.end_time IS DISTINCT FROM OLD.end_time))
    EXECUTE FUNCTION refuse_reopening_an_ended_call()$$);

-- Calls someone else ended (the API's hang-up: no end_reason of ours) whose billing is
-- not closed yet: the minutes they owe up to their end, by the rules above: started
-- before end_time and before their parties' last sighting + `slack`, within the maximum
-- length (minute 1 always).
CREATE OR REPLACE FUNCTION ended_calls_owing(slack interval, max_minutes integer)
RETURNS TABLE (call_id integer, caller_id integer, listener_id integer,
               start_time timestamptz, rate integer, paid bigint, seen timestamptz,
               due integer)
LANGUAGE sql STABLE AS $$
    SELECT c.call_id, c.user_id, c.listener_id, c.start_time, r.rate,
           c.coins_spent / r.rate, h.seen,
           greatest(1, ceil(extract(epoch FROM least(c.end_time, h.seen + slack,
                                                       c.start_time + max_minutes
                                                                      * interval '1 minute')
                                                 - c.start_time) / 60))::integer
    FROM user_calls c
    LEFT JOIN user_status caller ON caller.user_id = c.user_id
    LEFT JOIN user_status listener ON listener.user_id = c.listener_id
    CROSS JOIN LATERAL (SELECT call_rate(c.call_type) AS rate) r
    CROSS JOIN LATERAL (
        SELECT parties_seen(c.start_time, caller.last_seen, listener.last_seen) AS seen
    ) h
    WHERE c.status <> 'ongoing' AND c.settled_at IS NULL AND c.end_reason IS NULL
      AND c.end_time IS NOT NULL
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS user_calls_caller_ongoing
    ON user_calls (user_id)
    WHERE status = 'ongoing';
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_calls_listener_ongoing
    ON user_calls (listener_id)
    WHERE status = 'ongoing';

-- Room on every page for the next version of its rows. A billing tick rewrites each
-- ongoing call (coins_spent) and its caller's wallet every minute; with free space on the
-- page the new version stays there and no index changes (a HOT update: one small write
-- instead of one per index), and the version a tick replaced is pruned by the next one.
-- Calls are appended together and are ongoing together, so their pages need room for a
-- second version of every row at once (fillfactor 50: at 60, a third of a tick's call
-- updates found no room and wrote every index); wallets are few per page on a call.
SELECT pg_temp.set_storage('user_calls', 'fillfactor', '50');
SELECT pg_temp.set_storage('user_wallets', 'fillfactor', '80');

-- The platform's own tables -----------------------------------------------------------

-- One row per (job, slot): the record of every run, and the key that makes a second
-- message for the same slot (a second scheduler, a redelivery) a no-op.
CREATE TABLE IF NOT EXISTS job_runs (
    run_id         bigserial PRIMARY KEY,
    job            text NOT NULL,
    scheduled_for  timestamptz NOT NULL,
    status         text NOT NULL
                   CHECK (status IN ('running', 'succeeded', 'failed', 'skipped',
                                     'abandoned')),
    attempt        integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    trigger        text NOT NULL DEFAULT 'schedule',
    message_id     text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    duration       interval,
    -- Who runs it: the worker process, and the database backend whose transaction holds
    -- the job's lock. A running row whose backend is gone, or past its deadline, was
    -- abandoned by a dead worker.
    host           text,
    pid            integer,
    backend_pid    integer,
    backend_start  timestamptz,
    deadline       timestamptz,
    result         jsonb,
    error          text,
    skip_reason    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job, scheduled_for)
);

CREATE INDEX CONCURRENTLY IF NOT EXISTS job_runs_latest ON job_runs (job, started_at DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS job_runs_running
    ON job_runs (job)
    WHERE status = 'running';
-- The admin's runs of one job, newest first, by keyset on run_id (schema 12): without it a
-- rare job's runs (a daily one's) are found by reading the whole table backwards.
CREATE INDEX CONCURRENTLY IF NOT EXISTS job_runs_job_run ON job_runs (job, run_id);
-- ... and the failures first: few rows, however many runs succeed around them.
CREATE INDEX CONCURRENTLY IF NOT EXISTS job_runs_failed ON job_runs (run_id)
    WHERE status = 'failed';

-- Operator controls per job: pause, and overrides of the job's parameters.
CREATE TABLE IF NOT EXISTS job_settings (
    job         text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    paused_at   timestamptz,
    overrides   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(overrides) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- presence_cleanup's parameter is named presence_inactive_minutes, as the setting it
-- defaults to (schema 7): an override under its old name keeps its value, unless one
-- under the new name is there already.
UPDATE job_settings
SET overrides = jsonb_build_object('presence_inactive_minutes',
                                   overrides -> 'inactive_minutes')
                || (overrides - 'inactive_minutes'),
    updated_at = now()
WHERE job = 'presence_cleanup' AND overrides ? 'inactive_minutes';

-- Our live processes: every `dramatiq workers` process and `periodiq workers` scheduler
-- beats here every PROCESS_BEAT_SECONDS (workers.engine.liveness) and removes its row on
-- a clean exit; a row whose beat is older than PROCESS_STALE_SECONDS is a process that
-- died. In PostgreSQL rather than Redis, so that a Redis restart forgets nobody.
CREATE TABLE IF NOT EXISTS job_processes (
    process_id  uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('worker', 'scheduler')),
    host        text NOT NULL,
    pid         integer NOT NULL,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL,
    beat_at     timestamptz NOT NULL,
    queues      text[] NOT NULL DEFAULT '{}',
    threads     integer NOT NULL DEFAULT 0,
    -- The runs it is executing: [{job, scheduled_for, attempt, since}].
    running     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(running) = 'array'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The health_check job's record: one row per run (its slot), each check's figure and
-- verdict. A check's alert and its recovery are told once, by comparing a run with the
-- one before it.
CREATE TABLE IF NOT EXISTS health_checks (
    checked_for  timestamptz PRIMARY KEY,
    verdict      text NOT NULL CHECK (verdict IN ('ok', 'warn', 'fail')),
    checks       jsonb NOT NULL CHECK (jsonb_typeof(checks) = 'array'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every constraint of ours added NOT VALID above is validated: each reads its table under
-- a SHARE UPDATE EXCLUSIVE lock, which lets the API's reads and writes through.
DO $$
DECLARE
    k record;
BEGIN
    FOR k IN SELECT DISTINCT tbl, name FROM unvalidated LOOP
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', k.tbl, k.name);
    END LOOP;
    DELETE FROM unvalidated;
END $$;

-- The metrics' counters (schema 11): kept as runs finish, so that a scrape reads a few
-- rows, not the history (job_runs holds a row per job per minute, and retention deletes
-- old ones: a count of its rows would go down). job_run_totals counts every attempt that
-- ended, by job, status and the histogram bucket its duration fell in (`le`, seconds:
-- the smallest of run_duration_buckets() it fits, 'Infinity' past the last);
-- job_run_figures sums each number of the job's succeeded results (coin_deduction's
-- coins_charged, money_earned, its calls_ended per reason, ...). They start at zero when
-- the tables are made: history before that is not counted.
CREATE TABLE IF NOT EXISTS job_run_totals (
    job         text NOT NULL,
    status      text NOT NULL,
    le          double precision NOT NULL,
    runs        bigint NOT NULL DEFAULT 0,
    seconds     double precision NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, status, le)
);
CREATE TABLE IF NOT EXISTS job_run_figures (
    job         text NOT NULL,
    figure      text NOT NULL,
    total       numeric NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, figure)
);

CREATE OR REPLACE FUNCTION run_duration_buckets() RETURNS double precision[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}'
           ::double precision[]
$$;

-- The figures of a run's result: its numbers (and decimal strings: money is written as
-- text so that no float rounds it), top-level or one level down as "key.subkey".
CREATE OR REPLACE FUNCTION result_figures(result jsonb)
RETURNS TABLE (figure text, value numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT f.figure, (f.value #>> '{}')::numeric
    FROM (SELECT coalesce(top.key || '.' || sub.key, top.key) AS figure,
                 coalesce(sub.value, top.value) AS value
          FROM jsonb_each(CASE WHEN jsonb_typeof(result) = 'object' THEN result END) top
          LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(top.value) = 'object'
                                            THEN top.value END) sub ON true) f
    WHERE jsonb_typeof(f.value) = 'number'
       OR (jsonb_typeof(f.value) = 'string' AND f.value #>> '{}' ~ '^-?[0-9]+(\.[0-9]+)?$')
$$;

-- An attempt that ends (running to succeeded, failed, skipped or abandoned) is counted in
-- the same transaction that ends it: a success with the job's writes, or not at all.
CREATE OR REPLACE FUNCTION count_finished_run() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    seconds double precision := coalesce(extract(epoch FROM NEW.duration), 0);
BEGIN
    INSERT INTO job_run_totals AS t (job, status, le, runs, seconds)
    SELECT NEW.job, NEW.status, coalesce(min(b.le), 'Infinity'), 1, seconds
    FROM unnest(run_duration_buckets()) AS b(le)
    WHERE b.le >= seconds
    ON CONFLICT (job, status, le) DO UPDATE
    SET runs = t.runs + 1, seconds = t.seconds + excluded.seconds, updated_at = now();
    IF NEW.status = 'succeeded' THEN
        INSERT INTO job_run_figures AS f (job, figure, total)
        SELECT NEW.job, r.figure, r.value FROM result_figures(NEW.result) r
        ON CONFLICT (job, figure) DO UPDATE
        SET total = f.total + excluded.total, updated_at = now();
    END IF;
    RETURN NULL;
END $$;
SELECT pg_temp.add_trigger('job_runs', 'job_run_counted', $$
    AFTER UPDATE OF status ON job_runs
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION count_finished_run()$$);

-- What every admin action did (schema 12): who (a token's fingerprint, a JWT's subject),
-- with which role and through what (a bearer token, a JWT, a browser session), what
-- (action, target, parameters), from where (address, user agent), and its outcome (done,
-- refused, failed) with a line of detail. Kept a year by the retention policy to come.
CREATE TABLE IF NOT EXISTS admin_audit (
    audit_id    bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    role        text NOT NULL,
    via         text NOT NULL,
    action      text NOT NULL,
    target      text,
    params      jsonb NOT NULL DEFAULT '{}',
    outcome     text NOT NULL CHECK (outcome IN ('done', 'refused', 'failed')),
    detail      text,
    address     text,
    user_agent  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS schema_version (
    version      integer PRIMARY KEY,
    description  text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_version (version, description)
VALUES (1, 'Saathii tables, money constraints, job_runs, job_settings'),
       (2, 'ledger keys per call minute and settlement, badge levels, call end reasons'),
       (3, 'badge_days: settlement waits for its day''s badges'),
       (4, 'call_end_time(): no paid minute after a call''s end'),
       (5, 'fillfactor of user_calls and user_wallets: billing updates stay on their page'),
       (6, 'fillfactor 50 of user_calls: every call of a page can be billed in place'),
       (7, 'in_shard(); presence_cleanup''s inactive_minutes override renamed'),
       (8, 'beside the Saathii API: sightings, maximum length, API hang-ups, exact pay'),
       (9, 'job_processes (heartbeats of workers and schedulers), health_checks'),
       (10, 'ended_call_stays_ended: the API''s hang-up cannot rewrite a call a tick ended'),
       (11, 'job_run_totals, job_run_figures: the metrics'' counters, kept as runs end'),
       (12, 'admin_audit: every action of the admin, who, what, from where, its outcome')
ON CONFLICT (version) DO NOTHING;
