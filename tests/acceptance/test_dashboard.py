"""The dashboard in a real browser: Playwright driving Debian's chromium against `python -m
workers admin` and a real `dramatiq workers`, on the test database. Log in, see the jobs,
run one and watch its run appear without reloading, pause and resume with confirmation,
log out; a read-only user sees no buttons. Screenshots go to the test's directory, or to
$SCREENSHOT_DIR (the README's comes from there)."""

import os
import shutil
import sys
from pathlib import Path

import pytest
from test_processes import DRAMATIQ, admin_get, free_port, services  # noqa: F401

pytestmark = pytest.mark.acceptance

ADMIN, READER = "dashboard-admin-token", "dashboard-read-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WAIT_MS = 30_000

playwright = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None:
    if os.environ.get("REQUIRE_BROWSER"):  # CI installs it: its absence is a failure there
        raise RuntimeError("REQUIRE_BROWSER is set and no chromium is installed")
    pytest.skip("no chromium: install Debian's chromium package (.ci/run does)",
                allow_module_level=True)


@pytest.fixture
def dashboard(services, tmp_path):  # noqa: F811
    port = free_port()
    server = services.start("admin", [sys.executable, "-m", "workers", "admin"],
                            ADMIN_PORT=str(port), ADMIN_TOKENS=ADMIN, ADMIN_READ_TOKENS=READER)
    worker = services.start("dramatiq", DRAMATIQ)
    services.wait_for("the admin", lambda: admin_get(port, "/api/jobs", ADMIN),
                      alive=(server, worker))
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(WAIT_MS)
        yield f"http://127.0.0.1:{port}", page
        browser.close()


def shots(tmp_path) -> Path:
    directory = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def log_in(page, base: str, token: str) -> None:
    page.goto(f"{base}/?refresh=2")
    assert page.url.endswith("/login")  # sent to log in first
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/?refresh=2")


def test_an_admin_runs_pauses_and_resumes_jobs_and_a_reader_only_looks(dashboard, tmp_path):
    base, page = dashboard
    expect = playwright.expect
    log_in(page, base, ADMIN)
    jobs = page.get_by_role("table", name="Jobs")
    expect(jobs.locator("#job-coin_deduction")).to_be_visible()

    # Run presence_cleanup now: its run appears in the latest runs, the page not reloaded.
    page.evaluate("window.notReloaded = true")
    jobs.locator("#job-presence_cleanup").get_by_role("button", name="Run now").click()
    runs = page.get_by_role("table", name="Runs")
    expect(runs.locator("tr", has_text="presence_cleanup").first).to_contain_text("succeeded")
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=str(shots(tmp_path) / "overview.png"), full_page=True)

    # Pause with confirmation, then resume.
    page.once("dialog", lambda dialog: dialog.accept())
    jobs.locator("#job-call_cleanup").get_by_role("button", name="Pause").click()
    expect(jobs.locator("#job-call_cleanup")).to_contain_text("paused")
    page.once("dialog", lambda dialog: dialog.accept())
    jobs.locator("#job-call_cleanup").get_by_role("button", name="Resume").click()
    expect(jobs.locator("#job-call_cleanup").get_by_role("button", name="Pause")).to_be_visible()

    page.get_by_role("link", name="Audit").click()
    audit = page.get_by_role("table", name="Audit")
    for action in ("trigger", "pause", "resume", "login"):
        expect(audit).to_contain_text(action)
    page.screenshot(path=str(shots(tmp_path) / "audit.png"), full_page=True)

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{base}/login")
    log_in(page, base, READER)
    expect(page.get_by_role("table", name="Jobs").locator("#job-coin_deduction")).to_be_visible()
    assert page.get_by_role("button", name="Run now").count() == 0
    assert page.get_by_role("button", name="Pause").count() == 0
    page.goto(f"{base}/jobs/coin_deduction")
    assert page.get_by_role("button", name="Run").count() == 0
