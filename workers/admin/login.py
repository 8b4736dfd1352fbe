"""A browser's way in: /login exchanges a token (an admin or read-only one, or a JWT) for
the signed session cookie, /logout ends it, /api/session tells the page who it is and its
CSRF token. The login form must come from our own pages too (a cross-site form could log
a victim into someone else's session)."""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from workers.admin import context
from workers.admin.access import CSRF_FIELD, SESSION_COOKIE, Identity, Refused, same_origin
from workers.admin.context import AdminContext
from workers.admin.guards import reader, record

router = APIRouter()

LOGIN_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>saathii-workers admin: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>saathii-workers admin</h1>{error}
<form method="post" action="{action}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button></form></main></body></html>
"""


def _base_path(request: Request) -> str:
    """The path the admin is served under: the session cookie's path."""
    return request.url_for("login_form").path.removesuffix("/login") or "/"


@router.get("/login", response_class=HTMLResponse, include_in_schema=False, name="login_form")
def login_form(request: Request, error: str | None = None) -> HTMLResponse:
    shown = f'<p role="alert">{escape(error)}</p>' if error else ""
    return HTMLResponse(LOGIN_FORM.format(error=shown, action=request.url_for("login").path))


@router.post("/login", include_in_schema=False, name="login")
def login(request: Request, token: Annotated[str, Form()],
          ctx: Annotated[AdminContext, Depends(context.current)]):
    if not same_origin(request.headers, request.headers.get("host", "")):
        raise HTTPException(403, "cross-origin request refused")
    try:
        identity = ctx.access.bearer(token.strip())
    except Refused as refused:
        return HTMLResponse(LOGIN_FORM.format(
            error=f'<p role="alert">{escape(refused.detail)}</p>',
            action=request.url_for("login").path), status_code=refused.status)
    record(ctx, request, identity, "login", "done")
    base = _base_path(request)
    response = RedirectResponse(base if base.endswith("/") else base + "/", status_code=303)
    response.set_cookie(SESSION_COOKIE, ctx.access.new_session(identity),
                        max_age=ctx.settings.admin_session_hours * 3600, path=base,
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout", include_in_schema=False, name="logout")
def logout(request: Request, identity: Annotated[Identity, Depends(reader)],
           ctx: Annotated[AdminContext, Depends(context.current)]):
    if not same_origin(request.headers, request.headers.get("host", "")):
        raise HTTPException(403, "cross-origin request refused")
    record(ctx, request, identity, "logout", "done")
    response = RedirectResponse(request.url_for("login_form").path, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=_base_path(request))
    return response


@router.get("/api/session", summary="Who is asking, and a browser session's CSRF token",
            tags=["admin"])
def session(identity: Annotated[Identity, Depends(reader)]) -> dict:
    return {"role": str(identity.role), "actor": identity.actor, "via": identity.via,
            "csrf_token": identity.csrf, "csrf_field": CSRF_FIELD,
            "may_act": identity.is_admin}
