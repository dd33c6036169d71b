"""What a runner process and the fleet that starts it agree on, spelled once.

How a runner is started (its command line and environment), where it answers readiness, the
headers that carry a request's identity, the defaults both sides fall back on, and what its exit
codes mean. Both sides import this module and it imports neither, so a runner never pulls in
the fleet and the gateway never pulls in the runner's server (uvicorn, the user's App).
"""

from __future__ import annotations

import sys
from pathlib import Path

# -- the environment a runner gets (and the App sees) --------------------------------------------

ENV_DATA_DIR = "MINIFAL_DATA_DIR"
"""The shared data dir ("/data" on fal)."""
ENV_RUN_ID = "MINIFAL_RUN_ID"
"""The fleet run this runner belongs to; set only when minifal serves the App."""
ENV_RUNNER_ID = "MINIFAL_RUNNER_ID"
ENV_EVENTS_FILE = "MINIFAL_EVENTS_FILE"
"""Where the runner appends its startup events (``minifal.startup.events``)."""
ENV_PUBLIC_URL = "MINIFAL_PUBLIC_URL"
"""Where clients reach the App (file URLs are built from it)."""
ENV_NODE = "MINIFAL_NODE"
"""Which machine the runner runs on: ``local``, or its Ray node id (``minifal run --ray``)."""
ENV_STARTUP_DEADLINE = "MINIFAL_STARTUP_DEADLINE"
"""``time.time()`` after which ``startup_timeout`` stops the runner (the compiled cache's
waits end before it)."""

# -- defaults --------------------------------------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
LOCAL_NODE = "local"
"""The node of a runner on the gateway's own machine."""
DEFAULT_PORT = 8080
DEFAULT_PUBLIC_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/"
RUNNER_KEEP_ALIVE_SECONDS = 120
"""How long a runner keeps an idle connection from the gateway open (the gateway reuses one for
less: ``runner_http.IDLE_SECONDS``)."""
UNIX_SOCKET_PATH_MAX = 100
"""A unix socket's path must fit ``sockaddr_un`` (108 bytes on Linux); longer: TCP only."""
DEFAULT_GRACE_SECONDS = 60.0
"""``termination_grace_period_seconds`` when the App sets none: how long a stopping runner may
drain its requests (and the gateway its queue) before it is killed."""

# -- HTTP ------------------------------------------------------------------------------------------

READY_PATH = "/health"
"""Answers 200 once ``setup()`` has run (the port opens after it)."""
REQUEST_ID_HEADER = "x-fal-request-id"
ENDPOINT_HEADER = "x-fal-endpoint"
"""The endpoint the caller asked for (a health check names the App's health endpoint)."""
LOG_LINES_HEADER = "x-minifal-log-lines"
"""On a runner's answer: how many log lines of the request it wrote before answering, so that
the gateway can wait for them (bounded) before it calls the request complete; never passed on."""
REQUEST_LOG_MARKER = "\x1fminifal-log "
"""Starts a line of a runner's output that belongs to a request (``runner/log_lines.py``); the
unit separator, which no ``splitlines`` takes for a line's end (``\x1e`` would be)."""

# -- exit codes ------------------------------------------------------------------------------------

EXIT_SETUP_FAILED = 3
EXIT_STARTUP_TIMEOUT = 4
EXIT_DISTRIBUTED_WORKER_CRASHED = 5
"""A worker process of the App's ``DistributedRunner`` died (``minifal.distributed``)."""
EXIT_NODE_LOST = 6
"""Not the runner's own: the fleet's word for a runner whose node left the Ray cluster (its
process, its actor and its exit code went with it)."""


def exit_reason(code: int) -> str:
    """What an exit code means, as the supervisor's log and ``minifal runners`` say it."""
    if code == EXIT_SETUP_FAILED:
        return "setup() failed (traceback in the runner's log)"
    if code == EXIT_STARTUP_TIMEOUT:
        return "startup_timeout exceeded in setup()"
    if code == EXIT_DISTRIBUTED_WORKER_CRASHED:
        return "a distributed worker died (its error is in the runner's log)"
    if code == EXIT_NODE_LOST:
        return "its node was lost (Ray)"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exited with code {code}"


# -- starting one ----------------------------------------------------------------------------------


def runner_socket_path(run_dir: Path, runner_id: str, port: int) -> Path | None:
    """The unix socket a runner on the gateway's machine listens on as well as its port (one
    per instance: the port names it), or None where the path would be too long for one."""
    path = run_dir / f"{runner_id}-{port}.sock"
    return path if len(str(path).encode()) <= UNIX_SOCKET_PATH_MAX else None


def runner_command(arguments: list[str]) -> list[str]:
    """``python -m minifal.runner ARGUMENTS`` (``minifal/runner/__main__.py``), as exec'd."""
    return [sys.executable, "-m", "minifal.runner", *arguments]


def runner_arguments(
    app_reference: str,
    port: int,
    data_dir: Path,
    host: str = DEFAULT_HOST,
    unix_socket: Path | None = None,
) -> list[str]:
    """``APP --host H --port P --data-dir D [--unix-socket S] --fleet``: the arguments of
    ``python -m minifal.runner``, exec'd or forked; ``host``: the address the gateway reaches it
    at; ``--fleet``: no access log (the gateway serves callers)."""
    arguments = [
        app_reference,
        "--host",
        host,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--fleet",
    ]
    if unix_socket is not None:
        arguments += ["--unix-socket", str(unix_socket)]
    return arguments


def runner_environment(
    *,
    data_dir: Path,
    run_id: str,
    runner_id: str,
    events_file: Path,
    public_url: str,
    gpus: list[str] | None,
    node: str = LOCAL_NODE,
) -> dict[str, str]:
    """The variables a fleet sets for one runner, on top of its own environment.

    ``gpus`` None leaves the GPUs as they are (a CPU fleet); a list pins the runner to those
    GPUs, numbered as ``nvidia-smi`` numbers them (what ``--gpus`` and ``get_gpu_type()`` use),
    so that inside the runner its first GPU is ``cuda:0``.
    """
    env = {
        "PYTHONUNBUFFERED": "1",
        ENV_DATA_DIR: str(data_dir),
        ENV_RUN_ID: run_id,
        ENV_PUBLIC_URL: public_url,
        ENV_RUNNER_ID: runner_id,
        ENV_EVENTS_FILE: str(events_file),
        ENV_NODE: node,
    }
    if gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env
