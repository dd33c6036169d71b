"""Compile captured graphs in worker processes, several at once.

Inductor compiles one graph at a time per process, and most of it is single-threaded Python
(lowering, scheduling, code generation): the SD-Turbo UNet takes ~40 s a shape on an H200 host
while 15 of its 16 cores wait. A runner that must compile several graphs (two UNet shapes, two
VAE decoder shapes) hands each captured graph to its own worker process instead: the call that
was captured is answered eagerly, the runner goes on capturing the next one, and at the end of
the ``precompiled_modules`` block it waits for the workers, loads their artifacts, checks each
against eager on the call it was captured from, and publishes them as an inline compile would.

A worker gets the graph (pickled, without Dynamo's metadata), the inputs' shapes, strides,
dtypes and devices, and its module's Inductor options; it compiles with uninitialized tensors of
that layout (the graph's weights are inputs, so their values do not matter to the code) and
saves the artifact. Those tensors are on the inputs' device: a CUDA graph's worker has the
runner's GPU (it inherits ``CUDA_VISIBLE_DEVICES``, so ``cuda:0`` is the same card) and holds a
CUDA context there. Inductor's autotuning runs in the worker, on that GPU: the Triton kernels'
configurations (``standalone_compile`` tunes at compile time) and, with ``max_autotune``, its
convolution and matmul templates against cuDNN and cuBLAS, each timed on inputs of its own
(random, not the call's). Serving while compiling, the runner's eager requests share the GPU
with those timings, and so do the other workers' own: a choice may be made on a busy card.
A worker shares the runner's private cache dir (C++ kernels built for a CPU graph land where
they are published), its Triton compile threads are the host's cores divided among the
workers, and it dies with the runner. ``MINIFAL_PRECOMPILED_WORKERS``: how many run at once;
``0`` compiles inline.

A worker process starts before it has a job (``WorkerProcess``; ``standby_workers.py`` keeps a
few ready from the block's start on), so that its imports (torch, Inductor: 10-12 s on an H100
host) overlap the runner's own work. Its protocol, on its standard input:

- it starts as ``python -c WORKER_CODE``, with ``TORCHINDUCTOR_COMPILE_THREADS`` and the
  runner's cache dirs in its environment, its output in its log file;
- it imports what a compile needs, then reads one line: a JSON object with ``job`` (the job
  file), ``artifact`` (where the artifact goes) and ``handed_at`` (the runner's ``time.time()``
  when it wrote the line). A job may be written while it still imports: the pipe holds it;
- end of file instead of a line (the runner needs no more workers, or is gone): it exits with 0
  and says nothing;
- with a job, it logs how long after ``handed_at`` the compile started, compiles, saves the
  artifact and logs ``compiled in N s`` last; it exits with 0, or with a traceback on failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from minifal.compiled.cache.torch_source_key import prime_torch_key
from minifal.compiled.precompiled.artifact_files import (
    UNPACKED_SUFFIX,
    load_artifact,
    save_unpacked,
    unpacked_form_pays,
)
from minifal.compiled.precompiled.graph_compile import CapturedCall, NotPrecompilable
from minifal.compiled.torch_internals import (
    import_compiler,
    save_compiled_artifact,
    standalone_compile,
)
from minifal.host import envs
from minifal.host.collector import pauses_timed
from minifal.host.parent_death import die_with_parent

logger = logging.getLogger("minifal.precompiled")

MIN_CORES_FOR_WORKERS = 8  # below this, parallel compiles only fight over the cores
MAX_DEFAULT_WORKERS = 4
LOG_TAIL_CHARS = 2000
STOP_TIMEOUT_S = 10.0
STARTED_PREFIX = "compile started"
WORKER_CODE = (
    "import sys; from minifal.compiled.precompiled.compile_workers import main; sys.exit(main())"
)


def configured_workers() -> int:
    """``$MINIFAL_PRECOMPILED_WORKERS``, else 0 below 8 cores and one per 4 cores up to 4."""
    try:
        configured = envs.PRECOMPILED_WORKERS.get()
    except ValueError as exc:
        logger.warning("%s: compiling inline", exc)
        return 0
    if configured is not None:
        return configured
    cores = os.cpu_count() or 1
    return 0 if cores < MIN_CORES_FOR_WORKERS else min(MAX_DEFAULT_WORKERS, cores // 4)


class WorkerProcess:
    """A compile worker process that imports, then waits for its job on its standard input.

    Its job's files are named when it starts (its output goes to ``log_path`` from then on)."""

    def __init__(self, job_dir: Path, threads: int) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        self.job_path = job_dir / f"{name}.job"
        self.artifact_path = job_dir / f"{name}.bin"
        self.log_path = job_dir / f"{name}.log"
        environ = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(max(1, threads))}
        with self.log_path.open("wb") as log:
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", WORKER_CODE],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environ,
                    preexec_fn=die_with_parent(signal.SIGKILL),
                )
            except BaseException:
                self.log_path.unlink(missing_ok=True)
                raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def hand_job(self) -> None:
        """Write the job's line and close the pipe. A worker that has exited already (it failed
        in its imports) gets nothing: its exit code and its log say why."""
        line = {
            "job": str(self.job_path),
            "artifact": str(self.artifact_path),
            "handed_at": time.time(),
        }
        self._close_input(json.dumps(line) + "\n")

    def stop(self) -> None:
        """End a worker that has no job (end of file, then a kill if it still imports); its
        log goes."""
        self._close_input("")
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self.log_path.unlink(missing_ok=True)

    def _close_input(self, text: str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            if text:
                stdin.write(text.encode())
            stdin.close()


class WorkerCompile:
    """One captured graph being compiled by a worker process; :meth:`result` collects it."""

    def __init__(self, captured: CapturedCall, worker: WorkerProcess) -> None:
        self.job_path = worker.job_path
        self.artifact_path = worker.artifact_path
        self.log_path = worker.log_path
        try:
            _save_job(captured, self.job_path)
        except BaseException:
            worker.stop()
            self.job_path.unlink(missing_ok=True)
            raise
        self._process = worker.process
        worker.hand_job()
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def wait(self, deadline: float) -> None:
        """Wait for the worker, at most until ``deadline`` (``time.time()``); kill it then."""
        try:
            self._process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise NotPrecompilable("the compile worker did not finish by the deadline") from exc

    def result(self, deadline: float) -> tuple[Any, float]:
        """The loaded artifact and the worker's seconds; :class:`NotPrecompilable` if it failed.

        The artifact's file stays at ``artifact_path`` for the caller to adopt or
        :meth:`discard`."""
        self.wait(deadline)
        seconds = self._compile_seconds() or time.monotonic() - self.started
        try:
            if self._process.returncode != 0:
                raise NotPrecompilable(
                    f"the compile worker exited with {self._process.returncode}: {self._log_tail()}"
                )
            for line in self._log_tail().splitlines():
                if line.startswith(STARTED_PREFIX):  # how long the job waited for its imports
                    logger.info("compile worker %s: %s", self.job_path.stem, line)
            logger.info("compile worker %s: %s", self.job_path.stem, self._last_line())
            try:
                return load_artifact(self.artifact_path), seconds
            except Exception as exc:
                raise NotPrecompilable(f"the worker's artifact does not load ({exc})") from exc
        finally:
            self.job_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.running:
            self._process.kill()
            self._process.wait(timeout=10)
        self.discard()

    def discard(self) -> None:
        """Remove the job's files (the artifact too, unless it was adopted)."""
        for path in (self.job_path, self.artifact_path, self.log_path):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.artifact_path.with_suffix(UNPACKED_SUFFIX), ignore_errors=True)

    def _compile_seconds(self) -> float | None:
        """The worker's own Inductor seconds, from its last line (``compiled in N s``)."""
        match = re.search(r"compiled in ([0-9.]+) s", self._log_tail())
        return float(match.group(1)) if match else None

    def _last_line(self) -> str:
        lines = self._log_tail().splitlines()
        return lines[-1] if lines else ""

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip()
        except OSError:
            return "(no log)"


