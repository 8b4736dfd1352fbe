"""The admin: a web dashboard and an HTTP API to run Saathii's background work.

    from workers.admin import router            # in the Saathii API:
    app.include_router(router, prefix="/workers")  # any prefix it chooses

or our own server, `python -m workers admin` (workers.admin.app). Importing this package
sets up nothing: the settings, the credentials, a connection pool and a Redis client are
made at the first request, from the host's environment (workers.admin.context). Every
route needs a credential (workers.admin.access, workers.admin.guards).
"""

from workers.admin.app import create_app, router

__all__ = ["create_app", "router"]
