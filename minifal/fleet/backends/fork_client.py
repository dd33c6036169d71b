"""The fleet's side of a fork server (``minifal/runner/fork_server.py``): start it, fork runners
from it, hear of their exits, close it.

A forked runner is a child of the fork server, not of the gateway, so ``ForkedProcess`` stands
in for ``asyncio.subprocess.Process``: its pid, its output (a pipe the gateway made and the
child writes to), signals sent by pid, and its exit, seen through a pidfd here and with the code
the fork server reports.

Each time a runner becomes ready it has just written the record of its imports
(``runner/server.py`` writes it before it answers ready); when the record changed since the
server read it, the client asks the server to preload what it adds (one preload at a time), so
that runners forked later start with it. The first fleet on an empty data dir, and every App
but the first of a multi-app gateway, start their fork server before any record exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minifal.host.parent_death import die_with_parent

logger = logging.getLogger("minifal.fleet")

READY_TIMEOUT_SECONDS = 300.0
"""How long the fork server may take to import what the App's runners import; past it, the
fleet execs runners as before."""
PRELOAD_TIMEOUT_SECONDS = READY_TIMEOUT_SECONDS
"""How long a preload may take; past it, the fleet execs runners (the server may be stuck in an
import)."""
REPLY_TIMEOUT_SECONDS = 10.0
EXIT_CODE_TIMEOUT_SECONDS = 5.0
"""How long after a child is gone its exit code may take to arrive (while the server preloads,
up to ``PRELOAD_TIMEOUT_SECONDS``: it reports exits during an import, but a long call into a
native library delays its handler)."""
UNKNOWN_EXIT_CODE = 255
"""A forked runner's code when its fork server died before it could report it."""
MAX_MESSAGE_BYTES = 1024 * 1024


class ForkServerUnavailable(RuntimeError):
    """The fork server cannot start runners (it failed, timed out or found forking unsafe)."""


