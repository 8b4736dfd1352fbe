"""The embedded servers start anywhere the user running them can reach, and change no
file's owner or mode on the way: as root too, in a directory only root can enter."""

import os
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port


def modes(path: Path) -> dict[Path, tuple[int, int, int]]:
    """Mode, owner and group of `path` and of each directory above it."""
    return {p: (stat.S_IMODE(p.stat().st_mode), p.stat().st_uid, p.stat().st_gid)
            for p in (path, *path.parents)}


@pytest.fixture
def private_dir():
    """A directory only its owner can enter (mkdtemp makes it 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="saathii-private-"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    yield directory
    for child in sorted(directory.rglob("*"), reverse=True):
        child.unlink() if child.is_file() or child.is_symlink() or child.is_socket() \
            else child.rmdir()
    directory.rmdir()


def test_both_servers_run_inside_a_private_directory_and_open_nothing(private_dir):
    before = modes(private_dir)
    postgres = EmbeddedPostgres(private_dir / "data" / "postgres", port=free_port(),
                                durable=False)
    server = EmbeddedRedis(private_dir / "data" / "redis", port=free_port())
    try:
        url = postgres.start()
        server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        with psycopg.connect(postgres.socket_url()) as conn:  # and on its Unix socket
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
    finally:
        server.stop()
        postgres.stop("immediate")

    assert modes(private_dir) == before
    data = private_dir / "data" / "postgres"
    assert data.stat().st_uid == os.geteuid()  # no other user owns our files
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_make_status_stops_the_servers_it_had_to_start_and_make_db_leaves_them_named(
        private_dir, monkeypatch):
    """`make status` (devtools.local exec) with nothing running starts the embedded servers
    for the command and stops them after it; `make db` (up) leaves them running and names
    them in .data/local.env for the CLI; `make down` stops them and removes the file."""
    from devtools import local

    monkeypatch.setattr(local, "DATA_DIR", private_dir / "data")
    monkeypatch.setattr(local, "LOCAL_SERVICES", private_dir / "data" / "local.env")
    for variable in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(variable, raising=False)
    try:
        assert local.run_command(["true"]) == 0
        assert not local.embedded_postgres().running()
        assert not local.embedded_redis().running()
        assert not local.LOCAL_SERVICES.exists()

        assert local.up() == 0
        named = dict(line.split("=", 1) for line in
                     local.LOCAL_SERVICES.read_text().splitlines() if "=" in line)
        assert named == {"DATABASE_URL": local.embedded_postgres().url,
                         "REDIS_URL": local.embedded_redis().url}
        assert local.run_command(["true"]) == 0  # reused, so left running
        assert local.embedded_postgres().running()
    finally:
        local.down()
    assert not local.LOCAL_SERVICES.exists()
    assert not local.embedded_postgres().running()
