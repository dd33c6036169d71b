"""The fork server with real processes: ``LocalRunnerBackend(launch, fork_server=True)`` starts
``python -m minifal.runner.fork_server``, which forks each runner; the runners serve HTTP with
their own environment, write their log, report their exit codes, and leave nothing behind. A
second fleet's fork server imports what the first fleet's runners imported; a recorded import
that starts a thread makes the fleet exec its runners instead.

No mocks: every process, socket and pipe is real. Every wait is bounded; nothing asserts
timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import clean_env

from minifal.fleet.backends.base import RunnerLaunch
from minifal.fleet.backends.fork_client import UNKNOWN_EXIT_CODE, ForkServerClient
from minifal.fleet.backends.local import LocalRunnerBackend, LocalRunnerProcess
from minifal.runner.import_record import read_record, record_path, write_record
from minifal.runner_contract import EXIT_SETUP_FAILED

pytestmark = pytest.mark.process

READY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 30.0
GONE_TIMEOUT_S = 20.0
POLL_S = 0.05

PRELOAD_PROBE = "netrc"
"""A standard-library module that minifal's runner does not import itself: the App imports it,
so it is in the record, and it says whether the fork server had imported it before the App."""

APP_SOURCE = f'''"""Says which runner answered; setup() fails in a runner named "broken-*"."""

import gc
import os
import sys

PROBE_PRELOADED = {PRELOAD_PROBE!r} in sys.modules
FROZEN_AT_IMPORT = gc.get_freeze_count()  # the fork server froze its survivors before the fork
import {PRELOAD_PROBE}  # noqa: E402,F401

import fal  # noqa: E402


class ForkProbeApp(fal.App):
    def setup(self) -> None:
        runner_id = os.environ["MINIFAL_RUNNER_ID"]
        print(f"setup of {{runner_id}} in pid {{os.getpid()}}", flush=True)
        if runner_id.startswith("broken"):
            raise RuntimeError("setup fails on purpose")

    @fal.endpoint("/")
    def whoami(self) -> dict:
        return {{
            "runner_id": os.environ["MINIFAL_RUNNER_ID"],
            "pid": os.getpid(),
            "probe_preloaded": PROBE_PRELOADED,
            "frozen_at_import": FROZEN_AT_IMPORT,
        }}
'''

THREAD_MODULE_SOURCE = '''"""Starts a thread at import, as some libraries do (a pool, a watcher)."""

import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="{name}", daemon={daemon}).start()
'''

CACHE_LIBRARY = "cache_dir_library"
CACHE_LIBRARY_SOURCE = '''"""Reads its cache dir at import, as huggingface_hub.constants does."""

import os

HF_HOME = os.path.expanduser(os.getenv("HF_HOME", "~/.cache/huggingface"))
'''

CACHE_APP_SOURCE = f'''"""Says where its library (imported in setup(), as on fal) caches."""

import os

import fal


class CacheDirApp(fal.App):
    def setup(self) -> None:
        import {CACHE_LIBRARY}

        self.library_hf_home = {CACHE_LIBRARY}.HF_HOME

    @fal.endpoint("/")
    def where(self) -> dict:
        return {{"library": self.library_hf_home, "environment": os.environ.get("HF_HOME")}}
'''

GATEWAY_SCRIPT = """import asyncio, json, sys
from pathlib import Path

from minifal.fleet.backends.local import LocalRunnerBackend
from minifal.fleet.backends.base import RunnerLaunch


async def main() -> None:
    app, data_dir, report = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    run_dir = data_dir / "runs" / "gateway-run"
    launch = RunnerLaunch(app, data_dir, "gateway-run", run_dir, "http://127.0.0.1:1/", False,
                          echo_output=False)
    backend = LocalRunnerBackend(launch, fork_server=True)
    runner = await backend.start("runner-0", [])
    ready = await runner.wait_ready(60.0)
    # Written aside and renamed: the test polls for the name and must never read it half-written.
    partial = report.with_suffix(".partial")
    partial.write_text(json.dumps({"ready": ready, "runner": runner.pid}))
    partial.rename(report)
    await asyncio.Event().wait()


