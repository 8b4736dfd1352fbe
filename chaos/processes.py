"""The run's child processes: dramatiq workers, fast-clock schedulers, the traffic generator.

Each child leads a session (and process group) of its own, so Ctrl-C in the terminal
reaches the harness alone, a SIGKILL fault takes a worker's main process and its worker
process together, and cleanup can reach every process a child started. Each writes its
stdout and stderr to a log file of its own in the run's log directory, which is also its
working directory (a developer's .env is not read; PYTHONPATH finds the chaos package).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
#: How long a child gets to exit after SIGTERM before its group is SIGKILLed (seconds).
STOP_TIMEOUT = 30
#: dramatiq's log line once a worker process consumes.
WORKER_READY = "Worker process is ready for action."


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.argv, self.env, self.log_dir = name, argv, env, log_dir
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.log_dir, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group at once: nothing gets to clean up."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM to the leader alone (dramatiq forwards it to its worker processes; a
        second one would make them exit at once), then SIGKILL what is left of the group."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def members(self) -> list[int]:
        """Pids of the live processes of its group (it and the processes it started)."""
        if self.process is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
                state, _ppid, group = stat[stat.rindex(")") + 2:].split()[:3]
                if int(group) == self.process.pid and state not in ("Z", "X"):
                    found.append(int(entry.name))
        return found

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_ready(self, marker: str, timeout: float) -> bool:
        """Whether `marker` appeared in its log within `timeout` seconds while it ran."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.output():
                return True
            if not self.alive():
                return False
            time.sleep(0.1)
        return False


def dramatiq_worker(index: int, env: dict[str, str], log_dir: Path) -> Child:
    return Child(f"worker-{index}", [str(BIN / "dramatiq"), "workers", "--processes", "1",
                                     "--threads", "2"], env, log_dir)


def python_module(name: str, module: str, args: list[str], env: dict[str, str],
                  log_dir: Path) -> Child:
    return Child(name, [sys.executable, "-m", module, *args], env, log_dir)
