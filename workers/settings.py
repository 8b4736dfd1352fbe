"""Settings, read from the environment (and an optional .env) where a process starts.

Two models. BrokerSettings is what importing the package needs to create the Dramatiq
broker and declare the actors, and nothing more. Settings (all of them) is read when one of
our processes boots (workers.engine.boot), and passed down from there. A bad value stops
the process with one line naming the variable and why (exit 2): see `load_settings`.

A job parameter defaults to the setting of its name (workers.engine.jobs.JobParams): a
setting here is how a job's parameter is set for a whole deployment.
"""

import os
import sys
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis.connection
import sentry_sdk.utils
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.errors import BadSetting

DEFAULT_DATABASE_URL = "postgresql://localhost:5432/saathii"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_TIMEZONE = "Asia/Kolkata"
#: periodiq drops a scheduled message older than this when a worker picks it up (seconds).
DEFAULT_SKIP_DELAY = 30
#: Longest any single SQL statement may wait for a row or table lock (milliseconds).
DEFAULT_LOCK_TIMEOUT_MS = 5_000
#: Grace after a run's time limit before a 'running' row counts as abandoned (seconds).
DEFAULT_ABANDON_GRACE = 60

#: A SIGKILLed worker's messages go back to their queue once its heartbeat is this old
#: (milliseconds). Lower means a slow but live worker's messages may be delivered twice,
#: which the run contract tolerates anyway.
DEFAULT_DRAMATIQ_HEARTBEAT_TIMEOUT_MS = 60_000
#: Of a million Redis broker commands, how many also requeue the messages of dead workers
#: (Dramatiq's default: 1 in 1000). Higher finds a killed worker's messages sooner.
DEFAULT_DRAMATIQ_MAINTENANCE_CHANCE = 1_000
#: A call whose caller or listener has not been seen for this long is decided silent and
#: ended (seconds): the detection delay, not what is charged.
DEFAULT_HEARTBEAT_TIMEOUT = 120
#: A minute is owed when its parties were seen at most this long before it started; a
#: silent call ends this long after their last sighting (seconds): one heartbeat interval
#: (the API asks apps to heartbeat every 30-60 s).
DEFAULT_HEARTBEAT_SLACK = 60
#: The longest a call runs: it ends then, owing nothing more (minutes).
DEFAULT_MAX_CALL_MINUTES = 240
#: A user not seen for this long is marked offline (minutes).
DEFAULT_PRESENCE_INACTIVE_MINUTES = 5
#: Compressed log files are deleted after this many days.
DEFAULT_LOG_RETENTION_DAYS = 14
#: job_runs rows are deleted after this many days.
DEFAULT_JOB_RUNS_RETENTION_DAYS = 30

#: Each worker process and scheduler records a heartbeat this often (seconds).
DEFAULT_PROCESS_BEAT_SECONDS = 10
#: Where `python -m workers metrics` listens (9464: the Prometheus exporters' registry
#: lists no other use of it that we would clash with here).
DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT = "127.0.0.1", 9464
#: Where `python -m workers admin` listens.
DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_PORT = "127.0.0.1", 8080

#: A process whose heartbeat is older than this is dead (seconds).
DEFAULT_PROCESS_STALE_SECONDS = 60

#: Most billing shards: each is a job, a message per minute and a worker thread busy.
MAX_BILLING_SHARDS = 64

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


#: Where `make run` and `make db` write the URLs of the embedded servers they started
#: (devtools.local), relative to the working directory: read under .env and the
#: environment, so that the CLI run beside them finds them with nothing set.
LOCAL_SERVICES_FILE = Path(os.environ.get("DATA_DIR", ".data")) / "local.env"


class BrokerSettings(BaseSettings):
    """What the Dramatiq broker and the actors' declaration need: read at import."""

    model_config = SettingsConfigDict(env_file=(LOCAL_SERVICES_FILE, ".env"), extra="ignore",
                                      frozen=True)

    redis_url: str = DEFAULT_REDIS_URL
    periodiq_skip_delay: int = Field(DEFAULT_SKIP_DELAY, ge=1, description="seconds")
    dramatiq_heartbeat_timeout_ms: int = Field(DEFAULT_DRAMATIQ_HEARTBEAT_TIMEOUT_MS, ge=1000)
    dramatiq_maintenance_chance: int = Field(DEFAULT_DRAMATIQ_MAINTENANCE_CHANCE, ge=1,
                                             le=1_000_000)
    billing_shards: int = Field(1, ge=1, le=MAX_BILLING_SHARDS)
    #: Dramatiq's own Prometheus middleware in the workers (per-message counters, served
    #: by the worker's parent on dramatiq_prom_host:dramatiq_prom_port, its environment).
    dramatiq_prometheus: bool = False

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        try:
            redis.connection.parse_url(value)
        except ValueError as error:
            raise ValueError(f"not a usable Redis URL ({error})") from None
        return value


