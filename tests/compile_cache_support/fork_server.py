"""A fork server for the compile-cache tests: torch, Dynamo and Inductor imported once.

A child (``child.py``) spent about half of its CPU seconds importing torch, Dynamo and Inductor.
This process imports them once and forks one child per request, which runs ``child.py`` as
``__main__`` with its own environment, its own private cache dir and its own compile: separate
processes as before, whose imports are done (as minifal's fork server does for runners). Nothing
here compiles or reads a cache, so a fork starts from torch as freshly imported.

Start it with the children's torch settings in its environment (Inductor reads some of them at
import). Protocol, one JSON line each way: ``{"argv", "env", "out", "err"}`` (a list, a dict and
two file paths) on stdin, ``{"pid"}`` on stdout. A child ends its ``out`` file with
``EXIT <code>``; the kernel reaps it (the tests watch it through a pidfd).
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import threading
import traceback
from typing import Any

import torch  # the point of this process: the children start with it imported
import torch._dynamo
import torch._inductor.compile_fx  # noqa: F401  (imported for the children)


def run_child(request: dict[str, Any]) -> None:
    """In the forked child: run the script with the request's argv, environment and files."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the child waits for its own compilers
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        # what the interpreter's own exit does first (the private cache dir's removal included)
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, f"EXIT {code}\n".encode())
        os._exit(code)


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies: the kernel reaps the children
    print("READY", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()
