"""One runner of the fleet, seen from the gateway: a child process, its state and its load."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from minifal.runner_contract import READY_PATH, runner_command, runner_environment
from minifal.startup.events import read_events

logger = logging.getLogger("minifal.fleet")

PROGRESS_EVERY_SECONDS = 5.0
STATE_HISTORY_KEPT = 50
READY_POLL_SECONDS = 0.2


class RunnerState(enum.StrEnum):
    """fal's runner states."""

    PENDING = "PENDING"
    SETUP = "SETUP"
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    DRAINING = "DRAINING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILURE_DELAY = "FAILURE_DELAY"


@dataclass(frozen=True)
class RunnerLaunch:
    """What every runner of one fleet shares."""

    app_reference: str
    data_dir: Path
    run_id: str
    run_dir: Path
    public_url: str
    use_gpus: bool
    echo_output: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the gateway dies, so no runner is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class RunnerProcess:
    def __init__(self, runner_id: str, launch: RunnerLaunch, gpus: list[str]) -> None:
        self.runner_id = runner_id
        self.launch = launch
        self.gpus = gpus
        self.state_history: list[tuple[float, RunnerState]] = []
        self._state = RunnerState.PENDING
        self.state = RunnerState.PENDING
        self.in_flight = 0
        self.last_dispatch = 0.0
        self.port: int | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.idle_since: float = time.time()
        self.exit_code: int | None = None
        self.last_exit_reason: str | None = None
        self.suspended = False
        """A connection to it was lost: no new requests until it is restarted."""
        self.stop_reason: str | None = None
        """Why the gateway stopped the current process, if it did (else it exited by itself)."""
        self.retiring = False
        """Stopped for good (keep_alive, shutdown): its lifecycle must not restart it."""
        self.replace_reason: str | None = None
        """Being replaced (health checks, request_timeout): restart at once, no back-off."""
        self.restart_at: float | None = None
        self.health_failures = 0
        self.last_health_check = 0.0
        self._process: asyncio.subprocess.Process | None = None
        self._output_task: asyncio.Task[None] | None = None

    # -- what the dispatcher and the tables read --------------------------------------------------

    @property
    def state(self) -> RunnerState:
        return self._state

    @state.setter
    def state(self, new: RunnerState) -> None:
        """Every change is kept (``/runners`` shows the history) and logged."""
        if self.state_history and new == self._state:
            return
        if self.state_history:
            logger.info("[%s] %s -> %s", self.runner_id, self._state.value, new.value)
        self._state = new
        self.state_history.append((time.time(), new))
        del self.state_history[:-STATE_HISTORY_KEPT]

    @property
    def accepts_requests(self) -> bool:
        return self.state in (RunnerState.IDLE, RunnerState.RUNNING) and not self.suspended

    @property
    def exited(self) -> bool:
        """Its process has ended (or none was started yet)."""
        return self._process is None or self._process.returncode is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_file(self) -> Path:
        return self.launch.run_dir / f"{self.runner_id}.jsonl"

    @property
    def log_file(self) -> Path:
        return self.launch.run_dir / f"{self.runner_id}.log"

    @property
    def startup_seconds(self) -> float | None:
        if self.ready_at is None or self.started_at is None:
            return None
        return self.ready_at - self.started_at

    def mark_busy(self, now: float) -> None:
        self.in_flight += 1
        self.last_dispatch = now
        if self.state == RunnerState.IDLE:
            self.state = RunnerState.RUNNING

    def mark_done(self, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0:
            self.idle_since = now
            if self.state == RunnerState.RUNNING:
                self.state = RunnerState.IDLE

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            **self.launch.extra_env,
            **runner_environment(
                data_dir=self.launch.data_dir,
                run_id=self.launch.run_id,
                runner_id=self.runner_id,
                events_file=self.events_file,
                public_url=self.launch.public_url,
                gpus=self.gpus if self.launch.use_gpus else None,
            ),
        }
        command = runner_command(self.launch.app_reference, self.port, self.launch.data_dir)
        self.launch.run_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        self.ready_at = None
        self.exit_code = None
        self.stop_reason = None
        self.suspended = False
        self.health_failures = 0
        self._process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the gateway only; it drains runners in order
            preexec_fn=_die_with_parent,
        )
        self.pid = self._process.pid
        self.state = RunnerState.SETUP
        self._output_task = asyncio.create_task(self._copy_output(), name=f"{self.runner_id}-log")
        gpus = f" on GPU {','.join(self.gpus)}" if self.gpus else ""
        logger.info("[%s] started (pid %s, port %s)%s", self.runner_id, self.pid, self.port, gpus)

    async def _copy_output(self) -> None:
        """Each line of the runner to the console with a ``[runner-id]`` prefix, and to its log."""
        assert self._process is not None and self._process.stdout is not None
        with self.log_file.open("ab") as log:
            while line := await self._process.stdout.readline():
                log.write(line)
                log.flush()
                if self.launch.echo_output:
                    text = line.decode(errors="replace").rstrip()
                    sys.stdout.write(f"[{self.runner_id}] {text}\n")
                    sys.stdout.flush()

    async def wait_ready(self, timeout: float) -> bool:
        """Poll ``/health`` until it answers (the port opens after ``setup()``), within ``timeout``.

        Prints a progress line every few seconds with the last startup phase the runner finished.
        """
        assert self.started_at is not None
        deadline = self.started_at + timeout
        next_progress = time.time() + PROGRESS_EVERY_SECONDS
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.time() < deadline:
                if self._process is None or self._process.returncode is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{self.url}{READY_PATH}")
                    if response.status_code == 200:
                        self.ready_at = time.time()
                        self.idle_since = self.ready_at
                        self.state = RunnerState.IDLE
                        logger.info(
                            "[%s] ready after %.1f s", self.runner_id, self.startup_seconds or 0
                        )
                        return True
                if time.time() >= next_progress:
                    next_progress += PROGRESS_EVERY_SECONDS
                    logger.info(
                        "[%s] starting: %.0f s, %s",
                        self.runner_id,
                        time.time() - self.started_at,
                        self.progress(),
                    )
                await asyncio.sleep(READY_POLL_SECONDS)
        return False

    def progress(self) -> str:
        events = read_events(self.events_file, self.pid)
        if not events:
            return "importing"
        return f"last finished phase: {events[-1]['phase']}"

    async def wait_exit(self) -> int:
        assert self._process is not None
        code = await self._process.wait()
        if self._output_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._output_task
        self.exit_code = code
        return code

    def signal(self, signum: int) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signum)

    async def stop(self, grace: float, reason: str) -> None:
        """SIGTERM (the runner drains and runs ``teardown()``), then SIGKILL after ``grace``."""
        if self.exited:
            return  # its lifecycle saw the exit and decides what comes next (restart, delay, end)
        self.state = RunnerState.DRAINING if self.in_flight else RunnerState.TERMINATING
        self.stop_reason = reason
        self.last_exit_reason = reason
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait_exit(), timeout=grace)
        except TimeoutError:
            logger.warning("[%s] did not stop within %.0f s: killing it", self.runner_id, grace)
            self.signal(signal.SIGKILL)
            await self.wait_exit()
        if self.state in (RunnerState.DRAINING, RunnerState.TERMINATING):
            self.state = RunnerState.TERMINATED  # unless its lifecycle moved on (restart, delay)