asyncio.run(main())
"""


@pytest.fixture(autouse=True)
def no_minifal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend passes this process's environment on: none of minifal's own variables."""
    for key in list(os.environ):
        if key.startswith("MINIFAL_"):
            monkeypatch.delenv(key)


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "app" / "fork_probe_app.py"
    path.parent.mkdir()
    path.write_text(APP_SOURCE)
    return path


def make_launch(
    app_file: Path,
    data_dir: Path,
    run_id: str,
    extra_env: dict[str, str] | None = None,
    ran_before: bool = True,
) -> RunnerLaunch:
    """A launch of ``app_file`` on ``data_dir``. ``ran_before``: the data dir has a record of
    its runners' imports (a stdlib module, where none is there), so the fleet waits for the fork
    server and forks; on an empty data dir the first runners are exec'd beside its start."""
    record = record_path(data_dir, str(app_file))
    if ran_before and not record.exists():
        write_record(record, ["json"])
    return RunnerLaunch(
        app_reference=str(app_file),
        data_dir=data_dir,
        run_id=run_id,
        run_dir=data_dir / "runs" / run_id,
        public_url="http://127.0.0.1:1/",
        use_gpus=False,
        echo_output=False,
        extra_env=extra_env or {},
    )


@dataclass
class ForkFleet:
    """A backend and the runners it started (all stopped, then the backend closed, at the end)."""

    backend: LocalRunnerBackend
    runners: list[LocalRunnerProcess] = field(default_factory=list)

    async def start(self, runner_id: str) -> LocalRunnerProcess:
        runner = await self.backend.start(runner_id, [])
        self.runners.append(runner)
        return runner

    async def start_ready(self, runner_id: str) -> LocalRunnerProcess:
        runner = await self.start(runner_id)
        assert await runner.wait_ready(READY_TIMEOUT_S), log_of(runner)
        return runner


@contextlib.asynccontextmanager
async def fork_fleet(launch: RunnerLaunch) -> AsyncIterator[ForkFleet]:
    fleet = ForkFleet(LocalRunnerBackend(launch, fork_server=True))
    try:
        yield fleet
    finally:
        for runner in fleet.runners:
            runner.kill()
        for runner in fleet.runners:
            await asyncio.wait_for(runner.wait_exit(), EXIT_TIMEOUT_S)
        await asyncio.wait_for(fleet.backend.close(), CLOSE_TIMEOUT_S)


def log_of(runner: LocalRunnerProcess) -> str:
    try:
        return f"{runner.runner_id}'s log:\n" + runner.log_file.read_text(errors="replace")
    except OSError:
        return f"{runner.runner_id} has no log yet"


