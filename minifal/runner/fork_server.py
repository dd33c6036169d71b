"""``python -m minifal.runner.fork_server``: a fleet's runners, forked from one process that has
already imported what they import.

Why: most of a warm runner's start is Python work under one GIL, the App's imports (torch,
diffusers, transformers) and those of its compiled graphs (Inductor, and the custom ops and
dispatch rules they register), paid again by every runner that starts. The fork server pays
them once per fleet: it imports the runner's server and every module the App's last ready
runner had imported (``import_record.py``), then forks one child per runner, which starts at
``python -m minifal.runner``'s ``main()`` with those modules in place.

Forking is safe only from a process with one Python thread that has not touched the GPU (the
CUDA driver does not survive a fork). After its imports the server checks both; when either
fails it says so in its ready message and the fleet starts runners with plain ``exec`` instead.

The fleet talks to it over a ``SOCK_SEQPACKET`` unix socket (``--control-fd``), one JSON
message per packet:

- server -> fleet: ``{"ready": {...}}`` once; ``{"started": ID, "pid": P}`` or
  ``{"failed": ID, "error": E}`` per start; ``{"exited": P, "code": C}`` (negative: the signal)
  when a child exits.
- fleet -> server: ``{"start": ID, "args": [...], "env": {...}, "cwd": D, "death_signal": S}``,
  with the child's stdout and stderr attached as a file descriptor (``SCM_RIGHTS``).

Each child gets its own session, the fleet's death signal (sent when this server dies), the
environment it was sent and the output descriptor. When the fleet closes the socket the server
waits for its children (``CLOSE_WAIT_SECONDS``, they were stopped first), then exits.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

from minifal.compiled import torch_internals
from minifal.host import envs
from minifal.host.collector import freeze_survivors
from minifal.host.data_dir import activate_data_dir
from minifal.host.parent_death import die_with_parent
from minifal.runner.import_record import read_record
from minifal.runner_contract import adopt_environment, export_to_process

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CUDA_DRIVER = "libcuda.so.1"
NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
CUDA_ERROR_NOT_INITIALIZED = 3
CLOSE_WAIT_SECONDS = 5.0
"""How long the server waits for its children after the fleet hangs up (they get the fleet's
death signal when it exits)."""


def preload(names: list[str]) -> tuple[int, list[str]]:
    """Import ``names``; the number imported and those that failed (skipped: the runner will
    import what it needs itself)."""
    failed = []
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):
            failed.append(name)
    return len(names) - len(failed), failed


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


def fork_hazards() -> list[str]:
    """Why forking this process now would be unsafe; empty when it is safe."""
    hazards = []
    current = threading.current_thread()
    others = [thread.name for thread in threading.enumerate() if thread is not current]
    if others:
        hazards.append(f"Python threads running: {', '.join(others)}")
    if cuda_driver_initialized():
        hazards.append("the CUDA driver was initialized by an import")
    elif torch_cuda_poisoned():
        hazards.append("torch would refuse CUDA in a child (an import asked torch.cuda)")
    return hazards


def cuda_driver_initialized() -> bool:
    """Whether ``cuInit`` ran here. The driver library loaded is harmless (``RTLD_NOLOAD``
    finds it without loading it); asked for the device count before ``cuInit`` it answers
    CUDA_ERROR_NOT_INITIALIZED, and initializes nothing."""
    try:
        driver = ctypes.CDLL(CUDA_DRIVER, mode=os.RTLD_NOLOAD)
    except OSError:
        return False  # not loaded
    count = ctypes.c_int(0)
    return driver.cuDeviceGetCount(ctypes.byref(count)) != CUDA_ERROR_NOT_INITIALIZED


def torch_cuda_poisoned() -> bool:
    """Whether a child forked now would find torch's CUDA refused ("Cannot re-initialize CUDA
    in forked subprocess"): asked of a probe child, since only a child can tell."""
    if "torch" not in sys.modules:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os._exit(1 if torch_internals.cuda_in_bad_fork() else 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) != 0


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
    """The server's loop: start children on request, report their exits."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, int] = {}  # pid -> its pidfd
        self.selector.register(control, selectors.EVENT_READ)

    def send(self, message: dict) -> None:
        self.control.sendall(json.dumps(message).encode())

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    if not self.receive():
                        self.close()
                        return
                else:
                    self.reap(key.data)

    def receive(self) -> bool:
        """Handle one message from the fleet; False once it has hung up."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self.control, MAX_MESSAGE_BYTES, 1)
        except ConnectionError:
            return False
        if not data:
            return False
        request = json.loads(data)
        if not fds:
            self.send({"failed": request.get("start"), "error": "no output descriptor"})
            return True
        try:
            pid = self.fork(request, fds[0])
        except OSError as error:
            self.send({"failed": request.get("start"), "error": str(error)})
        else:
            self.send({"started": request["start"], "pid": pid})
        finally:
            os.close(fds[0])
        return True

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
    if failed:  # the fork server's log (the run dir's fork-server.log)
        print(f"fork server: not imported: {', '.join(failed)}", file=sys.stderr, flush=True)
    hazards = fork_hazards()
    server = ForkServer(control)
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
    if hazards:
        # An import's thread (not a daemon, maybe) must not keep this process alive.
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
