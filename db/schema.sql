-- saathii-workers schema, applied by `python -m workers db init`.
--
-- Idempotent and additive: every statement creates what is missing and never drops,
-- renames or rewrites. An existing Saathii database adopts the workers by running it:
-- the API's tables keep their names and columns; columns we add have defaults, so the
-- API's inserts keep working. Constraints that money needs are added by name, once.

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

CREATE OR REPLACE FUNCTION pg_temp.add_index(name text, definition text,
                                             is_unique boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE %s INDEX %I ON %s',
                       CASE WHEN is_unique THEN 'UNIQUE' ELSE '' END, name, definition);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION pg_temp.add_constraint(tbl regclass, name text, definition text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = tbl AND conname = name) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, name, definition);
    END IF;
END $$;

-- Storage parameters of a table, set only when they differ (ALTER TABLE SET takes a
-- SHARE UPDATE EXCLUSIVE lock; it applies to pages written from then on).
CREATE OR REPLACE FUNCTION pg_temp.set_storage(tbl regclass, parameter text, value text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class
                   WHERE oid = tbl AND format('%s=%s', parameter, value) = ANY(reloptions)) THEN
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

-- Every table has created_at and updated_at.
SELECT pg_temp.add_column('users', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('users', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_roles', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_roles', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_wallets', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_wallets', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_transactions', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_transactions', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_status', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_status', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_calls', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('user_calls', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('listener_badges', 'created_at', 'timestamptz NOT NULL DEFAULT now()');
SELECT pg_temp.add_column('listener_badges', 'updated_at', 'timestamptz NOT NULL DEFAULT now()');

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
SELECT pg_temp.add_constraint('user_calls', 'caller_is_not_listener',
                              'CHECK (user_id <> listener_id)');
SELECT pg_temp.add_constraint('listener_badges', 'badge_rates_positive',
                              'CHECK (audio_rate_per_minute > 0 AND video_rate_per_minute > 0)');

SELECT pg_temp.add_index('user_calls_ongoing', 'user_calls (call_id) WHERE status = ''ongoing''');
SELECT pg_temp.add_index('user_calls_listener_start', 'user_calls (listener_id, start_time)');
SELECT pg_temp.add_index('user_status_last_seen', 'user_status (last_seen)');
SELECT pg_temp.add_index('user_transactions_wallet', 'user_transactions (wallet_id)');

-- Prices, pay and the ledger's keys ---------------------------------------------------

-- What a started minute of a call costs its caller, in coins.
CREATE OR REPLACE FUNCTION call_rate(call_type text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE call_type WHEN 'audio' THEN 10 WHEN 'video' THEN 60 END
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

-- Where each ongoing call stands at logical time `as_of`: its rate, the minutes it has
-- paid (coins_spent / rate) and the minutes it has started, so owes (minute k starts at
-- start_time + (k - 1) minutes; minute 1 at once). A party not seen for longer than
-- `heartbeat` went silent at its last sighting + `heartbeat` (never before the call
-- started): the call then owes only the minutes started before that instant, and ends
-- there. Calls that start after `as_of` (a late tick) are not there yet.
CREATE OR REPLACE FUNCTION ongoing_calls_at(as_of timestamptz, heartbeat interval)
RETURNS TABLE (call_id integer, caller_id integer, listener_id integer,
               start_time timestamptz, rate integer, paid bigint, silent boolean,
               silent_since timestamptz, due integer)
LANGUAGE sql STABLE AS $$
    SELECT c.call_id, c.user_id, c.listener_id, c.start_time, r.rate,
           c.coins_spent / r.rate, h.silent_since < as_of, h.silent_since,
           CASE WHEN h.silent_since < as_of
                THEN greatest(1, ceil(extract(epoch FROM h.silent_since - c.start_time) / 60))
                ELSE floor(extract(epoch FROM as_of - c.start_time) / 60) + 1
           END::integer
    FROM user_calls c
    LEFT JOIN user_status caller ON caller.user_id = c.user_id
    LEFT JOIN user_status listener ON listener.user_id = c.listener_id
    CROSS JOIN LATERAL (SELECT call_rate(c.call_type) AS rate) r
    CROSS JOIN LATERAL (
        SELECT greatest(c.start_time,
                        least(coalesce(caller.last_seen, '-infinity'),
                              coalesce(listener.last_seen, '-infinity'))) + heartbeat
               AS silent_since
    ) h
    WHERE c.status = 'ongoing' AND c.start_time <= as_of
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
SELECT pg_temp.add_column('user_transactions', 'call_id',
                          'integer REFERENCES user_calls (call_id)');
SELECT pg_temp.add_column('user_transactions', 'call_minute',
                          'integer CHECK (call_minute >= 1)');
-- Exactly once, by construction: a (call, minute) is charged at most once, a call is
-- settled at most once, whoever writes it and however often.
SELECT pg_temp.add_index('user_transactions_one_spend_per_call_minute',
                         'user_transactions (call_id, call_minute) WHERE tx_type = ''spend''',
                         true);
SELECT pg_temp.add_index('user_transactions_one_earn_per_call',
                         'user_transactions (call_id) WHERE tx_type = ''earn''', true);
SELECT pg_temp.add_constraint('user_transactions', 'call_spend_names_its_minute',
    'CHECK (tx_type <> ''spend'' OR call_id IS NULL OR call_minute IS NOT NULL)');

-- Why a call ended, and when its listener was paid.
SELECT pg_temp.add_column('user_calls', 'end_reason', 'varchar(30)');
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'user_calls'::regclass
                   AND attname = 'settled_at' AND NOT attisdropped) THEN
        ALTER TABLE user_calls ADD COLUMN settled_at timestamptz;
        -- Calls that ended before the workers took over were settled by the old system:
        -- never pay them a second time.
        UPDATE user_calls SET settled_at = coalesce(end_time, now()) WHERE status <> 'ongoing';
    END IF;
END $$;
SELECT pg_temp.add_index('user_calls_unsettled',
                         'user_calls (call_id) WHERE status <> ''ongoing'' AND settled_at IS NULL');
SELECT pg_temp.add_index('user_calls_caller_ongoing',
                         'user_calls (user_id) WHERE status = ''ongoing''');
SELECT pg_temp.add_index('user_calls_listener_ongoing',
                         'user_calls (listener_id) WHERE status = ''ongoing''');

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
                   CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'abandoned')),
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

SELECT pg_temp.add_index('job_runs_latest', 'job_runs (job, started_at DESC)');
SELECT pg_temp.add_index('job_runs_running', 'job_runs (job) WHERE status = ''running''');

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
SET overrides = jsonb_build_object('presence_inactive_minutes', overrides -> 'inactive_minutes')
                || (overrides - 'inactive_minutes'),
    updated_at = now()
WHERE job = 'presence_cleanup' AND overrides ? 'inactive_minutes';

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
       (7, 'in_shard(); presence_cleanup''s inactive_minutes override renamed')
ON CONFLICT (version) DO NOTHING;
