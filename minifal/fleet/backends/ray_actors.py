"""The Ray backend: each runner is a Ray actor's child process, on whichever node Ray places it.

``minifal run APP --ray [ADDRESS]`` connects the gateway to a Ray cluster (``auto``:
``RAY_ADDRESS`` or a cluster running on this machine). For each runner start the backend
creates one ``RunnerHost`` actor that asks for the App's resources (``num_gpus`` GPUs, else one
CPU) with Ray's SPREAD strategy, so runners spread across nodes. On its node the actor starts
the same runner process as the local backend (``LocalRunnerBackend``: command line,
environment, log file, bytecode cache), listening on the node's address, and reports where
it is: the gateway then forwards to ``http://<node ip>:<port>`` as to any runner.

A runner's request log lines (``runner/log_lines.py``) reach the gateway through its actor: the
actor keeps them (at most ``ACTOR_LOG_BACKLOG``, oldest dropped first) and the gateway pulls
them in batches (``RunnerHost.request_logs``, a call that waits for lines, as long polling).

A runner's process dies with its actor (SIGKILL on parent death), and its actor with the
gateway (Ray's ownership). An actor that dies, or whose node leaves the cluster, is a crash:
its exit code is ``EXIT_NODE_LOST`` and the supervisor restarts it after the back-off, on a
node Ray still has. Suspension stays local: runners on Ray are stopped when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections import deque
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError

from minifal.fleet.backends.base import RequestLogSink, RunnerLaunch, RunnerRevision
from minifal.fleet.backends.local import LocalRunnerBackend, LocalRunnerProcess
from minifal.host.data_dir import leave_marker, shared_dir_problem
from minifal.runner.log_lines import LogEntry
from minifal.runner_contract import EXIT_NODE_LOST

logger = logging.getLogger("minifal.fleet")

ACTOR_LOG_BACKLOG = 10_000
"""Request log lines an actor holds for the gateway before it drops the oldest."""
LOG_PULL_WAIT_SECONDS = 5.0
"""How long one pull of request log lines waits on the actor for a line."""
AUTO_ADDRESS = "auto"
NAMESPACE = "minifal"


@dataclass(frozen=True)
class RunnerResources:
    """What one runner's actor asks Ray for."""

    num_cpus: float
    num_gpus: float

    @classmethod
    def for_app(cls, gpus_per_runner: int, cluster_gpus: float) -> RunnerResources:
        """The App's GPUs where the cluster has GPUs; else one CPU (as the local backend runs
        a GPU App on CPU on a machine without one)."""
        if gpus_per_runner > 0 and cluster_gpus > 0:
            return cls(num_cpus=1, num_gpus=gpus_per_runner)
        return cls(num_cpus=1, num_gpus=0)


@dataclass(frozen=True)
class Placement:
    """Where an actor started its runner, as it reports it to the gateway."""

    url: str
    host: str
    port: int
    pid: int
    node: str
    gpus: tuple[str, ...]
    """Its GPUs as its node numbers them (Ray chose them)."""
    data_dir_problem: str | None


@dataclass(frozen=True)
class RayCluster:
    """The Ray cluster ``--ray`` joined: what each runner asks for, how many fit."""

    address: str
    nodes: int
    resources: RunnerResources
    hard_cap: int

    def describe(self) -> str:
        what = f"{self.resources.num_gpus:g} GPU(s)" if self.resources.num_gpus else "1 CPU"
        return f"on Ray ({self.address}: {self.nodes} node(s), {what} per runner)"

    def summary(self) -> dict[str, object]:
        return {"address": self.address, "nodes": self.nodes, **dataclasses.asdict(self.resources)}


