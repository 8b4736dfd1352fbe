"""The dashboard: pages rendered on the server (Jinja2), kept fresh by htmx polling their
partials (every 5 s by default, off / 2 / 5 / 15 / 30 / 60 with ?refresh=, paused while
the tab is hidden). A thin layer over the JSON API: the same reads, and every button posts
to the API's own action routes (with the session's CSRF token in a header), so a page
can do nothing the API would not. A request without a credential is sent to /login."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from workers.admin import context
from workers.admin.access import Identity
from workers.admin.api import _job, _localized, _page, job_rows, live_statistics, read_runs
from workers.admin.context import AdminContext
from workers.admin.guards import identify
from workers.engine import liveness, queues
from workers.engine.db import queries
from workers.observability import health
from workers.schedule import JOBS

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
STATIC = {path.name: path for path in (HERE / "static").iterdir() if path.is_file()}

#: The refresh choices (seconds; 0 is off) and the default.
REFRESH_CHOICES, DEFAULT_REFRESH = (0, 2, 5, 15, 30, 60), 5
#: Runs shown on a page.
RUNS_SHOWN = 25

router = APIRouter(include_in_schema=False)
Ctx = Annotated[AdminContext, Depends(context.current)]


def viewer(request: Request, ctx: Ctx) -> Identity:
    """The page's identity; without a credential, a redirect to /login (an HTTPException,
    which a host's app answers as ours does: a router can bring no exception handler)."""
    try:
        return identify(request, ctx)
    except HTTPException as refused:
        if refused.status_code == 401:
            raise HTTPException(303, "log in first", headers={
                "Location": request.url_for("login_form").path}) from None
        raise


Viewer = Annotated[Identity, Depends(viewer)]


def _refresh(request: Request) -> int:
    asked = request.query_params.get("refresh", "")
    return int(asked) if asked.isdigit() and int(asked) in REFRESH_CHOICES else DEFAULT_REFRESH


def render(request: Request, template: str, identity: Identity, **values) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {
        "identity": identity, "refresh": _refresh(request), **values})


def _runs(ctx: AdminContext, *, job: str | None = None, status: str | None = None,
          cursor: int | None = None, limit: int = RUNS_SHOWN) -> dict:
    with ctx.pool.connection() as conn:
        rows = read_runs(conn, limit, before=cursor, job=job, status=status)
    return _page([_localized(ctx, row) for row in rows], limit, "run_id")


def overview_values(ctx: AdminContext) -> dict:
    now = datetime.now(UTC)
    with ctx.pool.connection() as conn:
        known = liveness.processes(conn, timedelta(seconds=ctx.settings.process_stale_seconds))
    alive = dict.fromkeys(liveness.KINDS, 0)
    for process in known:
        if process["alive"]:
            alive[process["kind"]] += 1
    try:
        stats = queues.queue_stats(ctx.redis, sorted({job.queue for job in JOBS.values()}))
    except Exception:  # the health verdict says Redis is down
        stats = []
    return {"jobs": job_rows(ctx, list(JOBS.values()), now), "alive": alive, "queues": stats,
            "stats": live_statistics(ctx),
            "health": health.check_all(ctx.settings, JOBS.values(), now).as_json(),
            "runs": _runs(ctx, limit=10)["items"]}


@router.get("/", name="overview")
def overview(request: Request, identity: Viewer, ctx: Ctx) -> HTMLResponse:
    return render(request, "overview.html", identity, title="Overview", current="overview",
                  **overview_values(ctx))


@router.get("/partials/overview", name="overview_part")
def overview_part(request: Request, identity: Viewer, ctx: Ctx) -> HTMLResponse:
    return render(request, "_overview.html", identity, **overview_values(ctx))


@router.get("/jobs/{name}", name="job_page")
def job_page(name: str, request: Request, identity: Viewer, ctx: Ctx) -> HTMLResponse:
    [job] = job_rows(ctx, [_job(name)], datetime.now(UTC))
    return render(request, "job.html", identity, title=name, current=None, job=job,
                  runs=_runs(ctx, job=name)["items"])


@router.get("/partials/jobs/{name}", name="job_part")
def job_part(name: str, request: Request, identity: Viewer, ctx: Ctx) -> HTMLResponse:
    return render(request, "_runs.html", identity, runs=_runs(ctx, job=_job(name).name)["items"])


@router.get("/runs", name="runs_page")
def runs_page(request: Request, identity: Viewer, ctx: Ctx,
              cursor: int | None = None) -> HTMLResponse:
    page = _runs(ctx, cursor=cursor, limit=50)
    return render(request, "runs.html", identity, title="Runs", current="runs_page",
                  failures=_runs(ctx, status="failed")["items"], runs=page["items"],
                  next_cursor=page["next_cursor"])


@router.get("/audit", name="audit_page")
def audit_page(request: Request, identity: Viewer, ctx: Ctx,
               cursor: int | None = None) -> HTMLResponse:
    with ctx.pool.connection() as conn:
        rows = conn.execute(queries("admin.sql")["audit"],
                            {"before": cursor, "limit": 51}).fetchall()
    page = _page([_localized(ctx, row) for row in rows], 50, "audit_id")
    return render(request, "audit.html", identity, title="Audit", current="audit_page",
                  rows=page["items"], next_cursor=page["next_cursor"])


@router.get("/static/{name}", name="static")
def static(name: str, _: Viewer) -> FileResponse:
    """The vendored htmx (no CDN: the pages work offline)."""
    if name not in STATIC:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC[name], headers={"Cache-Control": "public, max-age=86400"})
