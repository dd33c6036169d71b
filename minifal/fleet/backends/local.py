"""The first runner backend: each runner is a child process of the gateway, on this machine.

The Ray backend (``ray_runners.py``) reuses it on each node: there, the child is a Ray actor's,
listening on the node's address, and it gets SIGKILL when the actor dies (its node was lost).

A child runs ``python -m minifal.runner APP`` (``runner_contract``) in its own session, so Ctrl-C
reaches only the gateway, which drains runners in order; with ``PR_SET_PDEATHSIG``, so a gateway
that dies leaves no runner behind. Its output goes to ``DATA_DIR/runs/<run>/<runner>.log`` and,
prefixed with ``[runner-id]``, to the gateway's console.

With ``fork_server`` (the gateway's own backend, ``$MINIFAL_FORK_SERVER``), runners are forked
from one process per fleet that has already imported what the App's runners import
(``minifal/runner/fork_server.py``, ``fork_client.py``); where that server cannot be used the
backend execs runners as above. On an empty data dir the server has nothing to import yet, so a
runner does not wait for its start (1.6-2.7 s of an H100 host's slow interpreter start and
imports): it is exec'd, and the server starts beside it for later runners, importing what the
first ready runner recorded (its preload). Where that runner's bytecode cache is empty too (an
image without bytecode), a pool compiles the App's packages into it beside the runner
(``bytecode_warmer.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from minifal.compiled.bytecode_cache import configure_environment as configure_bytecode_cache
from minifal.fleet.backends.base import RequestLogSink, RunnerLaunch, RunnerRevision
from minifal.fleet.backends.bytecode_warmer import BytecodeWarmer
from minifal.fleet.backends.fork_client import (
    ForkedProcess,
    ForkServerClient,
    ForkServerUnavailable,
)
from minifal.host import envs
from minifal.host.parent_death import die_with_parent
from minifal.runner.import_record import record_path
from minifal.runner.log_lines import MARKER_BYTES, decode
from minifal.runner_contract import (
    DEFAULT_HOST,
    LOCAL_NODE,
    READY_PATH,
    runner_arguments,
    runner_command,
    runner_environment,
    runner_socket_path,
)
from minifal.startup.events import runner_events_file
from minifal.startup.progress import (
    HISTORY_RUNS,
    PhaseHistory,
    background_lines,
    console_lines,
)
from minifal.startup.runs import RunnerStart, read_run, recent_runs

logger = logging.getLogger("minifal.fleet")

PROGRESS_EVERY_SECONDS = 5.0
BACKGROUND_PROGRESS_EVERY_SECONDS = 15.0
"""After ready, while phases still run (compiles of a runner serving while compiling)."""
READY_POLL_SECONDS = 0.2
PER_RUNNER_ENV = (
    envs.RUNNER_ID.name,
    envs.EVENTS_FILE.name,
    envs.REVISION.name,
    envs.APP_SOURCE.name,
    "CUDA_DEVICE_ORDER",
    "CUDA_VISIBLE_DEVICES",
)
"""What differs between runners of one fleet; the fork server's environment has none of it."""


