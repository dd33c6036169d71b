"""``python -m minifal.runner.fork_server``: a fleet's runners, forked from one process that has
already imported what they import.

Why: most of a warm runner's start is Python work under one GIL, the App's imports (torch,
diffusers, transformers) and those of its compiled graphs (Inductor, and the custom ops and
dispatch rules they register), paid again by every runner that starts. The fork server pays
them once per fleet: it imports the runner's server and every module the App's last ready
runner had imported (``import_record.py``), then forks one child per runner, which starts at
``python -m minifal.runner``'s ``main()`` with those modules in place.

The record may be empty or older than the App (the first fleet on an empty data dir, several
Apps started together): then the first runners import for themselves. When one of them becomes
ready the fleet asks the server to *preload*: it reads the record again and imports what it
adds, so the runners forked after that start with it.

Forking is safe only from a process with one Python thread that has not touched the GPU (the
CUDA driver does not survive a fork). After its imports the server checks both; when either
fails it says so in its ready message and the fleet starts runners with plain ``exec`` instead.
After a preload that made forking unsafe it says so in its answer, refuses further starts and
stays, for the children it has, until the fleet hangs up.

The fleet talks to it over a ``SOCK_SEQPACKET`` unix socket (``--control-fd``), one JSON
message per packet:

- server -> fleet: ``{"ready": {...}}`` once; ``{"started": ID, "pid": P}`` or
  ``{"failed": ID, "error": E}`` per start; ``{"exited": P, "code": C}`` (negative: the signal)
  when a child exits; ``{"preloaded": {"imported": N, "failed": [...], "seconds": S,
  "hazards": [...]}}`` per preload (``imported``: the record's modules it did not have before).
- fleet -> server: ``{"start": ID, "args": [...], "env": {...}, "cwd": D, "death_signal": S}``,
  with the child's stdout and stderr attached as a file descriptor (``SCM_RIGHTS``);
  ``{"preload": true}``.

A preload runs one recorded module at a time between the loop's other work (``Preload``), so
starts are served while it runs: a start waits for at most the import in progress (that wait
is bounded by one module, and what it buys is the module), and its child imports what the
server has not yet, as without a preload. A child that exits during an import is reported at
once (``SIGCHLD``), not after it: the fleet's switch to another App waits for that exit.

Each child gets its own session, the fleet's death signal (sent when this server dies), the
environment it was sent and the output descriptor. When the fleet closes the socket the server
waits for its children (``CLOSE_WAIT_SECONDS``, they were stopped first), then exits.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from minifal.compiled import torch_internals
from minifal.host import envs
from minifal.host.collector import freeze_survivors
from minifal.host.data_dir import activate_data_dir
from minifal.host.parent_death import die_with_parent
from minifal.runner.fork_safety import fork_hazards
from minifal.runner.import_record import read_record
from minifal.runner.imports_preload import Preload, preload
from minifal.runner_contract import adopt_environment, export_to_process

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
CLOSE_WAIT_SECONDS = 5.0
"""How long the server waits for its children after the fleet hangs up (they get the fleet's
death signal when it exits)."""


def prime_file_hashes() -> list[str]:
    """Compute, once for all children, the hashes of installed files that each child would
    otherwise compute the same way on its first compiled-graph load; the names of those done.

    Triton's ``triton_key()`` hashes Triton's sources and its compiler library (0.37 s on the
    H200 host) and keeps the result in a ``functools`` cache, which a forked child inherits.
    It reads files only: no device is touched.
    """
    primed = []
    if "triton" in sys.modules:
        try:
            torch_internals.triton_key()
        except Exception:  # an older or newer Triton: each child computes it itself
            pass
        else:
            primed.append("triton_key")
    return primed


def run_child(args: list[str]) -> int:
    """The runner's ``main()``, then what the interpreter does at exit: join the threads that
    are not daemons and run the ``atexit`` functions."""
    from minifal.runner.__main__ import main

    code: int = 1
    try:
        code = main(args)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        # threading._shutdown and atexit._run_exitfuncs are what Py_FinalizeEx calls first; a
        # child of fork never returns to the interpreter's own exit.
        with contextlib.suppress(Exception):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    return code


class ForkServer:
    """The server's loop: start children on request, report their exits, preload between."""

    def __init__(
        self, control: socket.socket, record: Path | None = None, failed: Iterable[str] = ()
    ) -> None:
        self.control = control
        self.record = record
        """The record of imports that a preload reads again."""
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, int] = {}  # pid -> its pidfd
        self.selector.register(control, selectors.EVENT_READ)
        self.preload: Preload | None = None
        self.preloads_asked = 0
        """Preloads asked while one ran: each runs (and is answered) after it."""
        self.unsafe: list[str] = []
        """Why forking became unsafe (a preload's import); no child is forked after."""
        self.checked = True
        """Whether ``fork_hazards()`` ran since the last import."""
        self.failed_imports = set(failed)  # not tried again

    def send(self, message: dict) -> None:
        self.control.sendall(json.dumps(message).encode())

    def serve(self) -> None:
        while True:
            # While a preload runs, the loop only looks for messages and exits between imports.
            for key, _ in self.selector.select(0 if self.preload is not None else None):
                if key.fileobj is self.control:
                    if not self.receive():
                        self.close()
                        return
                else:
                    self.reap(key.data)
            if self.preload is not None:
                self.preload_step(self.preload)

    def receive(self) -> bool:
        """Handle one message from the fleet; False once it has hung up."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self.control, MAX_MESSAGE_BYTES, 1)
        except ConnectionError:
            return False
        if not data:
            return False
        request = json.loads(data)
        if "preload" in request:
            for fd in fds:
                os.close(fd)
            self.preloads_asked += 1
            if self.preload is None:
                self.begin_preload()
            return True
        if not fds:
            self.send({"failed": request.get("start"), "error": "no output descriptor"})
            return True
        try:
            if not self.safe_to_fork():
                self.send({"failed": request["start"], "error": self.unsafe_reason()})
                return True
            pid = self.fork(request, fds[0])
        except OSError as error:
            self.send({"failed": request.get("start"), "error": str(error)})
        else:
            self.send({"started": request["start"], "pid": pid})
        finally:
            os.close(fds[0])
        return True

    def safe_to_fork(self) -> bool:
        """Whether a child may be forked now: checked again after a preload's imports."""
        if not self.checked and not self.unsafe:
            self.unsafe = fork_hazards()
            self.checked = True
            if self.unsafe and self.preload is not None:
                self.finish_preload(self.preload)  # no child will use the rest
        return not self.unsafe

    def unsafe_reason(self) -> str:
        return f"forking became unsafe: {'; '.join(self.unsafe)}"

    def begin_preload(self) -> None:
        """Start the next preload asked: the recorded modules not imported (or failed) yet."""
        self.preloads_asked -= 1
        recorded = read_record(self.record) if self.record is not None else []
        names = [
            name for name in recorded if name not in sys.modules and name not in self.failed_imports
        ]
        preload = Preload(names)
        if names and not self.unsafe:
            self.preload = preload
        else:
            self.send({"preloaded": preload.result(self.unsafe)})

    def preload_step(self, preload: Preload) -> None:
        with self.reaping_on_exit():
            imported = preload.step()
        if imported:
            self.checked = False
        if preload.done:
            self.finish_preload(preload)

    @contextlib.contextmanager
    def reaping_on_exit(self) -> Iterator[None]:
        """While an import runs, report each child that exits from a ``SIGCHLD`` handler (the
        loop's own reaping waits for the import's end). The handler runs only here, between two
        of the import's bytecodes, never inside the loop; it reaps our children only (an
        import's own subprocesses are left to it), and interrupted system calls restart."""
        previous = signal.signal(signal.SIGCHLD, lambda _signum, _frame: self.reap_exited())
        signal.siginterrupt(signal.SIGCHLD, False)
        try:
            yield
        finally:
            signal.signal(signal.SIGCHLD, previous)

    def reap_exited(self) -> None:
        """Reap and report the children that have exited, without waiting for any."""
        pids = {pidfd: pid for pid, pidfd in self.children.items()}
        if pids:
            exited, _, _ = select.select(list(pids), [], [], 0)
            for pidfd in exited:
                self.reap(pids[pidfd])

    def finish_preload(self, preload: Preload) -> None:
        """Answer the preload (after checking that forking is still safe); start the next."""
        self.preload = None
        self.failed_imports.update(preload.failed)
        if preload.failed:
            print(f"fork server: not imported: {', '.join(preload.failed)}", file=sys.stderr)
        prime_file_hashes()  # Triton's, when the preload brought Triton
        self.safe_to_fork()
        self.send({"preloaded": preload.result(self.unsafe)})
        sys.stderr.flush()
        if self.preloads_asked:
            self.begin_preload()

    def fork(self, request: dict, output: int) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with warnings.catch_warnings():
            # Python warns on fork with threads; fork_hazards() found none of Python's, and
            # native pools (OpenBLAS, OpenMP) re-create theirs in the child.
            warnings.simplefilter("ignore", DeprecationWarning)
            freeze_survivors()  # a child's collections then leave the pages it shares alone
            pid = os.fork()
        if pid == 0:
            self.become_child(request, output)  # never returns
        pidfd = os.pidfd_open(pid)
        self.children[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        return pid

    def become_child(self, request: dict, output: int) -> None:
        code = 1
        try:
            os.setsid()
            die_with_parent(int(request.get("death_signal", signal.SIGTERM)))()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            self.control.close()
            for pidfd in self.children.values():
                os.close(pidfd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(output, 1)
            os.dup2(output, 2)
            os.close(output)
            os.chdir(request.get("cwd") or os.getcwd())
            adopt_environment(request["env"])
            args = list(request["args"])
            sys.argv = [sys.argv[0], *args]
            code = run_child(args)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def reap(self, pid: int) -> None:
        pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            self.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def close(self) -> None:
        """The fleet hung up: wait a little for the children it stopped, then leave."""
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self.children and time.monotonic() < deadline:
            for key, _ in self.selector.select(max(0.0, deadline - time.monotonic())):
                if key.fileobj is not self.control:
                    self.reap(key.data)
        self.selector.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minifal.runner.fork_server")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--imports", help="the record of modules to import before forking")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    data_dir = envs.DATA_DIR.get()
    if data_dir is not None:
        # What a runner does before the App's imports (HF_HOME's default, read at import by
        # huggingface_hub), done before the imports it will inherit.
        activate_data_dir(data_dir)
    # torch.cuda.is_available() asked at import time initializes the CUDA driver, which a
    # child of fork cannot use; NVML answers it without (torch reads this variable). Children
    # get their own environment.
    export_to_process({NVML_CUDA_CHECK: "1"})
    # The fleet's server side is loaded in every case: its imports are every runner's.
    names = ["minifal.runner.__main__", *(read_record(Path(args.imports)) if args.imports else [])]
    started = time.monotonic()
    imported, failed = preload(names)
    primed = prime_file_hashes()
    if failed:  # the fork server's log (fork-server.log in the run dir; <app>-fork-server.log)
        print(f"fork server: not imported: {', '.join(failed)}", file=sys.stderr, flush=True)
    hazards = fork_hazards()
    server = ForkServer(control, Path(args.imports) if args.imports else None, failed)
    server.send(
        {
            "ready": {
                "imported": imported,
                "failed": len(failed),
                "seconds": round(time.monotonic() - started, 3),
                "primed": primed,
                "hazards": hazards,
            }
        }
    )
    if not hazards:
        server.serve()
    # An import's thread (not a daemon, maybe; a preload's too, found or not) must not keep this
    # process alive: it leaves without joining threads.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