class Settings(BrokerSettings):
    """Every setting: read when one of our processes boots."""

    database_url: str = DEFAULT_DATABASE_URL
    app_timezone: str = DEFAULT_TIMEZONE
    sentry_dsn: str | None = None
    sentry_environment: str = "production"
    alert_webhook_url: str | None = None
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_dir: Path | None = None
    db_lock_timeout_ms: int = Field(DEFAULT_LOCK_TIMEOUT_MS, ge=1)
    abandon_grace_seconds: int = Field(DEFAULT_ABANDON_GRACE, ge=0)
    catch_up_on_boot: bool = True
    heartbeat_timeout_seconds: int = Field(DEFAULT_HEARTBEAT_TIMEOUT, ge=10)
    heartbeat_slack_seconds: int = Field(DEFAULT_HEARTBEAT_SLACK, ge=1)
    max_call_minutes: int = Field(DEFAULT_MAX_CALL_MINUTES, ge=1)
    presence_inactive_minutes: int = Field(DEFAULT_PRESENCE_INACTIVE_MINUTES, ge=1)
    log_retention_days: int = Field(DEFAULT_LOG_RETENTION_DAYS, ge=1)
    job_runs_retention_days: int = Field(DEFAULT_JOB_RUNS_RETENTION_DAYS, ge=1)
    process_beat_seconds: int = Field(DEFAULT_PROCESS_BEAT_SECONDS, ge=1, le=15)
    process_stale_seconds: int = Field(DEFAULT_PROCESS_STALE_SECONDS, ge=5)
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int = Field(DEFAULT_METRICS_PORT, ge=1, le=65535)
    admin_host: str = DEFAULT_ADMIN_HOST
    admin_port: int = Field(DEFAULT_ADMIN_PORT, ge=1, le=65535)
    #: The sub-path a reverse proxy serves the admin under ("/ops/workers"), if any.
    admin_root_path: str = ""
    #: Bearer tokens, comma-separated: the admin role, and the read_only role.
    admin_tokens: SecretStr | None = None
    admin_read_tokens: SecretStr | None = None
    #: The Saathii backend's own tokens: its JWT secret (HS256) or public key (RS256),
    #: and the claim that holds the role ("admin" or "read_only").
    admin_jwt_key: SecretStr | None = None
    admin_jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    admin_jwt_role_claim: str = "role"
    #: How long a browser's session lasts after logging in (hours).
    admin_session_hours: int = Field(8, ge=1, le=168)
    #: Triggers, restarts and purges each person may make a minute.
    admin_actions_per_minute: int = Field(10, ge=1)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("app_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r} (use an IANA name like Asia/Kolkata)") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = str(value).upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("log_dir")
    @classmethod
    def _writable_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            value.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot create {str(value)!r}: {error.strerror}") from None
        if not os.access(value, os.W_OK):
            raise ValueError(f"{str(value)!r} is not writable")
        return value

    @field_validator("sentry_dsn", mode="before")
    @classmethod
    def _sentry_dsn(cls, value):
        if not value:
            return None
        try:
            sentry_sdk.utils.Dsn(value)
        except sentry_sdk.utils.BadDsn as error:
            raise ValueError(f"not a Sentry DSN ({error})") from None
        return value

    @model_validator(mode="after")
    def _stale_after_beats(self):
        if self.process_stale_seconds < 2 * self.process_beat_seconds:
            raise ValueError("PROCESS_STALE_SECONDS must be at least twice PROCESS_BEAT_SECONDS"
                             " (a live process would look dead between two beats)")
        return self

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.app_timezone)


S = TypeVar("S", bound=BrokerSettings)


def describe(error: ValidationError) -> str:
    """One line naming the first bad variable and why."""
    first = error.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "settings"
    reason = first["msg"].removeprefix("Value error, ")
    return f"invalid setting {name}: {reason}"


def read_settings(model: type[S] = Settings) -> S:
    """The settings from the environment; BadSetting naming the first bad variable."""
    try:
        return model()
    except ValidationError as error:
        raise BadSetting(describe(error)) from None


def load_settings(model: type[S] = Settings) -> S:
    """The settings, or exit 2 with one line on stderr: never a traceback. For entry
    points only (a process's boot, the package's import)."""
    try:
        return read_settings(model)
    except BadSetting as error:
        print(f"saathii-workers: {error}", file=sys.stderr)
        raise SystemExit(2) from None