class _NodeRef:
    """A node's name, standing for the node in another node's arguments."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _save_job(captured: CapturedCall, path: Path) -> None:
    """The graph as a list of nodes (an FX graph does not pickle: its node list recurses, and
    a GraphModule pickles as code that is traced again into another graph), its constants, the
    inputs' layouts and the grad mode. Of Dynamo's node metadata only the tensor layouts
    travel: Inductor's cache checks a method call's receiver by its ``example_value``. The
    module's Inductor options travel as they are (JSON values, checked when it was wrapped)."""
    from torch.fx.node import map_arg

    layouts = []
    for value in captured.example_inputs:
        if not isinstance(value, torch.Tensor):
            raise NotPrecompilable(f"a graph input is a {type(value).__name__}, not a tensor")
        device, grad = str(value.device), value.requires_grad
        layouts.append((tuple(value.shape), value.stride(), value.dtype, device, grad))
    gm = captured.gm
    nodes = []
    for node in gm.graph.nodes:
        example = node.meta.get("example_value")
        layout = _layout(example) if isinstance(example, torch.Tensor) else None
        args = map_arg(node.args, lambda n: _NodeRef(n.name))
        kwargs = map_arg(node.kwargs, lambda n: _NodeRef(n.name))
        nodes.append((node.op, node.name, node.target, args, kwargs, layout))
    constants = {n.target: getattr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    job = {"nodes": nodes, "constants": constants, "inputs": layouts}
    job["inductor_options"] = captured.inductor_options
    try:
        torch.save({**job, "grad": captured.grad_enabled}, path)
    except Exception as exc:
        raise NotPrecompilable(f"the graph cannot be handed to a worker ({exc})") from exc


def _layout(tensor: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...], torch.dtype]:
    return tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype


def _graph_module(job: dict[str, Any]) -> torch.fx.GraphModule:
    from torch.fx.node import map_aggregate

    graph = torch.fx.Graph()
    made: dict[str, torch.fx.Node] = {}

    def resolve(value: Any) -> Any:
        return made[value.name] if isinstance(value, _NodeRef) else value

    for op, name, target, args, kwargs, layout in job["nodes"]:
        node = graph.create_node(
            op, target, map_aggregate(args, resolve), map_aggregate(kwargs, resolve), name=name
        )
        if layout is not None:
            shape, stride, dtype = layout
            node.meta["example_value"] = torch.empty_strided(
                shape, stride, dtype=dtype, device="meta"
            )
        made[name] = node
    root = torch.nn.Module()
    for name, value in job["constants"].items():
        setattr(root, name, value)
    return torch.fx.GraphModule(root, graph)


def job_inputs(job: dict[str, Any]) -> list[torch.Tensor]:
    """Uninitialized tensors of the job's input layouts, on their devices (a CUDA graph's
    worker creates its CUDA context here)."""
    return [
        torch.empty_strided(shape, stride, dtype=dtype, device=device).requires_grad_(grad)
        for shape, stride, dtype, device, grad in job["inputs"]
    ]


def compile_job(job: dict[str, Any], inputs: list[torch.Tensor]) -> Any:
    """The job's graph compiled for ``inputs`` with its module's Inductor options, in the grad
    mode it was captured in."""
    with torch.set_grad_enabled(job["grad"]):
        gm = _graph_module(job)
        return standalone_compile(gm, inputs, job["inductor_options"])


def main() -> int:
    """The worker process (``WORKER_CODE``): import, read the job's line from standard input
    (end of file: exit quietly), compile the job, save the artifact."""
    started = time.perf_counter()
    import_compiler()  # before the job: this is what a standby worker does while it waits
    imported = time.perf_counter()
    line = sys.stdin.readline()
    if not line:
        return 0
    # Inductor's torch_key from the data dir, or computed (the compile would) and stored there
    # for the runners that load what this worker compiles. Not while the worker waits: that
    # is while its runner loads and warms up, which a hash of torch's sources would slow down
    # where cores are few.
    prime_torch_key()
    request = json.loads(line)
    job_path, artifact_path = request["job"], request["artifact"]
    job = torch.load(job_path, weights_only=False)
    inputs = job_inputs(job)
    print(
        f"{STARTED_PREFIX} {time.time() - request['handed_at']:.1f} s after the job was handed "
        f"(the imports took {imported - started:.1f} s)",
        flush=True,
    )
    start = time.perf_counter()
    with pauses_timed() as pauses:
        artifact = compile_job(job, inputs)
    temp = f"{artifact_path}.tmp"
    save_compiled_artifact(artifact, temp, "binary")
    os.replace(temp, artifact_path)
    # saved here, in the worker: saving it points the process's Inductor cache dir elsewhere
    if unpacked_form_pays([str(spec[3]) for spec in job["inputs"]]):
        save_unpacked(artifact, Path(artifact_path).with_suffix(UNPACKED_SUFFIX))
    seconds, collector = time.perf_counter() - start, pauses.seconds
    print(f"compiled in {seconds:.1f} s (garbage collection {collector:.1f} s)", flush=True)
    return 0