class ForkedProcess:
    """A runner forked by the fork server, with the parts of ``asyncio.subprocess.Process``
    that ``LocalRunnerProcess`` uses."""

    def __init__(
        self,
        pid: int,
        stdout: asyncio.StreamReader,
        code: asyncio.Future[int],
        code_timeout: Callable[[], float],
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self._returncode: int | None = None
        self._code = code
        self._code_timeout = code_timeout
        loop = asyncio.get_running_loop()
        self._gone = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # exited (and reaped by the server) already
            self._gone.set_result(None)
        else:
            loop.add_reader(self._pidfd, self._on_gone)

    def _on_gone(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        if not self._gone.done():
            self._gone.set_result(None)

    @property
    def returncode(self) -> int | None:
        """Its exit code once it has exited (as ``asyncio.subprocess.Process`` sets it without
        a ``wait()``), else None."""
        if self._returncode is None and self._code.done() and not self._code.exception():
            self._returncode = self._code.result()
        if self._returncode is None and self._gone.done() and self._code.done():
            self._returncode = UNKNOWN_EXIT_CODE  # the server died before it could say
        return self._returncode

    async def wait(self) -> int:
        if self.returncode is None:
            await asyncio.shield(self._gone)
            try:
                await asyncio.wait_for(asyncio.shield(self._code), self._code_timeout())
            except (TimeoutError, ForkServerUnavailable):
                logger.warning("runner pid %d: exit code unknown (fork server gone)", self.pid)
                self._returncode = UNKNOWN_EXIT_CODE
        code = self.returncode
        assert code is not None
        return code

    def send_signal(self, signum: int) -> None:
        if not self._gone.done():
            os.kill(self.pid, signum)


class ForkServerClient:
    """One fork server for one fleet's runners (the same App, the same base environment)."""

    def __init__(
        self,
        imports_record: Path,
        env: dict[str, str],
        log_file: Path,
        death_signal: int,
        app: str = "the app",
    ) -> None:
        self.imports_record = imports_record
        self.app = app
        """Whose runners it forks, for its log lines."""
        self.env = env
        self.log_file = log_file
        self.death_signal = death_signal
        self.process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._replies: dict[str, asyncio.Future[int]] = {}
        self._exit_codes: dict[int, asyncio.Future[int]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[bool] | None = None
        self._next_id = 0
        self._record_read: tuple[int, int] | None = None
        """The record as the server last read it (its mtime and size)."""
        self._preloading: asyncio.Task[None] | None = None
        self._preloaded: asyncio.Future[dict[str, Any]] | None = None
        self._preload_again = False
        self._unsafe: str | None = None
        """Why runners are no longer forked after a preload (forking unsafe, or it hung)."""

    def start(self) -> None:
        """Start the server in the background, once (``usable()`` waits for that start)."""
        if self._starting is None:
            self._starting = asyncio.create_task(self._start(), name="fork-server-start")

    async def usable(self) -> bool:
        """Start the server once (every caller waits for the same start); whether runners can
        be forked from it."""
        self.start()
        assert self._starting is not None
        return await asyncio.shield(self._starting) and self._unsafe is None

    @property
    def up(self) -> bool:
        """Whether runners can be forked from it now, without waiting for its start."""
        started = self._starting
        if started is None or not started.done() or started.cancelled():
            return False
        return started.exception() is None and started.result() and self._unsafe is None

    def has_record(self) -> bool:
        """Whether its app's runners have recorded imports for it to make at its start."""
        return self._record_state() is not None

    def _record_state(self) -> tuple[int, int] | None:
        try:
            stat = self.imports_record.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def _start(self) -> bool:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._record_read = self._record_state()  # before the server reads it
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with theirs, self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "minifal.runner.fork_server",
                "--control-fd",
                str(theirs.fileno()),
                "--imports",
                str(self.imports_record),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        ours.setblocking(False)
        self._control = ours
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(), name="fork-server-reader")
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT_SECONDS)
        except (TimeoutError, ForkServerUnavailable) as error:
            reason = str(error) or "not ready in time"
            logger.warning("fork server unavailable (%s): runners start without it", reason)
            await self.close()
            return False
        if ready["hazards"]:
            logger.warning(
                "fork server: forking is unsafe here (%s): runners start without it",
                "; ".join(ready["hazards"]),
            )
            await self.close()
            return False
        logger.info(
            "fork server ready (pid %d): %d modules imported in %.1f s (%d failed)",
            self.process.pid,
            ready["imported"],
            ready["seconds"],
            ready["failed"],
        )
        if self._record_state() != self._record_read:  # a runner exec'd meanwhile got ready
            self._preloading = asyncio.create_task(self._preload(), name="fork-server-preload")
        return True

    async def _read(self) -> None:
        assert self._control is not None
        loop = asyncio.get_running_loop()
        error: BaseException = ForkServerUnavailable("the fork server exited")
        try:
            while data := await loop.sock_recv(self._control, MAX_MESSAGE_BYTES):
                self._dispatch(json.loads(data))
        except (OSError, ValueError) as exc:
            error = ForkServerUnavailable(f"the fork server's connection failed: {exc}")
        finally:
            waiting = (self._ready, self._preloaded, *self._replies.values())
            for future in (*waiting, *self._exit_codes.values()):
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: nobody may be waiting for it

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "ready" in message and self._ready is not None and not self._ready.done():
            self._ready.set_result(message["ready"])
        elif "preloaded" in message:
            if self._preloaded is not None and not self._preloaded.done():
                self._preloaded.set_result(message["preloaded"])
        elif "started" in message:
            future = self._replies.pop(message["started"], None)
            if future is not None and future.cancelled():  # its spawn() gave up: nobody's
                with contextlib.suppress(ProcessLookupError):
                    os.kill(message["pid"], signal.SIGKILL)
            elif future is not None and not future.done():
                future.set_result(message["pid"])
        elif "failed" in message:
            future = self._replies.pop(message["failed"], None)
            if future is not None and not future.done():
                future.set_exception(ForkServerUnavailable(message["error"]))
        elif "exited" in message:
            future = self._exit_code(message["exited"])
            if not future.done():
                future.set_result(message["code"])

    def _exit_code(self, pid: int) -> asyncio.Future[int]:
        if pid not in self._exit_codes:
            self._exit_codes[pid] = asyncio.get_running_loop().create_future()
        return self._exit_codes[pid]

    async def spawn(self, args: list[str], env: dict[str, str], cwd: str) -> ForkedProcess:
        """Fork a runner that runs ``python -m minifal.runner ARGS`` in ``env``."""
        if self._control is None or self._reader is None or self._reader.done():
            raise ForkServerUnavailable("the fork server is not running")
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = str(self._next_id)
        request = {
            "start": request_id,
            "args": args,
            "env": env,
            "cwd": cwd,
            "death_signal": self.death_signal,
        }
        reply = self._replies[request_id] = loop.create_future()
        read_end, write_end = os.pipe()
        try:
            socket.send_fds(self._control, [json.dumps(request).encode()], [write_end])
        except OSError as error:
            os.close(read_end)
            self._replies.pop(request_id, None)
            raise ForkServerUnavailable(f"cannot reach the fork server: {error}") from error
        finally:
            os.close(write_end)
        try:
            pid = await asyncio.wait_for(reply, self._reply_timeout())
        except BaseException:
            os.close(read_end)
            raise
        stdout = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stdout), os.fdopen(read_end, "rb", 0)
        )
        return ForkedProcess(pid, stdout, self._exit_code(pid), self._exit_code_timeout)

    def _preload_running(self) -> bool:
        return self._preloading is not None and not self._preloading.done()

    def _reply_timeout(self) -> float:
        """How long the answer to a start may take: while a preload runs, the server answers
        between two imports, and one import may take seconds (torch's)."""
        return PRELOAD_TIMEOUT_SECONDS if self._preload_running() else REPLY_TIMEOUT_SECONDS

    def _exit_code_timeout(self) -> float:
        return PRELOAD_TIMEOUT_SECONDS if self._preload_running() else EXIT_CODE_TIMEOUT_SECONDS

    def runner_ready(self) -> None:
        """A runner became ready (its record of imports written): when the record changed
        since the server read it, have the server preload what it adds."""
        if self._starting is None or not self._starting.done() or self._unsafe is not None:
            return
        if self._starting.cancelled() or self._starting.exception() or not self._starting.result():
            return
        if self._preload_running():
            self._preload_again = True  # the record may change once more meanwhile
        elif self._record_state() != self._record_read:
            self._preloading = asyncio.create_task(self._preload(), name="fork-server-preload")

    async def _preload(self) -> None:
        """Preloads until the record no longer changes; on a hazard or a hung preload, later
        runners are exec'd (those forked already run on)."""
        assert self._control is not None
        while True:
            self._preload_again = False
            self._record_read = self._record_state()  # before the server reads it
            self._preloaded = asyncio.get_running_loop().create_future()
            try:
                self._control.send(json.dumps({"preload": True}).encode())
                result = await asyncio.wait_for(
                    asyncio.shield(self._preloaded), PRELOAD_TIMEOUT_SECONDS
                )
            except (OSError, TimeoutError, ForkServerUnavailable) as error:
                self._unsafe = f"its preload failed: {str(error) or 'not done in time'}"
                logger.warning("fork server of %s: %s", self.app, self._unsafe)
                return
            finally:
                self._preloaded = None
            self._log_preload(result)
            if result["hazards"]:
                self._unsafe = "; ".join(result["hazards"])
                return
            if not self._preload_again or self._record_state() == self._record_read:
                return

    def _log_preload(self, result: dict[str, Any]) -> None:
        failed = f" ({len(result['failed'])} failed)" if result["failed"] else ""
        # A record rewritten with nothing new (a forked runner's differs from an exec'd one's
        # by what the server had imported) is not news.
        log = logger.info if result["imported"] or result["failed"] else logger.debug
        log(
            "fork server of %s: %d more modules imported in %.1f s%s",
            self.app,
            result["imported"],
            result["seconds"],
            failed,
        )
        if result["hazards"]:
            logger.warning(
                "fork server of %s: forking became unsafe (%s): later runners start without it",
                self.app,
                "; ".join(result["hazards"]),
            )

    async def close(self) -> None:
        """Hang up; the server waits a little for its children, then exits (bounded here too)."""
        starting = self._starting
        if starting is not None and not starting.done() and starting is not asyncio.current_task():
            starting.cancel()  # a start in the background: its process is stopped below
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        if self._preloading is not None:
            self._preloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preloading
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.shutdown(socket.SHUT_RDWR)
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._control is not None:
            self._control.close()
            self._control = None