def join_cluster(address: str, gpus_per_runner: int, echo_output: bool = True) -> RayCluster:
    """Join the Ray cluster at ``address`` as its driver (raises ``ConnectionError`` when there
    is none): what each runner of an App with ``gpus_per_runner`` GPUs asks for, and how many
    such runners the cluster holds now (the scaler's cap)."""
    ray.init(
        address=address,
        namespace=NAMESPACE,
        log_to_driver=echo_output,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    totals = ray.cluster_resources()
    resources = RunnerResources.for_app(gpus_per_runner, totals.get("GPU", 0.0))
    if gpus_per_runner > 0 and not resources.num_gpus:
        logger.warning("the app wants a GPU but the Ray cluster has none: runners run on CPU")
    if resources.num_gpus:
        cap = int(totals.get("GPU", 0) // resources.num_gpus)
    else:
        cap = int(totals.get("CPU", 1) // resources.num_cpus)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return RayCluster(address, nodes, resources, max(1, cap))


class RunnerHost:
    """The actor that owns one runner process on its node (made remote by ``_actor_class``)."""

    def __init__(self) -> None:
        from minifal.host.log_format import configure_logging

        configure_logging()
        self.process: LocalRunnerProcess | None = None
        self._lines: deque[tuple[str, LogEntry]] = deque(maxlen=ACTOR_LOG_BACKLOG)
        self._line_came: asyncio.Event | None = None

    def _keep_line(self, runner_id: str, entry: LogEntry) -> None:
        self._lines.append((runner_id, entry))
        if self._line_came is not None:
            self._line_came.set()

    async def request_logs(self, wait: float) -> list[tuple[str, LogEntry]]:
        """The request log lines since the last call; waits up to ``wait`` s for one."""
        if not self._lines:
            self._line_came = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._line_came.wait(), wait)
        lines = list(self._lines)
        self._lines.clear()
        return lines

    async def start(
        self, launch: RunnerLaunch, runner_id: str, use_gpus: bool, marker: str
    ) -> Placement:
        context = ray.get_runtime_context()
        node_id = context.get_node_id()
        host = ray.util.get_node_ip_address()
        problem = shared_dir_problem(launch.data_dir, launch.run_id, marker)
        gpus = [str(gpu) for gpu in ray.get_gpu_ids()] if use_gpus else []
        backend = LocalRunnerBackend(
            dataclasses.replace(launch, use_gpus=bool(gpus)),
            host=host,
            node=node_id,
            parent_death_signal=signal.SIGKILL,
            unix_sockets=False,  # the gateway is on another machine: it comes over TCP
            on_request_log=self._keep_line,
        )
        self.process = await backend.start(runner_id, gpus)
        process = self.process
        return Placement(
            process.url, host, process.port, process.pid, node_id, tuple(gpus), problem
        )

    async def wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        return await self.process.wait_ready(timeout)

    async def answers(self, timeout: float) -> bool:
        assert self.process is not None
        return await self.process.answers(timeout)

    async def wait_exit(self) -> int:
        assert self.process is not None
        return await self.process.wait_exit()

    async def terminate(self) -> None:
        if self.process is not None:
            self.process.terminate()

    async def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


_remote_host: Any = None


def _actor_class() -> Any:
    global _remote_host
    if _remote_host is None:
        _remote_host = ray.remote(max_restarts=0, max_task_retries=0)(RunnerHost)
    return _remote_host


class RayRunnerBackend:
    def __init__(
        self,
        launch: RunnerLaunch,
        resources: RunnerResources,
        on_request_log: RequestLogSink | None = None,
    ) -> None:
        self.launch = launch
        self.resources = resources
        self.on_request_log = on_request_log
        self.marker = leave_marker(launch.data_dir, launch.run_id)
        self._warned_nodes: set[str] = set()

    async def start(
        self, runner_id: str, gpus: list[str], revision: RunnerRevision | None = None
    ) -> RayRunnerInstance:
        """An actor placed by Ray (SPREAD), then its runner process; ``gpus`` is unused: Ray
        gives the actor its GPUs on its node."""
        launch = self.launch if revision is None else revision.applied_to(self.launch)
        actor = (
            _actor_class()
            .options(
                num_cpus=self.resources.num_cpus,
                num_gpus=self.resources.num_gpus,
                scheduling_strategy="SPREAD",
            )
            .remote()
        )
        try:
            placement: Placement = await actor.start.remote(
                launch, runner_id, self.resources.num_gpus > 0, self.marker
            )
        except BaseException as exc:  # cancelled at shutdown, or the actor died placing it
            ray.kill(actor)
            if isinstance(exc, RayError):
                logger.error("[%s] could not start on Ray: %s", runner_id, exc)
                return RayRunnerInstance.failed(runner_id)
            raise
        if placement.data_dir_problem and placement.node not in self._warned_nodes:
            self._warned_nodes.add(placement.node)
            logger.warning(
                "[%s] node %s: %s", runner_id, placement.node, placement.data_dir_problem
            )
        logger.info(
            "[%s] started on Ray node %s (%s, pid %s%s)",
            runner_id,
            placement.node,
            placement.url,
            placement.pid,
            f", GPU {','.join(placement.gpus)}" if placement.gpus else "",
        )
        return RayRunnerInstance(runner_id, actor, placement, self.on_request_log)

    async def close(self) -> None:
        """Nothing to release: each runner's actor goes with its runner."""


class RayRunnerInstance:
    """One runner process on a Ray node, seen from the gateway through its actor."""

    unix_path = None
    """Reached over TCP only (``url``): a unix socket is the gateway's machine's."""

    def __init__(
        self,
        runner_id: str,
        actor: Any,
        placement: Placement | None,
        on_request_log: RequestLogSink | None = None,
    ) -> None:
        self.runner_id = runner_id
        self.actor = actor
        self.placement = placement
        self._calls: set[asyncio.Task[Any]] = set()
        self._exit = asyncio.create_task(self._watch_exit(), name=f"{runner_id}-ray-exit")
        self._pulling: asyncio.Task[None] | None = None
        if actor is not None and on_request_log is not None:
            self._pulling = asyncio.create_task(
                self._pull_logs(on_request_log), name=f"{runner_id}-logs"
            )
            self._exit.add_done_callback(lambda _: self._pulling and self._pulling.cancel())

    async def _pull_logs(self, sink: RequestLogSink) -> None:
        """The runner's request log lines from its actor, until it exits (cancelled then)."""
        while True:
            try:
                lines = await self.actor.request_logs.remote(LOG_PULL_WAIT_SECONDS)
            except RayError:
                return  # the actor is gone: its exit is _watch_exit's to report
            for runner_id, entry in lines:
                sink(runner_id, entry)

    @classmethod
    def failed(cls, runner_id: str) -> RayRunnerInstance:
        """An actor that died before its runner started: a crash like any other."""
        return cls(runner_id, None, None)

    @property
    def url(self) -> str:
        return self.placement.url if self.placement else ""

    @property
    def node(self) -> str:
        return self.placement.node if self.placement else "?"

    @property
    def pid(self) -> int | None:
        return self.placement.pid if self.placement else None

    @property
    def port(self) -> int | None:
        return self.placement.port if self.placement else None

    @property
    def exited(self) -> bool:
        return self._exit.done()

    async def _watch_exit(self) -> int:
        if self.actor is None:
            return EXIT_NODE_LOST
        try:
            return await self.actor.wait_exit.remote()
        except RayError as exc:
            logger.error("[%s] lost with its Ray actor: %s", self.runner_id, type(exc).__name__)
            return EXIT_NODE_LOST
        finally:
            ray.kill(self.actor)  # its resources go back to the cluster

    async def wait_ready(self, timeout: float) -> bool:
        if self.actor is None:
            return False
        ready = asyncio.ensure_future(self.actor.wait_ready.remote(timeout))
        done, _ = await asyncio.wait({ready, self._exit}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            return False
        try:
            return bool(ready.result())
        except RayError:
            return False

    async def answers(self, timeout: float) -> bool:
        if self.actor is None or self.exited:
            return False
        try:
            return await asyncio.wait_for(self.actor.answers.remote(timeout), timeout + 5.0)
        except (RayError, TimeoutError):
            return False

    async def wait_exit(self) -> int:
        return await asyncio.shield(self._exit)

    def _call(self, method: str) -> None:
        """Ask the actor to signal its runner; an actor already gone has nothing to stop."""
        if self.actor is None or self.exited:
            return

        async def call() -> None:
            with contextlib.suppress(RayError):
                await getattr(self.actor, method).remote()

        task = asyncio.create_task(call(), name=f"{self.runner_id}-{method}")
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def terminate(self) -> None:
        self._call("terminate")

    def kill(self) -> None:
        self._call("kill")
