"""Redis for our own use (the Saathii Redis contract of workers.app.events, the CLI's
checks), apart from Dramatiq's broker connection: the one way a client is made, the one
place redis errors become ours, and the Lua scripts, registered once per client.
"""

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from workers.errors import RedisUnavailable

#: How long a Redis call may take before it counts as failed (seconds).
REDIS_TIMEOUT = 5
#: Retries of a failed Redis call, at once: redis-py's default backs off for seconds, which
#: a dead Redis would add to every run (a failed after-commit step is repaired later anyway).
REDIS_RETRIES = 1

#: What talking to Redis can raise: unreachable, timed out, refused (auth, ACL, OOM).
FAILURES = (redis.RedisError, OSError)

_scripts: "weakref.WeakKeyDictionary[redis.Redis, dict[Path, Script]]" = \
    weakref.WeakKeyDictionary()


def client(url: str) -> redis.Redis:
    """A client; it connects on first use."""
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT,
                                socket_connect_timeout=REDIS_TIMEOUT,
                                retry=Retry(NoBackoff(), REDIS_RETRIES))


def describe(url: str) -> str:
    """Where a Redis URL points, for messages: never its password."""
    return url.split("@")[-1]


@contextmanager
def failures_as_ours(where: str) -> Iterator[None]:
    """A Redis failure inside the block: RedisUnavailable naming `where` and why."""
    try:
        yield
    except FAILURES as error:
        raise RedisUnavailable(f"redis unreachable at {where}: {error}") from error


def where(client: redis.Redis) -> str:
    """Where a client points, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def ping(url: str) -> None:
    """Nothing when Redis at `url` answers; RedisUnavailable otherwise."""
    with client(url) as probe, failures_as_ours(describe(url)):
        probe.ping()


def script(client: redis.Redis, path: Path) -> Script:
    """The Lua script in `path`, registered with `client` once (redis-py then calls it by
    its SHA, loading it again only if the server lost it)."""
    registered = _scripts.setdefault(client, {})
    if path not in registered:
        registered[path] = client.register_script(path.read_text())
    return registered[path]
