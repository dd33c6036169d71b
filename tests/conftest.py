"""Fixtures that run real ``minifal serve`` processes on free ports.

A served app is a subprocess started exactly as a user would start it; readiness is awaited by
polling ``GET /health`` (bounded), never by sleeping. Output goes to a log file the tests read.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tiers import tier_problem

APPS_DIR = Path(__file__).parent / "apps"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# Inductor's CPU kernels stay scalar in this process and every one the suite starts (torch's own
# knob; read when Inductor is imported, inherited by children). A process whose Inductor cache
# dir starts empty, as every runner's private dir does, otherwise first dry-compiles and loads a
# probe per vector instruction set (AVX2, AVX-512, AMX...): 5-10 s of g++ per process here. The
# kernels are still Inductor's C++, compiled, cached, published and loaded like any other.
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This process's environment without minifal's own variables (a server sets its own)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MINIFAL_")}
    env.pop("HF_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def minifal_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "minifal.cli", *args]


@dataclass
class ServedApp:
    """One running ``minifal serve`` subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    @property
    def ws_base_url(self) -> str:
        return "ws://" + self.base_url.removeprefix("http://")

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL only if it does not exit in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def _wait_until_ready(served: ServedApp, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if served.process.poll() is not None:
                pytest.fail(
                    f"minifal serve exited with {served.process.returncode} before it was ready:\n"
                    + served.log()
                )
            try:
                if client.get(served.url("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            # Not a sleep for readiness: a short back-off between probes of a bounded poll.
            time.sleep(0.05)
    served.terminate()
    pytest.fail(f"minifal serve was not ready within {timeout} s:\n" + served.log())


@contextmanager
def start_served_app(
    app: str, work_dir: Path, *, extra_env: dict[str, str] | None = None
) -> Iterator[ServedApp]:
    """Run ``minifal serve APP --port P --data-dir work_dir/data`` until the block ends."""
    port = free_port()
    data_dir = work_dir / "data"
    log_path = work_dir / "serve.log"
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            minifal_command("serve", app, "--port", str(port), "--data-dir", str(data_dir)),
            cwd=work_dir,
            env=clean_env() | (extra_env or {}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    served = ServedApp(process, f"http://127.0.0.1:{port}/", port, data_dir, log_path)
    try:
        _wait_until_ready(served, READY_TIMEOUT_S)
        yield served
    finally:
        served.terminate()


def run_minifal(*args: str, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a ``minifal`` command that is expected to end on its own."""
    return subprocess.run(
        minifal_command(*args),
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def serve_app(tmp_path: Path) -> Iterator[Callable[..., ServedApp]]:
    """Factory: ``serve_app(APPS_DIR / "x.py")`` starts a server stopped at the test's end."""
    with ExitStack() as stack:

        def start(app: str | Path, **kwargs: dict[str, str]) -> ServedApp:
            work_dir = Path(tempfile.mkdtemp(prefix="served-", dir=tmp_path))
            return stack.enter_context(start_served_app(str(app), work_dir, **kwargs))

        yield start


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """One server of ``tests/apps/echo_app.py`` shared by a module's read-only tests."""
    with start_served_app(str(APPS_DIR / "echo_app.py"), tmp_path_factory.mktemp("echo")) as served:
        yield served


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects: a selected tier still sees them all
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a run whose tests lack a tier or carry two (``tests/tiers.py``)."""
    problems = [
        problem
        for item in items
        if (problem := tier_problem(item.nodeid, (mark.name for mark in item.iter_markers())))
    ]
    if problems:
        raise pytest.UsageError("tests without exactly one tier:\n  " + "\n  ".join(problems))
