"""make run's supervision of its children (devtools.local.Child), with real processes."""

import sys

import pytest

from devtools import local

QUICK_EXIT = [sys.executable, "-c", "raise SystemExit(3)"]


@pytest.fixture
def no_waiting(monkeypatch):
    monkeypatch.setattr(local, "RESTART_DELAY", 0)


def test_a_child_that_exits_right_after_starting_stops_supervision(no_waiting):
    child = local.Child(QUICK_EXIT, {})
    child.process.wait(timeout=30)
    assert child.restart_if_exited() == 3


def test_a_child_that_exits_after_running_a_while_is_restarted(monkeypatch, no_waiting):
    monkeypatch.setattr(local, "STARTUP_GRACE", 0)  # anything counts as "a while"
    child = local.Child(QUICK_EXIT, {})
    first = child.process
    first.wait(timeout=30)

    assert child.restart_if_exited() == 0
    assert child.process is not first
    child.process.wait(timeout=30)
    assert child.process.returncode == 3  # it really ran again


def test_a_running_child_is_left_alone():
    child = local.Child([sys.executable, "-c", "import time; time.sleep(30)"], {})
    try:
        assert child.restart_if_exited() == 0
        assert child.process.poll() is None
    finally:
        local.stop([child.process])
    assert child.process.returncode is not None
