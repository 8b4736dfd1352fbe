-- The Saathii API's own database, as its database/db.sql builds it (saathiiapp/
-- saathii_backend_fastapi, commit 34c75ee), written here from its facts: the same tables,
-- columns, types, defaults and constraints (every foreign key to users is ON DELETE
-- CASCADE; most columns nullable; listener_money_earned an integer; no end_reason,
-- settled_at, busy_until nor user_roles.active). The tests and the storms' API mode build a
-- database from this, let `db init` adopt it, and drive it with the API's statements
-- (saathii_api.py).

CREATE TABLE users (
    user_id             serial PRIMARY KEY,
    username            varchar(10) UNIQUE NOT NULL,
    sex                 varchar(10) CHECK (sex IN ('male', 'female')),
    dob                 date NOT NULL,
    phone               varchar(20) UNIQUE NOT NULL,
    preferred_language  varchar(50),
    profile_image_url   text,
    rating              numeric(3, 2) DEFAULT 0,
    interests           text[],
    bio                 text,
    country             varchar(100) DEFAULT 'India',
    updated_at          timestamptz DEFAULT now(),
    created_at          timestamptz DEFAULT now()
);

CREATE TABLE user_roles (
    user_id      int REFERENCES users (user_id) ON DELETE CASCADE,
    role         varchar(20) CHECK (role IN ('customer', 'listener')),
    assigned_at  timestamptz DEFAULT now(),
    PRIMARY KEY (user_id, role)
);

CREATE TABLE user_wallets (
    wallet_id           serial PRIMARY KEY,
    user_id             int UNIQUE REFERENCES users (user_id) ON DELETE CASCADE,
    balance_coins       bigint DEFAULT 0,
    withdrawable_money  numeric(12, 2) DEFAULT 0.00,
    updated_at          timestamptz DEFAULT now(),
    created_at          timestamptz DEFAULT now()
);

CREATE TABLE user_transactions (
    transaction_id  serial PRIMARY KEY,
    wallet_id       int REFERENCES user_wallets (wallet_id) ON DELETE CASCADE,
    tx_type         varchar(20) CHECK (tx_type IN ('purchase', 'spend', 'earn', 'withdraw',
                                                   'bonus', 'referral_bonus')),
    coins_change    bigint DEFAULT 0,
    money_change    numeric(12, 2) DEFAULT 0.00,
    updated_at      timestamptz DEFAULT now(),
    created_at      timestamptz DEFAULT now()
);

CREATE TABLE user_status (
    user_id     int PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    is_online   boolean DEFAULT false,
    last_seen   timestamptz DEFAULT now(),
    is_busy     boolean DEFAULT false,
    wait_time   int,
    is_active   boolean DEFAULT true,
    updated_at  timestamptz DEFAULT now(),
    created_at  timestamptz DEFAULT now()
);

CREATE TABLE user_calls (
    call_id                serial PRIMARY KEY,
    user_id                int REFERENCES users (user_id) ON DELETE CASCADE,
    listener_id            int REFERENCES users (user_id) ON DELETE CASCADE,
    call_type              varchar(10) CHECK (call_type IN ('audio', 'video')),
    start_time             timestamptz NOT NULL DEFAULT now(),
    end_time               timestamptz,
    duration_seconds       int,
    duration_minutes       int,
    coins_spent            bigint DEFAULT 0,
    listener_money_earned  bigint DEFAULT 0,
    status                 varchar(20) CHECK (status IN ('ongoing', 'completed', 'dropped'))
                           DEFAULT 'ongoing',
    updated_at             timestamptz DEFAULT now(),
    created_at             timestamptz DEFAULT now()
);

CREATE TABLE user_streaks (
    user_id         int PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    current_streak  int DEFAULT 0,
    longest_streak  int DEFAULT 0,
    last_active     date,
    updated_at      timestamptz DEFAULT now()
);