def fork_server_enabled(environ: dict[str, str] | None = None) -> bool:
    """``$MINIFAL_FORK_SERVER`` (``on`` unless ``off``), where this kernel has pidfds."""
    return envs.FORK_SERVER.get(environ) and hasattr(os, "pidfd_open")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalRunnerBackend:
    """Runners as child processes of this one, reached at ``host``; ``node`` names the machine."""

    def __init__(
        self,
        launch: RunnerLaunch,
        host: str = DEFAULT_HOST,
        node: str = LOCAL_NODE,
        parent_death_signal: int = signal.SIGTERM,
        unix_sockets: bool = True,
        fork_server: bool = False,
        on_request_log: RequestLogSink | None = None,
        fork_server_log: str = "fork-server.log",
    ) -> None:
        self.launch = launch
        self.on_request_log = on_request_log
        """Where the runners' request log lines go (else only to their logs)."""
        self.host = host
        self.node = node
        self.parent_death_signal = parent_death_signal
        self.unix_sockets = unix_sockets
        """Also listen on a unix socket in the run dir (the gateway's machine only)."""
        self.fork_server = fork_server
        self.fork_server_log = fork_server_log
        """Its file in the run dir (each app of a gateway has its own server)."""
        self._fork_server: ForkServerClient | None = None
        self._bytecode_warmer = BytecodeWarmer(
            launch.requirements, launch.run_dir / "bytecode-warmup.log"
        )

    def _environment(self, launch: RunnerLaunch, runner_id: str, gpus: list[str]) -> dict[str, str]:
        env = {
            **os.environ,
            **launch.extra_env,
            **runner_environment(
                data_dir=launch.data_dir,
                run_id=launch.run_id,
                runner_id=runner_id,
                events_file=runner_events_file(launch.run_dir, runner_id),
                public_url=launch.public_url,
                gpus=gpus if launch.use_gpus else None,
                node=self.node,
                max_body_bytes=launch.max_body_bytes,
            ),
        }
        configure_bytecode_cache(env, launch.data_dir)  # before the runner's first import
        return env

    def _fork_server_client(self, env: dict[str, str]) -> ForkServerClient:
        if self._fork_server is None:
            shared = {key: value for key, value in env.items() if key not in PER_RUNNER_ENV}
            self._fork_server = ForkServerClient(
                record_path(self.launch.data_dir, self.launch.app_reference),
                shared,
                self.launch.run_dir / self.fork_server_log,
                self.parent_death_signal,
                self.launch.app_reference,
            )
        return self._fork_server

    async def _spawn(
        self, runner_id: str, arguments: list[str], env: dict[str, str]
    ) -> asyncio.subprocess.Process | ForkedProcess:
        """Fork the runner from the fork server when it is up, else exec it."""
        client = self._fork_server
        if client is not None and client.up:
            try:
                return await client.spawn(arguments, env, os.getcwd())
            except ForkServerUnavailable as error:
                logger.warning("[%s] fork server: %s; starting it without", runner_id, error)
        return await asyncio.create_subprocess_exec(
            *runner_command(arguments),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the gateway only; it drains runners in order
            preexec_fn=die_with_parent(self.parent_death_signal),
        )

    async def close(self) -> None:
        """Stop the fork server (after the runners: the supervisor stopped them) and a
        bytecode warmup still running."""
        if self._fork_server is not None:
            await self._fork_server.close()
        await self._bytecode_warmer.close()

    async def start(
        self, runner_id: str, gpus: list[str], revision: RunnerRevision | None = None
    ) -> LocalRunnerProcess:
        launch = self.launch if revision is None else revision.applied_to(self.launch)
        port = free_port(self.host)
        env = self._environment(launch, runner_id, gpus)
        launch.run_dir.mkdir(parents=True, exist_ok=True)
        cache = env.get("PYTHONPYCACHEPREFIX")  # a cold one is filled beside this runner
        await self._bytecode_warmer.maybe_start(Path(cache) if cache else None, env)
        if self.fork_server:
            client = self._fork_server_client(env)
            if client.has_record():
                await client.usable()  # its imports are not the runner's time
            else:
                # Nothing recorded to import yet (an empty data dir): this runner is exec'd
                # now rather than after the server's own start, which goes on beside it.
                client.start()
        unix_socket = (
            runner_socket_path(launch.run_dir, runner_id, port) if self.unix_sockets else None
        )
        started_at = time.time()
        arguments = runner_arguments(
            launch.app_reference, port, launch.data_dir, self.host, unix_socket
        )
        process = await self._spawn(runner_id, arguments, env)
        on_gpus = f" on GPU {','.join(gpus)}" if gpus else ""
        logger.info("[%s] started (pid %s, port %s)%s", runner_id, process.pid, port, on_gpus)
        return LocalRunnerProcess(
            runner_id,
            process,
            port,
            started_at,
            runner_events_file(launch.run_dir, runner_id),
            launch.run_dir / f"{runner_id}.log",
            launch.echo_output,
            self.host,
            self.node,
            None if unix_socket is None else str(unix_socket),
            self.on_request_log,
            # its record of imports is written by then: the fork server may import what it adds
            None if self._fork_server is None else self._fork_server.runner_ready,
        )


