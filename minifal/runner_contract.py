"""What a runner process and the fleet that starts it agree on, spelled once.

How a runner is started (its command line and environment), where it answers readiness, the
headers that carry a request's identity, the defaults both sides fall back on, and what its exit
codes mean. Both sides import this module and it imports neither (only ``minifal.host.envs``,
where the variables are declared), so a runner never pulls in the fleet and the gateway never
pulls in the runner's server (uvicorn, the user's App).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from minifal.host import envs

# -- the environment a runner gets (and the App sees): declared in minifal.host.envs --------------
# DATA_DIR, RUN_ID, RUNNER_ID, EVENTS_FILE, PUBLIC_URL, NODE, REVISION, APP_SOURCE,
# STARTUP_DEADLINE, MAX_BODY_SIZE:
# ``runner_environment`` below builds them for a child; ``export_to_process`` for this process.


# -- defaults --------------------------------------------------------------------------------------

DEFAULT_HOST = envs.HOST.default
LOCAL_NODE = envs.NODE.default
"""The node of a runner on the gateway's own machine."""
DEFAULT_PORT = envs.PORT.default
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

READY_PATH = "/_minifal/ready"
"""Answers 200 once ``setup()`` has run (the port opens after it) and the App's declared
``HealthCheck`` endpoint, if it has one, answers 2xx (``minifal.runner.readiness``). Not the
App's ``GET /health``: that is its ``health()``, which may fail without the runner being unready."""
OFFLOAD_PATH = "/_minifal/offload"
"""POST, before the gateway checkpoints an idle runner: it moves the tensors its App keeps in
arenas to host memory and releases torch's cached GPU blocks (``minifal.offload``); answers
200 with what it moved (JSON), 500 with ``detail`` when it could not (then nothing is lost)."""
RELEASE_PATH = "/_minifal/release"
"""POST, while suspended, right before the driver's checkpoint: the runner drops its CUDA graphs
(captured again at their next call), cuBLAS workspaces and cached GPU blocks, so that the
checkpoint carries less; answers 200 with what it gave back (JSON), 500 with ``detail`` when it
could not (then the checkpoint takes it as it is: nothing is lost)."""
RESTORE_PATH = "/_minifal/restore"
"""POST, after the driver restored it: the arenas come back at their addresses; 200, or 500
with ``detail`` (the runner cannot serve). Safe to repeat: nothing offloaded, nothing done."""
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
    max_body_bytes: int | None = None,
) -> dict[str, str]:
    """The variables a fleet sets for one runner, on top of its own environment.

    ``gpus`` None leaves the GPUs as they are (a CPU fleet); a list pins the runner to those
    GPUs, numbered as ``nvidia-smi`` numbers them (what ``--gpus`` and ``get_gpu_type()`` use),
    so that inside the runner its first GPU is ``cuda:0``. ``max_body_bytes``: the gateway's
    body limit, which its runners answer with too.
    """
    env = {
        "PYTHONUNBUFFERED": "1",
        envs.DATA_DIR.name: str(data_dir),
        envs.RUN_ID.name: run_id,
        envs.PUBLIC_URL.name: public_url,
        envs.RUNNER_ID.name: runner_id,
        envs.EVENTS_FILE.name: str(events_file),
        envs.NODE.name: node,
    }
    if max_body_bytes is not None:
        env[envs.MAX_BODY_SIZE.name] = str(max_body_bytes)
    if gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def revision_environment(revision_id: str, source: str | None) -> dict[str, str]:
    """The variables that tell a fleet's runner which revision of its app it serves, and the
    copy of the app file to import (None: the file as it is when the runner starts)."""
    env = {envs.REVISION.name: revision_id}
    if source is not None:
        env[envs.APP_SOURCE.name] = source
    return env


def data_dir_environment(
    data_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The data dir, and fal's ``HF_HOME`` default under it (huggingface_hub reads it at
    import) unless ``environ`` (this process's by default) sets its own."""
    environ = os.environ if environ is None else environ
    hf_home = environ.get("HF_HOME") or str(data_dir / ".cache" / "huggingface")
    return {envs.DATA_DIR.name: str(data_dir), "HF_HOME": hf_home}


def export_to_process(variables: Mapping[str, str]) -> None:
    """Make ``variables`` this process's environment: what ``envs`` answers here, and what its
    children inherit. The one place minifal writes ``os.environ``, for two kinds of values:

    - minifal's own (built above): a runner's identity, data dir and deadline are process-wide
      facts that fal's API (``File``, ``synchronized_inductor_cache``...) and the runner's
      workers (distributed ranks, compile workers) read without being handed them;
    - other libraries' that they read only from the environment (Inductor's and Triton's
      cache dirs, torch's NVML check, torch.distributed's rank variables, OpenMP's threads):
      each caller says which library reads it.
    """
    for name, value in variables.items():
        os.environ[name] = value


def adopt_environment(variables: Mapping[str, str]) -> None:
    """Replace this process's environment with ``variables``: a runner forked from the fork
    server takes the one its fleet built for it (``runner_environment``), nothing inherited."""
    os.environ.clear()
    export_to_process(variables)