CREATE TABLE user_favorites (
    favoriter_id  int REFERENCES users (user_id) ON DELETE CASCADE,
    favoritee_id  int REFERENCES users (user_id) ON DELETE CASCADE,
    created_at    timestamptz DEFAULT now(),
    updated_at    timestamptz DEFAULT now(),
    PRIMARY KEY (favoriter_id, favoritee_id),
    CHECK (favoriter_id <> favoritee_id)
);

CREATE TABLE user_blocks (
    blocker_id   int REFERENCES users (user_id) ON DELETE CASCADE,
    blocked_id   int REFERENCES users (user_id) ON DELETE CASCADE,
    action_type  varchar(20) CHECK (action_type IN ('block', 'report')),
    reason       text,
    PRIMARY KEY (blocker_id, blocked_id),
    created_at   timestamptz DEFAULT now()
);

CREATE TABLE listener_badges (
    listener_id            int REFERENCES users (user_id) ON DELETE CASCADE,
    date                   date NOT NULL,
    badge                  varchar(20) CHECK (badge IN ('gold', 'silver', 'bronze', 'basic')),
    audio_rate_per_minute  numeric(5, 2) NOT NULL,
    video_rate_per_minute  numeric(5, 2) NOT NULL,
    assigned_at            timestamptz DEFAULT now(),
    PRIMARY KEY (listener_id, date),
    updated_at             timestamptz DEFAULT now(),
    created_at             timestamptz DEFAULT now()
);

CREATE TABLE listener_payout (
    user_id         int PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    payout_account  jsonb,
    updated_at      timestamptz DEFAULT now(),
    created_at      timestamptz DEFAULT now()
);

CREATE TABLE listener_profile (
    listener_id                 int PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    verification_status         boolean DEFAULT false,
    verified_on                 timestamptz,
    verification_message        text,
    audio_file_url              text,
    listener_allowed_call_type  text[] CHECK (listener_allowed_call_type
                                              <@ ARRAY['audio', 'video', 'both'])
                                DEFAULT ARRAY['audio', 'video'],
    listener_audio_call_enable  boolean DEFAULT true,
    listener_video_call_enable  boolean DEFAULT true,
    updated_at                  timestamptz DEFAULT now(),
    created_at                  timestamptz DEFAULT now()
);

CREATE TABLE user_rewards (
    reward_id     serial PRIMARY KEY,
    user_id       int NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    reward_type   varchar(50) NOT NULL
                  CHECK (reward_type IN ('referral', 'streak', 'special_event')),
    related_user  int REFERENCES users (user_id) ON DELETE CASCADE,
    reward_coins  bigint DEFAULT 0,
    reward_meta   jsonb,
    created_at    timestamptz DEFAULT now(),
    updated_at    timestamptz DEFAULT now(),
    CONSTRAINT uq_unique_referral UNIQUE (user_id, related_user) DEFERRABLE INITIALLY IMMEDIATE
);

CREATE TABLE user_delete_requests (
    request_id  serial PRIMARY KEY,
    user_id     int NOT NULL,
    username    varchar(10),
    phone       varchar(20),
    reason      text,
    user_role   varchar(20) NOT NULL CHECK (user_role IN ('customer', 'listener')),
    deleted_at  timestamptz DEFAULT now(),
    created_at  timestamptz DEFAULT now()
);

CREATE TABLE help_support (
    support_id      serial PRIMARY KEY,
    user_id         int NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    issue_type      varchar(30) NOT NULL
                    CHECK (issue_type IN ('call_session_support', 'payment_support', 'other')),
    issue           text NOT NULL,
    description     text,
    image_s3_urls   text[],
    require_call    boolean DEFAULT false,
    call_id         int REFERENCES user_calls (call_id) ON DELETE SET NULL,
    transaction_id  int REFERENCES user_transactions (transaction_id) ON DELETE SET NULL,
    status          varchar(20) CHECK (status IN ('active', 'resolved')) DEFAULT 'active',
    admin_notes     text,
    resolved_at     timestamptz,
    created_at      timestamptz DEFAULT now(),
    updated_at      timestamptz DEFAULT now()
);

CREATE INDEX idx_calls_user ON user_calls (user_id);
CREATE INDEX idx_calls_listener ON user_calls (listener_id);