class LocalRunnerProcess:
    """One child process of a runner, from its start to its exit."""

    def __init__(
        self,
        runner_id: str,
        process: asyncio.subprocess.Process | ForkedProcess,
        port: int,
        started_at: float,
        events_file: Path,
        log_file: Path,
        echo_output: bool,
        host: str = DEFAULT_HOST,
        node: str = LOCAL_NODE,
        unix_path: str | None = None,
        on_request_log: RequestLogSink | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.runner_id = runner_id
        self.on_request_log = on_request_log
        self.on_ready = on_ready
        """Called when it answers ready."""
        self.process = process
        self.port = port
        self.started_at = started_at
        self.events_file = events_file
        self.log_file = log_file
        self.echo_output = echo_output
        self.host = host
        self.node = node
        self.unix_path = unix_path
        """Where the gateway sends requests (``url`` stays for probes and websockets)."""
        self._output_task = asyncio.create_task(self._copy_output(), name=f"{runner_id}-log")
        self._earlier: list[RunnerStart] | None = None  # earlier runs' starts, read once
        self._background_report: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None

    async def _copy_output(self) -> None:
        """Each line of the runner to the console with a ``[runner-id]`` prefix, and to its log;
        a request's line (``log_lines``) to ``on_request_log`` too, readable in both."""
        assert self.process.stdout is not None
        with self.log_file.open("ab") as log:
            while True:
                try:
                    line = await self.process.stdout.readline()
                except ValueError:  # over the reader's limit (64 KiB): dropped, not fatal
                    line = b"[minifal] a line over 64 KiB was dropped\n"
                if not line:
                    break
                if MARKER_BYTES in line:
                    line = self._request_line(line)
                log.write(line)
                log.flush()
                if self.echo_output:
                    text = line.decode(errors="replace").rstrip()
                    for part in text.split("\n"):  # a request's traceback: each line prefixed
                        sys.stdout.write(f"[{self.runner_id}] {part}\n")
                    sys.stdout.flush()

    def _request_line(self, line: bytes) -> bytes:
        """A request's line: to ``on_request_log``; the readable line it stands for."""
        plain, entry = decode(line.decode(errors="replace").rstrip("\n"))
        if entry is None:
            return line
        if self.on_request_log is not None:
            self.on_request_log(self.runner_id, entry)
        readable = f"[{entry.request_id}] {entry.text}"
        return f"{plain}\n{readable}\n".encode() if plain else f"{readable}\n".encode()

    async def wait_ready(self, timeout: float) -> bool:
        """Poll the ready path until it answers (the port opens after ``setup()``).

        Every few seconds, logs what the runner is doing: the phases running, for how long, and
        how long the same ones took last time; and the long phases it finished meanwhile.
        """
        deadline = self.started_at + timeout
        next_progress = time.time() + PROGRESS_EVERY_SECONDS
        reported_until = self.started_at
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.time() < deadline:
                if self.exited:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{self.url}{READY_PATH}")
                    if response.status_code == 200:
                        if self.on_ready is not None:
                            self.on_ready()
                        self._background_report = asyncio.create_task(
                            self._report_background_work(time.time()),
                            name=f"{self.runner_id}-background-progress",
                        )
                        return True
                now = time.time()
                if now >= next_progress:
                    next_progress += PROGRESS_EVERY_SECONDS
                    for line in self.progress(reported_until, now):
                        logger.info("[%s] %s", self.runner_id, line)
                    reported_until = now
                await asyncio.sleep(READY_POLL_SECONDS)
        return False

    async def answers(self, timeout: float) -> bool:
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                response = await client.get(f"{self.url}{READY_PATH}")
            except httpx.HTTPError:
                return False
        return response.status_code == 200

    def progress(self, since: float, now: float) -> list[str]:
        """Lines about this starting runner (``startup/progress.py``), from its events file and
        the data dir's last few runs."""
        mine, history = self._events()
        return console_lines(mine, self.started_at, history, since, now)

    async def _report_background_work(self, since: float) -> None:
        """After ready, every 15 s while phases of its start still run (the compiles of a runner
        serving while compiling), what they are; ends when none runs, or with the process."""
        while not self.exited:
            await asyncio.sleep(BACKGROUND_PROGRESS_EVERY_SECONDS)
            now = time.time()
            mine, history = await asyncio.to_thread(self._events)
            lines = background_lines(mine, history, since, now)
            if lines is None:
                return
            for line in lines:
                logger.info("[%s] %s", self.runner_id, line)
            since = now

    def _events(self) -> tuple[RunnerStart | None, PhaseHistory]:
        """This process's events and the history they are compared with."""
        run = read_run(self.events_file.parent)
        if self._earlier is None:
            earlier = recent_runs(run.path.parent, HISTORY_RUNS, but=run.run_id)
            self._earlier = [start for past in earlier for start in past.starts]
        history = PhaseHistory([*self._earlier, *run.starts])
        mine = next((start for start in reversed(run.starts) if start.pid == self.pid), None)
        return mine, history

    async def wait_exit(self) -> int:
        code = await self.process.wait()
        if self._background_report is not None:
            self._background_report.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background_report
        with contextlib.suppress(asyncio.CancelledError):
            await self._output_task
        return code

    def _signal(self, signum: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
