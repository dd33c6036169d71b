"""Children forked from a fork server that has already imported what they import (torch).

``ForkServer(script, env)`` runs a server script (``compile_cache_support/fork_server.py``) that
imports once and forks a child per ``fork(argv, env, out, err)``; the child runs ``argv[0]`` as
``__main__`` with that environment, its output in the two files. A child is not ours to wait
for (it is the server's), so ``Forked`` watches it through a pidfd and reads its exit code from
the last line of its output. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

READY_TIMEOUT_S = 180.0  # the server's imports, on a busy machine
REPLY_TIMEOUT_S = 30.0


class Forked:
    """One forked child: its pid, output files, exit."""

    def __init__(self, pid: int, out: Path, err: Path) -> None:
        self.pid = pid
        self.out, self.err = out, err
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None  # it has exited (and been reaped) already

    def running(self) -> bool:
        return self._pidfd is not None and not select.select([self._pidfd], [], [], 0)[0]

    def wait(self, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Return once the child has exited; TimeoutError if it still runs after ``timeout``."""
        if self._pidfd is None:
            return
        if not select.select([self._pidfd], [], [], timeout)[0]:
            raise TimeoutError(f"child {self.pid} still runs after {timeout} s")
        os.close(self._pidfd)
        self._pidfd = None

    def kill(self) -> None:
        """SIGKILL, and wait for the exit."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.wait()

    @property
    def returncode(self) -> int | None:
        """The exit code the child wrote last (``EXIT <code>``); None if it wrote none."""
        lines = self.stdout().splitlines()
        if lines and lines[-1].startswith("EXIT "):
            return int(lines[-1].split()[1])
        return None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


class ForkServer:
    """The server process; ``close()`` ends it (its children run on to their own end)."""

    def __init__(self, script: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._line(READY_TIMEOUT_S).strip() != "READY":
            raise RuntimeError("the fork server did not start")

    def fork(self, argv: list[str], env: dict[str, str], out: Path, err: Path) -> Forked:
        request = {"argv": argv, "env": env, "out": str(out), "err": str(err)}
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        return Forked(json.loads(self._line(REPLY_TIMEOUT_S))["pid"], out, err)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(REPLY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(REPLY_TIMEOUT_S)

    def _line(self, timeout: float) -> str:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        if not select.select([stdout], [], [], timeout)[0]:
            self.process.kill()
            raise TimeoutError(f"the fork server did not answer within {timeout} s")
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited ({self.process.wait(REPLY_TIMEOUT_S)})")
        return line