def parent_pid(pid: int) -> int:
    """The parent of a running process, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie whose parent has not reaped it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def until(condition: Callable[[], bool], what: str, timeout: float = GONE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(POLL_S)


async def ask(runner: LocalRunnerProcess) -> dict:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(f"{runner.url}/", json={})
    assert response.status_code == 200, response.text
    return response.json()


def fork_server_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "minifal.fleet" and "fork server" in record.getMessage()
    ]


# -- forked runners --------------------------------------------------------------------------------


def test_runners_are_forked_from_the_fork_server_and_answer_with_their_own_runner_id(
    app_file: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with fork_fleet(make_launch(app_file, tmp_path / "data", "run-1")) as fleet:
            first = await fleet.start("runner-0")
            second = await fleet.start("runner-1")
            server_pid = parent_pid(first.pid)
            assert server_pid != os.getpid()
            assert parent_pid(second.pid) == server_pid
            assert "minifal.runner.fork_server" in command_line(server_pid)
            assert parent_pid(server_pid) == os.getpid()  # the fleet's own child
            for runner in (first, second):
                assert await runner.wait_ready(READY_TIMEOUT_S), log_of(runner)
            answer = await ask(first)
            assert answer.pop("frozen_at_import") > 0  # frozen by the server, not the runner
            assert answer == {
                "runner_id": "runner-0",
                "pid": first.pid,
                "probe_preloaded": False,  # no record yet: the App imported it
            }
            assert (await ask(second))["runner_id"] == "runner-1"
            assert (await ask(second))["pid"] == second.pid

    asyncio.run(scenario())


def test_a_forked_runners_output_reaches_its_log_file(app_file: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def scenario() -> None:
        async with fork_fleet(make_launch(app_file, data_dir, "run-1")) as fleet:
            runner = await fleet.start_ready("runner-0")
            assert runner.log_file == data_dir / "runs" / "run-1" / "runner-0.log"
            line = f"setup of runner-0 in pid {runner.pid}"
            await until(lambda: line in runner.log_file.read_text(), f"{line!r} in the log")
            runner.terminate()
            assert await asyncio.wait_for(runner.wait_exit(), EXIT_TIMEOUT_S) == 0
            # uvicorn's lines at shutdown come through the same pipe
            assert "Application shutdown complete" in runner.log_file.read_text()

    asyncio.run(scenario())


def test_exit_codes_of_forked_runners_come_through(app_file: Path, tmp_path: Path) -> None:
    """setup() raising: EXIT_SETUP_FAILED; SIGKILL: -9; SIGTERM: a clean drain, 0."""

    async def scenario() -> None:
        async with fork_fleet(make_launch(app_file, tmp_path / "data", "run-1")) as fleet:
            broken = await fleet.start("broken-0")
            killed = await fleet.start("runner-1")
            terminated = await fleet.start("runner-2")
            server_pid = parent_pid(killed.pid)
            assert parent_pid(terminated.pid) == server_pid != os.getpid()

            assert await asyncio.wait_for(broken.wait_exit(), EXIT_TIMEOUT_S) == EXIT_SETUP_FAILED
            assert broken.exited
            assert "setup fails on purpose" in broken.log_file.read_text()

            assert await killed.wait_ready(READY_TIMEOUT_S), log_of(killed)
            killed.kill()
            assert await asyncio.wait_for(killed.wait_exit(), EXIT_TIMEOUT_S) == -signal.SIGKILL

            assert await terminated.wait_ready(READY_TIMEOUT_S), log_of(terminated)
            terminated.terminate()
            assert await asyncio.wait_for(terminated.wait_exit(), EXIT_TIMEOUT_S) == 0

    asyncio.run(scenario())


def test_close_ends_the_fork_server_and_leaves_no_runner(app_file: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        launch = make_launch(app_file, tmp_path / "data", "run-1")
        backend = LocalRunnerBackend(launch, fork_server=True)
        runners = [await backend.start(f"runner-{index}", []) for index in range(2)]
        server_pid = parent_pid(runners[0].pid)
        try:
            for runner in runners:
                assert await runner.wait_ready(READY_TIMEOUT_S), log_of(runner)
            for runner in runners:
                runner.terminate()
            codes = [await asyncio.wait_for(r.wait_exit(), EXIT_TIMEOUT_S) for r in runners]
            assert codes == [0, 0]
        finally:
            await asyncio.wait_for(backend.close(), CLOSE_TIMEOUT_S)
        for pid in (server_pid, *(runner.pid for runner in runners)):
            await until(lambda pid=pid: process_gone(pid), f"pid {pid} gone after close()")

    asyncio.run(scenario())


def test_a_killed_gateway_leaves_neither_fork_server_nor_runner_behind(
    app_file: Path, tmp_path: Path
) -> None:
    """The fork server dies with the fleet's process (SIGKILL), its runners with it (their
    death signal, SIGTERM here)."""
    script = tmp_path / "gateway.py"
    script.write_text(GATEWAY_SCRIPT)
    write_record(record_path(tmp_path / "data", str(app_file)), ["json"])  # it waits, and forks
    report = tmp_path / "report.json"
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, str(script), str(app_file), str(tmp_path / "data"), str(report)],
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not report.exists():
            assert gateway.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no runner ready:\n" + log_path.read_text()
            time.sleep(POLL_S)
        started = json.loads(report.read_text())
        assert started["ready"] is True
        runner_pid = started["runner"]
        server_pid = parent_pid(runner_pid)
        assert server_pid != gateway.pid and parent_pid(server_pid) == gateway.pid
    finally:
        gateway.kill()
        gateway.wait(EXIT_TIMEOUT_S)

    async def gone() -> None:
        for pid in (server_pid, runner_pid):
            await until(lambda pid=pid: process_gone(pid), f"pid {pid} gone after the gateway")

    try:
        asyncio.run(gone())
    finally:  # what a failure left behind must not outlive the test
        for pid in (runner_pid, server_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_runners_of_a_dead_fork_server_stop_and_the_next_runner_is_execd(
    app_file: Path, tmp_path: Path
) -> None:
    """A fork server that dies takes its runners with it (their death signal); their exit code
    is unknown, and the fleet execs the runners it starts next."""

    async def scenario() -> None:
        async with fork_fleet(make_launch(app_file, tmp_path / "data", "run-1")) as fleet:
            forked = await fleet.start_ready("runner-0")
            server_pid = parent_pid(forked.pid)
            assert server_pid != os.getpid()
            os.kill(server_pid, signal.SIGKILL)
            code = await asyncio.wait_for(forked.wait_exit(), EXIT_TIMEOUT_S)
            assert code == UNKNOWN_EXIT_CODE
            execd = await fleet.start_ready("runner-1")
            assert parent_pid(execd.pid) == os.getpid()
            assert (await ask(execd))["runner_id"] == "runner-1"

    asyncio.run(scenario())


# -- the record of imports -------------------------------------------------------------------------


def test_a_second_fleet_forks_runners_that_already_imported_what_the_first_recorded(
    app_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    record = record_path(data_dir, str(app_file))

    async def first_fleet() -> None:
        async with fork_fleet(make_launch(app_file, data_dir, "run-1")) as fleet:
            runner = await fleet.start_ready("runner-0")
            assert (await ask(runner))["probe_preloaded"] is False
            await until(lambda: PRELOAD_PROBE in read_record(record), "the record of imports")

    async def second_fleet() -> None:
        async with fork_fleet(make_launch(app_file, data_dir, "run-2")) as fleet:
            runner = await fleet.start_ready("runner-0")
            answer = await ask(runner)
            assert answer["runner_id"] == "runner-0"
            assert answer["probe_preloaded"] is True  # the fork server had imported it

    with caplog.at_level(logging.INFO, logger="minifal.fleet"):
        asyncio.run(first_fleet())
        recorded = read_record(record)
        assert "uvicorn" in recorded, recorded[:20]
        assert not any(name.startswith("minifal_app_") for name in recorded)  # the App's file
        caplog.clear()
        asyncio.run(second_fleet())

    ready = [message for message in fork_server_messages(caplog) if "ready" in message]
    assert len(ready) == 1, fork_server_messages(caplog)
    # the runner's own server, and every recorded module
    assert f"{len(recorded) + 1} modules imported" in ready[0], ready[0]
    assert "(0 failed)" in ready[0], ready[0]


@pytest.mark.parametrize("daemon", [True, False], ids=["daemon-thread", "non-daemon-thread"])
def test_a_recorded_import_that_starts_a_thread_makes_the_fleet_exec_its_runners(
    app_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    daemon: bool,
) -> None:
    """Forking with a Python thread running is unsafe: the fork server says so, leaves on its
    own (it does not wait for the library's thread), and runners start as the fleet's own
    children, ready as ever."""
    library = tmp_path / "library"
    library.mkdir()
    thread_name = "library-pool-worker"
    module = "fork_hazard_library"
    (library / f"{module}.py").write_text(
        THREAD_MODULE_SOURCE.format(name=thread_name, daemon=daemon)
    )
    data_dir = tmp_path / "data"
    write_record(record_path(data_dir, str(app_file)), ["json", module])
    launch = make_launch(app_file, data_dir, "run-1", {"PYTHONPATH": str(library)})

    async def scenario() -> None:
        async with fork_fleet(launch) as fleet:
            first = await fleet.start_ready("runner-0")
            second = await fleet.start_ready("runner-1")
            for runner in (first, second):
                assert parent_pid(runner.pid) == os.getpid()  # exec'd by the fleet
            assert (await ask(first))["runner_id"] == "runner-0"
            assert (await ask(second))["runner_id"] == "runner-1"
            server = fleet.backend._fork_server
            assert server is not None and server.process is not None
            assert server.process.returncode == 0, (
                f"the fork server that found a hazard was stopped with "
                f"{server.process.returncode} instead of leaving on its own"
            )

    with caplog.at_level(logging.INFO, logger="minifal.fleet"):
        asyncio.run(scenario())
    messages = fork_server_messages(caplog)
    assert any("unsafe" in message and thread_name in message for message in messages), messages
    assert not any("fork server ready" in message for message in messages), messages


def test_a_preloaded_library_sees_the_data_dirs_hf_home_as_in_an_execd_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner's ``HF_HOME`` defaults to the data dir's (``activate_data_dir``, before the
    App's imports). A library that reads it at import (huggingface_hub does) must see that
    default in a forked runner too, also when the fork server imported it first."""
    monkeypatch.delenv("HF_HOME", raising=False)
    library = tmp_path / "library"
    library.mkdir()
    (library / f"{CACHE_LIBRARY}.py").write_text(CACHE_LIBRARY_SOURCE)
    app = tmp_path / "app" / "cache_dir_app.py"
    app.parent.mkdir()
    app.write_text(CACHE_APP_SOURCE)
    data_dir = tmp_path / "data"
    expected = str(data_dir / ".cache" / "huggingface")
    env = {"PYTHONPATH": str(library)}

    async def fleet_answer(run_id: str) -> dict:
        async with fork_fleet(make_launch(app, data_dir, run_id, env)) as fleet:
            runner = await fleet.start_ready("runner-0")
            answer = await ask(runner)
            await until(
                lambda: CACHE_LIBRARY in read_record(record_path(data_dir, str(app))),
                "the record of imports",
            )
            return answer

    first = asyncio.run(fleet_answer("run-1"))
    assert first == {"library": expected, "environment": expected}
    second = asyncio.run(fleet_answer("run-2"))  # the fork server imports the library now
    assert second == {"library": expected, "environment": expected}


# -- preload: a fork server started before its App's record ----------------------------------------


def test_a_fork_server_started_before_any_record_imports_what_the_first_ready_runner_recorded(
    app_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty data dir: the first runner is exec'd at once (the fork server, with nothing to
    import yet, starts beside it) and imports the App's modules itself; once it is ready the
    fork server imports what it recorded, and the next runner is forked with them."""
    launch = make_launch(app_file, tmp_path / "data", "run-1", ran_before=False)

    async def scenario() -> None:
        async with fork_fleet(launch) as fleet:
            first = await fleet.start_ready("runner-0")
            assert parent_pid(first.pid) == os.getpid()  # exec'd: no wait for the server
            assert (await ask(first))["probe_preloaded"] is False
            await until(
                lambda: any("more modules imported" in m for m in fork_server_messages(caplog)),
                "the fork server's preload",
            )
            second = await fleet.start_ready("runner-1")
            assert parent_pid(second.pid) != os.getpid()  # forked
            answer = await ask(second)
            assert answer["runner_id"] == "runner-1"
            assert answer["probe_preloaded"] is True

    with caplog.at_level(logging.INFO, logger="minifal.fleet"):
        asyncio.run(scenario())
    preloaded = [m for m in fork_server_messages(caplog) if "more modules imported" in m]
    assert len(preloaded) == 1, fork_server_messages(caplog)  # runner-1 recorded nothing new
    assert preloaded[0].startswith(f"fork server of {app_file}: "), preloaded[0]
    assert not any("unsafe" in m for m in fork_server_messages(caplog))


def app_importing_library(tmp_path: Path, module: str, source: str) -> RunnerLaunch:
    """A launch of an App whose file imports ``module`` (written from ``source`` into a library
    dir on the runners' ``PYTHONPATH``); the data dir's record does not list it yet."""
    library = tmp_path / "library"
    library.mkdir()
    (library / f"{module}.py").write_text(source)
    app = tmp_path / "app" / f"{module}_app.py"
    app.parent.mkdir()
    app.write_text(f"{APP_SOURCE}\nimport {module}  # noqa: E402,F401\n")
    return make_launch(app, tmp_path / "data", "run-1", {"PYTHONPATH": str(library)})


def test_a_preloaded_import_that_starts_a_thread_makes_the_fleet_exec_later_runners(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The App imports a library that starts a thread (not a daemon): its first runner is
    forked (nothing recorded yet), and the preload of what it recorded makes forking unsafe.
    The runner forked before answers on; the next is the fleet's own child; the fork server
    leaves on its own when the fleet closes it, the library's thread notwithstanding."""
    thread_name = "library-pool-worker"
    launch = app_importing_library(
        tmp_path, "fork_hazard_library", THREAD_MODULE_SOURCE.format(name=thread_name, daemon=False)
    )

    async def scenario() -> None:
        async with fork_fleet(launch) as fleet:
            forked = await fleet.start_ready("runner-0")
            assert parent_pid(forked.pid) != os.getpid()
            await until(
                lambda: any("became unsafe" in m for m in fork_server_messages(caplog)),
                "the fork server's preload to find the thread",
            )
            execd = await fleet.start_ready("runner-1")
            assert parent_pid(execd.pid) == os.getpid()
            assert (await ask(execd))["runner_id"] == "runner-1"
            assert (await ask(forked))["runner_id"] == "runner-0"
            server = fleet.backend._fork_server
        assert server is not None and server.process is not None
        assert server.process.returncode == 0, server.process.returncode

    with caplog.at_level(logging.INFO, logger="minifal.fleet"):
        asyncio.run(scenario())
    unsafe = [m for m in fork_server_messages(caplog) if "became unsafe" in m]
    assert len(unsafe) == 1 and thread_name in unsafe[0], fork_server_messages(caplog)


SLOW_IMPORT_SOURCE = '''"""Imported by the App's runners at once; in the fork server (no
runner id), it says it has begun, then waits for the test's word (up to a minute)."""

import os
import pathlib
import time

if "MINIFAL_RUNNER_ID" not in os.environ:
    pathlib.Path({begun!r}).touch()
    deadline = time.monotonic() + 60.0
    while not pathlib.Path({go_on!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
'''


def test_a_runner_that_exits_while_the_fork_server_preloads_is_reported_during_the_import(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fleet waits for a stopped runner's exit code before it hands its GPU on: the fork
    server reports an exit in the middle of a preload's import (seconds, for torch), not
    after it. Here the import waits until the test has seen the exit (bounded: it would wait
    a minute otherwise, longer than the test waits for the exit)."""
    begun, go_on = tmp_path / "import-begun", tmp_path / "import-go-on"
    launch = app_importing_library(
        tmp_path, "fork_slow_library", SLOW_IMPORT_SOURCE.format(begun=str(begun), go_on=str(go_on))
    )

    async def scenario() -> None:
        async with fork_fleet(launch) as fleet:
            runner = await fleet.start_ready("runner-0")
            assert parent_pid(runner.pid) != os.getpid()
            try:
                await until(begun.exists, "the fork server's import of the slow library")
                runner.kill()
                code = await asyncio.wait_for(runner.wait_exit(), EXIT_TIMEOUT_S / 2)
                assert code == -signal.SIGKILL
            finally:
                go_on.touch()
            await until(
                lambda: any("more modules imported" in m for m in fork_server_messages(caplog)),
                "the end of the preload",
            )

    with caplog.at_level(logging.INFO, logger="minifal.fleet"):
        asyncio.run(scenario())


def test_a_fork_server_closed_while_it_starts_in_the_background_leaves_no_process(
    tmp_path: Path,
) -> None:
    """A fleet stopped right after its first runner was exec'd: the server's start beside it
    is cancelled, and a server already spawned is stopped with it."""
    client = ForkServerClient(
        tmp_path / "no-record.txt", clean_env(), tmp_path / "fork-server.log", signal.SIGTERM
    )

    async def scenario() -> int | None:
        client.start()
        await asyncio.sleep(0.2)  # spawned, most likely, and still importing
        await client.close()
        assert not client.up
        return None if client.process is None else client.process.pid

    pid = asyncio.run(scenario())
    if pid is not None:
        asyncio.run(until(lambda: process_gone(pid), f"the fork server (pid {pid}) gone"))
