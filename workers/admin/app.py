"""The admin's router and our own server of it.

`router` is what a host includes: the pages, /login, the JSON API under /api, and
/openapi.json, which needs a credential like every route. `create_app` wraps it in an app
of its own for `python -m workers admin`: uvicorn on ADMIN_HOST:ADMIN_PORT; behind a reverse
proxy that serves it under a sub-path, ADMIN_ROOT_PATH names that path.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import sys
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import SecretStr

from workers.admin import api, login, pages
from workers.admin.access import Identity
from workers.admin.guards import reader
from workers.errors import UsageError
from workers.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter()
router.include_router(login.router)
router.include_router(api.router)
router.include_router(pages.router)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _: Annotated[Identity, Depends(reader)]) -> dict:
    """The OpenAPI document of the admin (behind a credential, as every route)."""
    return request.app.openapi()


def create_app(*, root_path: str = "") -> FastAPI:
    """The admin as an app of its own (its docs pages off: /openapi.json is ours)."""
    app = FastAPI(title="saathii-workers admin", root_path=root_path, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.include_router(router)
    return app


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_credentials(settings: Settings) -> Settings:
    """The settings the server runs with. Without any credential it serves this machine
    only (ADMIN_HOST on loopback), with a token made for this run and told on stderr;
    elsewhere it refuses to start (UsageError)."""
    if settings.admin_tokens or settings.admin_read_tokens or settings.admin_jwt_key:
        return settings
    if not loopback(settings.admin_host):
        raise UsageError(f"the admin would listen on {settings.admin_host} with no"
                         " credential: set ADMIN_TOKENS (or ADMIN_JWT_KEY), or listen on"
                         " 127.0.0.1")
    token = secrets.token_urlsafe(24)
    print(f"saathii-workers: no ADMIN_TOKENS: log in to this admin with the token {token}"
          " (made for this run)", file=sys.stderr, flush=True)
    return settings.model_copy(update={"admin_tokens": SecretStr(token)})


def serve(settings: Settings) -> int:
    import uvicorn

    from workers.admin import context
    from workers.engine import runtime

    settings = with_credentials(settings)
    current = runtime.current()
    context.use(context.AdminContext.made(settings, pool=current.pool, redis=current.redis))
    app = create_app()
    log.info("admin at http://%s:%d%s/", settings.admin_host, settings.admin_port,
             settings.admin_root_path)
    uvicorn.run(app, host=settings.admin_host, port=settings.admin_port, log_config=None,
                root_path=settings.admin_root_path, proxy_headers=True,
                forwarded_allow_ips="127.0.0.1")
    return 0
