-- badge_assignment: the daily badges (workers.jobs.badge_assignment). Each query is
-- named by its `-- name:` line.
-- %(day)s is the local date D the badges are for, %(tz)s the business's timezone name.

-- name: assign_daily_badges
-- Every active listener holds one badge for local day D, earned by the minutes they talked
-- on D-1: completed or dropped calls (an ongoing call has no final duration yet) that
-- started within D-1 on the local clock, [D-1 00:00, D 00:00) in %(tz)s, counted whole
-- even when they end after midnight; a NULL duration counts 0. The badge is the level
-- with the highest min_minutes reached (minutes = seconds / 60, compared as
-- seconds >= min_minutes * 60 so 179:59 is not 180), 'basic' when none is; its rates are
-- copied so a later change of badge_levels never reprices a past day. The day bounds are
-- computed here from the local dates, so a 23- or 25-hour DST day is exactly that long.
-- A listener who already holds a badge for D keeps it as is: re-running a day, or
-- backfilling it after its calls changed, writes nothing. An active listener has the
-- listener role (active there) and an active account (user_status.is_active: the API
-- deactivates through it), and an account that existed on D: a listener gets no badge for
-- a day before they registered (a catch-up of a week on a fresh install backfills none).
WITH day AS (
    SELECT (%(day)s::date - 1)::timestamp AT TIME ZONE %(tz)s AS starts,
           %(day)s::date::timestamp AT TIME ZONE %(tz)s AS ends
),
talked AS (
    SELECT r.user_id AS listener_id,
           coalesce(sum(c.duration_seconds), 0) AS seconds
    FROM active_listeners_on(%(day)s::date, %(tz)s) r
    CROSS JOIN day
    LEFT JOIN user_calls c
           ON c.listener_id = r.user_id
          AND c.status IN ('completed', 'dropped')
          AND c.start_time >= day.starts
          AND c.start_time < day.ends
    GROUP BY r.user_id
)
INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,
                             video_rate_per_minute)
SELECT t.listener_id, %(day)s::date, level.badge, level.audio_rate_per_minute,
       level.video_rate_per_minute
FROM talked t
CROSS JOIN LATERAL (
    SELECT l.badge, l.audio_rate_per_minute, l.video_rate_per_minute
    FROM badge_levels l
    WHERE l.min_minutes * 60 <= t.seconds OR l.badge = 'basic'
    ORDER BY l.min_minutes * 60 <= t.seconds DESC, l.min_minutes DESC
    LIMIT 1
) level
ON CONFLICT (listener_id, date) DO NOTHING;

-- name: badge_counts
-- The badges the active listeners hold for D, by level: what the day's pay will use.
SELECT count(*) AS total_listeners,
       count(*) FILTER (WHERE b.badge = 'basic') AS basic_assigned,
       count(*) FILTER (WHERE b.badge = 'bronze') AS bronze_assigned,
       count(*) FILTER (WHERE b.badge = 'silver') AS silver_assigned,
       count(*) FILTER (WHERE b.badge = 'gold') AS gold_assigned
FROM active_listeners_on(%(day)s::date, %(tz)s) r
LEFT JOIN listener_badges b ON b.listener_id = r.user_id AND b.date = %(day)s::date;

-- name: mark_badge_day
-- Day D's badges are assigned: its calls can now be settled at its rates.
INSERT INTO badge_days (date) VALUES (%(day)s::date) ON CONFLICT (date) DO NOTHING;
