"""The local all-in-one behind `make run`, `make db` and the other make targets.

    python -m devtools.local up              start what is missing, apply the schema, print the URLs
    python -m devtools.local down            stop the embedded servers
    python -m devtools.local exec -- CMD...  run CMD against them
    python -m devtools.local run             up, then the Dramatiq workers, the periodiq
                                            scheduler, the metrics server and the admin
                                            in the foreground; Ctrl-C stops all

When DATABASE_URL or REDIS_URL is set, that service is used as it is and nothing is
started for it; otherwise an embedded server under DATA_DIR (default .data/) is started,
or reused when it already runs.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedUnavailable

DATA_DIR = Path(os.environ.get("DATA_DIR", ".data"))
#: Dramatiq worker processes and threads per process for `make run`.
WORKER_PROCESSES = os.environ.get("WORKER_PROCESSES", "2")
WORKER_THREADS = os.environ.get("WORKER_THREADS", "4")
#: How long Ctrl-C waits for the workers to finish their current runs (seconds).
STOP_TIMEOUT = 60
#: A child that exits sooner than this after starting is not restarted (seconds).
STARTUP_GRACE = 10
#: Pause before restarting a child that exited (seconds).
RESTART_DELAY = 5
#: How often the supervisor looks at its children (seconds).
POLL_INTERVAL = 0.5


def embedded_postgres() -> EmbeddedPostgres:
    return EmbeddedPostgres(DATA_DIR / "postgres")


def embedded_redis() -> EmbeddedRedis:
    return EmbeddedRedis(DATA_DIR / "redis", appendonly=True)


#: The embedded servers' URLs for the CLI run beside them (workers.settings reads it).
LOCAL_SERVICES = DATA_DIR / "local.env"


def services() -> tuple[dict[str, str], list]:
    """The environment naming both services, and the embedded servers this call started."""
    env = dict(os.environ)
    started = []
    for variable, server in (("DATABASE_URL", embedded_postgres),
                             ("REDIS_URL", embedded_redis)):
        if not env.get(variable):
            embedded = server()
            was_running = embedded.running()
            env[variable] = embedded.start()
            if not was_running:
                started.append(embedded)
    return env, started


def announce(env: dict[str, str]) -> None:
    """Write the embedded servers' URLs where `python -m workers` finds them."""
    lines = [f"{variable}={env[variable]}\n" for variable in ("DATABASE_URL", "REDIS_URL")
             if not os.environ.get(variable)]
    if lines:
        LOCAL_SERVICES.write_text("# written by make run / make db: the embedded servers\n"
                                  + "".join(lines))


def forget() -> None:
    LOCAL_SERVICES.unlink(missing_ok=True)


#: The admin token `make run` makes once (when ADMIN_TOKENS is unset) and keeps.
ADMIN_TOKEN_FILE = DATA_DIR / "admin-token"


def admin_token(env: dict[str, str]) -> str | None:
    """Set ADMIN_TOKENS in `env` to the kept token, made on first use (readable by its
    owner only); None when the environment names its own tokens."""
    if env.get("ADMIN_TOKENS") or env.get("ADMIN_JWT_KEY"):
        return None
    if not ADMIN_TOKEN_FILE.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(ADMIN_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    env["ADMIN_TOKENS"] = token = ADMIN_TOKEN_FILE.read_text().strip()
    return token


def apply_schema(env: dict[str, str], *, quiet: bool = True) -> None:
    done = subprocess.run([sys.executable, "-m", "workers", "db", "init"], env=env,
                          stdout=subprocess.DEVNULL if quiet else None)
    if done.returncode != 0:  # it printed why
        raise SystemExit(done.returncode)


def up() -> int:
    env, _ = services()
    apply_schema(env, quiet=False)
    announce(env)
    print(f"DATABASE_URL={env['DATABASE_URL']}")
    print(f"REDIS_URL={env['REDIS_URL']}")
    return 0


def down() -> int:
    forget()
    embedded_postgres().stop()
    embedded_redis().stop()
    return 0


def run_command(command: list[str]) -> int:
    """COMMAND against the services; the embedded servers it had to start are stopped
    again after it (`make status` leaves nothing running that was not)."""
    env, started = services()
    try:
        apply_schema(env)
        return subprocess.run(command, env=env).returncode
    finally:
        for server in started:
            server.stop()


def run() -> int:
    env, started = services()
    apply_schema(env)
    announce(env)
    bin_dir = Path(sys.executable).parent
    commands = [
        [str(bin_dir / "dramatiq"), "workers", "--processes", WORKER_PROCESSES,
         "--threads", WORKER_THREADS],
        # periodiq exits on any error sending to Redis: it is restarted below.
        [str(bin_dir / "periodiq"), "workers"],
        [sys.executable, "-m", "workers", "metrics"],
        [sys.executable, "-m", "workers", "admin"],
    ]
    token = admin_token(env)
    children = [Child(command, env) for command in commands]
    metrics = (f"http://{env.get('METRICS_HOST', '127.0.0.1')}:"
               f"{env.get('METRICS_PORT', '9464')}/metrics")
    admin = f"http://{env.get('ADMIN_HOST', '127.0.0.1')}:{env.get('ADMIN_PORT', '8080')}/"
    print(f"workers, scheduler, metrics ({metrics}) and admin ({admin}) running (Ctrl-C"
          f" stops them); DATABASE_URL={env['DATABASE_URL']} REDIS_URL={env['REDIS_URL']}",
          flush=True)
    if token:
        print(f"admin: log in at {admin}login with the token in {ADMIN_TOKEN_FILE}: {token}",
              flush=True)
    code = 0
    signal.signal(signal.SIGTERM, _interrupt)  # stop the same way as on Ctrl-C
    try:
        while code == 0:
            time.sleep(POLL_INTERVAL)
            for child in children:
                code = code or child.restart_if_exited()
    except KeyboardInterrupt:
        pass
    finally:
        stop([child.process for child in children])
        if started:  # the servers go, and with them the file naming them
            forget()
        for server in started:
            server.stop()
    return code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Child:
    """A supervised process: restarted when it exits after running a while; one that
    exits right after starting is misconfigured, and restarting it would only spin."""

    def __init__(self, command: list[str], env: dict[str, str]):
        self.command, self.env = command, env
        self.start()

    def start(self) -> None:
        self.started_at = time.monotonic()
        # A process group of its own: Ctrl-C reaches the supervisor alone, which then sends
        # each child one SIGTERM. (A dramatiq worker that gets a second one, the terminal's
        # and then ours, exits at once, cutting off the run in progress.)
        self.process = subprocess.Popen(self.command, env=self.env, process_group=0)

    def restart_if_exited(self) -> int:
        """0 while all is well; the exit code when supervision must stop."""
        code = self.process.poll()
        if code is None:
            return 0
        name = " ".join([Path(self.command[0]).name, *self.command[1:3]])
        if time.monotonic() - self.started_at < STARTUP_GRACE:
            print(f"{name} exited with {code} right after starting; stopping", file=sys.stderr)
            return code or 1
        print(f"{name} exited with {code}; restarting it in {RESTART_DELAY}s", file=sys.stderr)
        time.sleep(RESTART_DELAY)
        self.start()
        return 0


def stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["exec"] and len(argv) > 1:
            command = argv[2:] if argv[1] == "--" else argv[1:]
            return run_command(command)
        actions = {"up": up, "down": down, "run": run}
        if len(argv) != 1 or argv[0] not in actions:
            print(__doc__, file=sys.stderr)
            return 2
        return actions[argv[0]]()
    except EmbeddedUnavailable as error:
        print(f"saathii-workers: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
