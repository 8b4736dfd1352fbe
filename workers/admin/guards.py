"""The FastAPI dependencies every admin route goes through: `reader` for a GET (any role),
`acting(action)` for an action (the admin role, a browser's request same-origin with its
CSRF token, some actions rate limited). An action's outcome is written to admin_audit by
the Act it gets, and so is an action refused here (a read_only user's, a cross-origin or
tokenless browser's, one over the rate limit), one its route refused or one that broke."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from workers.admin import context
from workers.admin.access import (
    CSRF_FIELD,
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    Identity,
    Refused,
    same_origin,
)
from workers.admin.context import AdminContext
from workers.engine.db import queries

log = logging.getLogger(__name__)

#: The window of the rate limit (seconds).
RATE_WINDOW = 60


def identify(request: Request, ctx: AdminContext) -> Identity:
    """The request's identity, or HTTPException 401 (403 for a JWT without a role)."""
    header = request.headers.get("authorization", "")
    try:
        if header:
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise Refused(401, "expected an Authorization: Bearer token")
            return ctx.access.bearer(credentials.strip())
        if cookie := request.cookies.get(SESSION_COOKIE):
            return ctx.access.session(cookie)
    except Refused as refused:
        raise HTTPException(refused.status, refused.detail,
                            headers={"WWW-Authenticate": "Bearer"}) from None
    raise HTTPException(401, "credentials required: a bearer token, or log in",
                        headers={"WWW-Authenticate": "Bearer"})


def reader(request: Request,
           ctx: Annotated[AdminContext, Depends(context.current)]) -> Identity:
    return identify(request, ctx)


@dataclass
class Act:
    """One action of one identity, to be recorded once with its outcome."""

    ctx: AdminContext
    request: Request
    identity: Identity
    action: str
    target: str | None = None
    recorded: bool = False

    def record(self, outcome: str, *, target: str | None = None, params: dict | None = None,
               detail: str | None = None) -> None:
        record(self.ctx, self.request, self.identity, self.action, outcome,
               target=target or self.target, params=params, detail=detail)
        self.recorded = True


def record(ctx: AdminContext, request: Request, identity: Identity, action: str,
           outcome: str, *, target: str | None = None, params: dict | None = None,
           detail: str | None = None) -> None:
    with ctx.pool.connection() as conn:
        conn.execute(queries("admin.sql")["record"], {
            "actor": identity.actor, "role": str(identity.role), "via": identity.via,
            "action": action, "target": target, "params": json.dumps(params or {}),
            "outcome": outcome, "detail": detail,
            "address": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent")})


def acting(action: str, *, limited: bool = False):
    """The dependency of the route that performs `action`."""

    async def guard(request: Request,
                    ctx: Annotated[AdminContext, Depends(context.current)]):
        identity = identify(request, ctx)
        target = request.path_params.get("name") or request.path_params.get("letter")

        def refuse(status: int, detail: str, **headers: str):
            record(ctx, request, identity, action, "refused", target=target, detail=detail)
            raise HTTPException(status, detail, headers=headers or None)

        if not identity.is_admin:
            refuse(403, f"{identity.role} may not {action}: it needs the admin role")
        if identity.via == "session" and request.method not in SAFE_METHODS:
            if not same_origin(request.headers, request.headers.get("host", "")):
                refuse(403, "cross-origin request refused")
            sent = request.headers.get(CSRF_HEADER)
            if sent is None and request.headers.get("content-type", "").startswith(
                    ("application/x-www-form-urlencoded", "multipart/form-data")):
                sent = (await request.form()).get(CSRF_FIELD)
            if sent != identity.csrf:
                refuse(403, "missing or wrong CSRF token: reload the page")
        if limited:
            wait = over_limit(ctx, identity, action)
            if wait:
                refuse(429, f"more than {ctx.settings.admin_actions_per_minute} {action}s a"
                            f" minute: wait {wait} s", **{"Retry-After": str(wait)})
        act = Act(ctx, request, identity, action, target)
        try:
            yield act
        except HTTPException as answered:  # refused by the route itself (an unknown job, ...)
            if not act.recorded:
                act.record("refused", detail=str(answered.detail))
            raise
        except RequestValidationError as invalid:  # a body the route's model refused
            if not act.recorded:
                act.record("refused", detail=f"invalid request: {invalid.errors()[0]['msg']}")
            raise
        except Exception as error:  # the action broke: recorded as failed, if it can be
            if not act.recorded:
                try:
                    act.record("failed", detail=f"{type(error).__name__}: {error}")
                except Exception:
                    log.exception("could not record the failed %s in admin_audit", action)
            raise

    return guard


def over_limit(ctx: AdminContext, identity: Identity, action: str) -> int:
    """0 while `identity` may still `action` in this minute; else the seconds to wait.
    Counted in Redis, so several admin servers share the limit."""
    window = int(time.time()) // RATE_WINDOW
    key = f"saathii:admin:rate:{action}:{identity.actor}:{window}"
    try:
        pipe = ctx.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, RATE_WINDOW * 2)
        count, _ = pipe.execute()
    except Exception as error:  # a limit that cannot be counted is not waived
        raise HTTPException(503, f"Redis unreachable, so the rate limit cannot be kept:"
                                 f" {error}") from None
    if count <= ctx.settings.admin_actions_per_minute:
        return 0
    return RATE_WINDOW - int(time.time()) % RATE_WINDOW

