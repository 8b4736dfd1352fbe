"""`python -m workers admin`: the admin served by a real uvicorn, as `make run` and the
compose file start it: closed without a credential, under a reverse proxy's sub-path, and
what it does when no credential is configured."""

import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from test_processes import admin_get, free_port, services  # noqa: F401

pytestmark = pytest.mark.acceptance

ADMIN = [sys.executable, "-m", "workers", "admin"]


def status_of(port: int, path: str, **headers: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_server_is_closed_without_a_token_and_serves_under_a_sub_path(services):  # noqa: F811
    port = free_port()
    server = services.start("admin", ADMIN, ADMIN_PORT=str(port), ADMIN_TOKENS="a-long-token",
                            ADMIN_ROOT_PATH="/ops/workers")
    jobs = services.wait_for("the admin", lambda: admin_get(port, "/api/jobs", "a-long-token"),
                             alive=(server,))
    assert '"name":"coin_deduction"' in jobs
    assert status_of(port, "/api/jobs") == 401
    assert status_of(port, "/openapi.json") == 401
    assert status_of(port, "/api/jobs", Authorization="Bearer wrong") == 401

    # Behind a proxy that strips /ops/workers: the links and the cookie name the sub-path.
    form = urllib.parse.urlencode({"token": "a-long-token"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/login", data=form,
                                     headers={"Sec-Fetch-Site": "same-origin"})
    try:
        urllib.request.build_opener(NoRedirect).open(request, timeout=10)
        pytest.fail("no redirect after logging in")
    except urllib.error.HTTPError as answer:
        assert answer.code == 303
        assert answer.headers["location"] == "/ops/workers/"
        assert "Path=/ops/workers" in answer.headers["set-cookie"]
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10).read().decode()
    assert 'action="/ops/workers/login"' in page


def test_without_any_credential_it_serves_loopback_only_with_a_token_it_made(services, db):  # noqa: F811
    port = free_port()
    server = services.start("admin", ADMIN, ADMIN_PORT=str(port))
    said = services.wait_for("the token it made", lambda: re.search(
        r"log in to this admin with the token (\S+)", server.output()), alive=(server,))
    assert services.wait_for("the admin", lambda: admin_get(port, "/api/jobs", said[1]),
                             alive=(server,))

    refused = subprocess.run(ADMIN, env=db.env(ADMIN_HOST="0.0.0.0", ADMIN_PORT=str(port)),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("saathii-workers: the admin would listen on 0.0.0.0 with no"
                           " credential")
