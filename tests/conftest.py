"""The test session's real PostgreSQL and Redis, and the workers' runtime in this process.

Both servers start before collection (the `workers` package reads the broker's settings
when first imported, and subprocesses read the environment set here), in a temporary
directory, on 127.0.0.1 and on a Unix socket. The schema is applied once to a template
database; every test that asks for `db` gets a fresh clone of it (CREATE DATABASE ...
TEMPLATE, a few milliseconds) and a flushed Redis, and this process's runtime (what an
in-process Dramatiq worker's actors use) points at it. The session is a host process: it
configures that runtime itself, with the run log as its hooks' subscriber, and boots
nothing (no Sentry, no logging set-up).

TEST_DATABASE_URL / TEST_REDIS_URL name outside servers instead (the database named must
allow CREATE DATABASE); the embedded ones are only the default.
"""

import itertools
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row

SESSION: dict = {}
TEMPLATE = "saathii_template"


def pytest_configure(config):
    directory = Path(tempfile.mkdtemp(prefix="saathii-test-"))
    SESSION["directory"] = directory
    admin_url = (os.environ.get("TEST_DATABASE_URL")
                 or f"postgresql://postgres@127.0.0.1:{_free_port()}/saathii")
    redis_url = os.environ.get("TEST_REDIS_URL") or f"redis://127.0.0.1:{_free_port()}/0"
    SESSION["admin_url"], SESSION["redis_url"] = admin_url, redis_url
    template_url = _with_dbname(admin_url, TEMPLATE)
    # What every process of the session (and its subprocesses) reads when it first imports
    # the workers package: so set before anything imports it.
    os.environ.update({
        "DATABASE_URL": template_url, "REDIS_URL": redis_url, "APP_TIMEZONE": "Asia/Kolkata",
        "CATCH_UP_ON_BOOT": "false", "LOG_LEVEL": "INFO",
    })
    for variable in ("SENTRY_DSN", "LOG_DIR", "PERIODIQ_SKIP_DELAY"):
        os.environ.pop(variable, None)

    from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedUnavailable
    from workers.engine.schema import apply_schema
    from workers.settings import Settings

    if not os.environ.get("TEST_DATABASE_URL"):
        port = psycopg.conninfo.conninfo_to_dict(admin_url)["port"]
        SESSION["postgres"] = EmbeddedPostgres(directory / "postgres", port=int(port),
                                               durable=False)
        try:
            SESSION["postgres"].start()
        except EmbeddedUnavailable as error:
            pytest.exit(f"saathii-workers: {error}", returncode=2)
    if not os.environ.get("TEST_REDIS_URL"):
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        SESSION["redis"] = EmbeddedRedis(directory / "redis", port=port)
        SESSION["redis"].start()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(template_url, autocommit=True, row_factory=dict_row) as conn:
        apply_schema(conn)
    configure_runtime(Settings(_env_file=None))


def configure_runtime(settings):
    """This process's runtime under `settings`: the run log subscribed, runs sent through
    the package's broker."""
    import workers
    from workers.engine import runtime
    from workers.engine.broker import send_run
    from workers.engine.hooks import Hooks
    from workers.observability.logs import RunLog

    return runtime.configure(settings, hooks=Hooks(RunLog()),
                             send=partial(send_run, workers.broker))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_unconfigure(config):
    if "redis" in SESSION:
        SESSION["redis"].stop()
    if "postgres" in SESSION:
        SESSION["postgres"].stop("immediate")
    if "directory" in SESSION:
        shutil.rmtree(SESSION["directory"], ignore_errors=True)


def _with_dbname(url: str, dbname: str) -> str:
    """The same postgresql:// URL naming another database."""
    return urlsplit(url)._replace(path=f"/{dbname}").geturl()


_numbers = itertools.count(1)


@dataclass(frozen=True)
class TestDatabase:
    url: str
    redis_url: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a subprocess (CLI, dramatiq, periodiq) needs to use this database."""
        return {**os.environ, "DATABASE_URL": self.url, "REDIS_URL": self.redis_url, **extra}


def _cloned(template: str):
    """A fresh clone of `template`, made the workers' runtime database; Redis flushed."""
    import redis

    from workers.engine import runtime

    name = f"test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(SESSION["admin_url"], autocommit=True) as conn:
        # FILE_COPY (PostgreSQL 15+) clones a small database about twice as fast.
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}{strategy}")
    with redis.Redis.from_url(SESSION["redis_url"]) as client:
        client.flushall()
    database = TestDatabase(url=_with_dbname(SESSION["admin_url"], name),
                            redis_url=SESSION["redis_url"])
    settings = runtime.current().settings
    configure_runtime(settings.model_copy(update={"database_url": database.url}))
    yield database
    configure_runtime(settings)
    with psycopg.connect(SESSION["admin_url"], autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def db():
    """A fresh database with the schema, made the workers' runtime database; Redis flushed."""
    yield from _cloned(TEMPLATE)


#: The Saathii API's own database (chaos/saathii_api.sql): as its db.sql
#: builds it, and the same adopted by `db init`.
API_SCHEMA = Path(__file__).resolve().parents[1] / "chaos" / "saathii_api.sql"
API_TEMPLATES = {"raw": "saathii_api_raw", "adopted": "saathii_api_adopted"}


@pytest.fixture(scope="session")
def api_templates():
    from workers.engine.schema import apply_schema

    for kind, name in API_TEMPLATES.items():
        with psycopg.connect(SESSION["admin_url"], autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        with psycopg.connect(_with_dbname(SESSION["admin_url"], name), autocommit=True,
                             row_factory=dict_row) as conn:
            conn.execute(API_SCHEMA.read_text())
            if kind == "adopted":
                apply_schema(conn)
    return API_TEMPLATES


@pytest.fixture
def api_db(api_templates):
    """A fresh copy of the API's database, adopted by db init; the runtime's database."""
    yield from _cloned(api_templates["adopted"])


@pytest.fixture
def raw_api_db(api_templates):
    """A fresh copy of the API's database before any db init."""
    yield from _cloned(api_templates["raw"])


@pytest.fixture
def conn(db):
    with db.connect() as connection:
        yield connection
