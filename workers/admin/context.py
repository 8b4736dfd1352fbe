"""What the admin's requests share in one process: the settings, the credentials, a
connection pool and a Redis client. Made at the first request, not on import: a host that
includes our router (the Saathii API) gets them from the environment then; our own admin
server makes them when it boots (`use`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import HTTPException
from redis import Redis

from workers.admin.access import Access
from workers.engine import redis_client
from workers.engine.db import Pool
from workers.errors import BadSetting
from workers.settings import Settings, read_settings


@dataclass
class AdminContext:
    settings: Settings
    access: Access
    pool: Pool
    redis: Redis
    #: Figures read recently, shared by every request of this process (under `lock`).
    cache: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def made(cls, settings: Settings, *, pool: Pool | None = None,
             redis: Redis | None = None) -> AdminContext:
        return cls(settings, Access(settings), pool or Pool(settings.database_url),
                   redis or redis_client.client(settings.redis_url))

    def local(self, instant: datetime | None) -> str | None:
        """An instant in APP_TIMEZONE with its offset."""
        return None if instant is None else instant.astimezone(self.settings.timezone).isoformat()


_lock = threading.Lock()
_current: AdminContext | None = None


def use(context: AdminContext | None) -> None:
    """Make `context` the one the requests get (None: made again from the environment)."""
    global _current
    with _lock:
        _current = context


def current() -> AdminContext:
    """The FastAPI dependency: this process's context, made on first use."""
    global _current
    with _lock:
        if _current is None:
            try:
                _current = AdminContext.made(read_settings())
            except BadSetting as error:  # in a host's process: say so on every request
                raise HTTPException(503, f"the admin is misconfigured: {error}") from None
        return _current
