"""Where runners live: the interface the supervisor starts, watches and stops them through.

The supervisor decides *when* (scaling, health, back-off, retirement); a backend knows *how*:
``LocalRunnerBackend`` (``local_runners.py``) runs each runner as a child process of the
gateway; another backend (Ray actors on a cluster) plugs in by implementing these two
protocols. A backend never changes a runner's state: the supervisor does, from what the
instance reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from minifal.runner.log_lines import LogEntry
from minifal.runner_contract import revision_environment

RequestLogSink = Callable[[str, LogEntry], None]
"""Takes a request's log line from runner ``runner_id`` (``fleet/request_logs.RequestLogs.add``)."""


@dataclass(frozen=True)
class RunnerLaunch:
    """What every runner of one fleet shares, whichever backend starts it."""

    app_reference: str
    data_dir: Path
    run_id: str
    run_dir: Path
    public_url: str
    use_gpus: bool
    echo_output: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int | None = None
    """The gateway's body limit, which its runners answer with too (None: theirs)."""
    requirements: tuple[str, ...] = ()
    """The App's ``requirements``: the packages a cold bytecode cache is filled with."""


@dataclass(frozen=True)
class RunnerRevision:
    """Which revision of the app a runner serves (``fleet/revisions.py``): the app it loads,
    the copy of its file it imports, and the id it reports."""

    revision_id: str
    app_reference: str
    source: str | None = None
    """The revision's copy of the app file (None: the file as it is when the runner starts)."""

    def applied_to(self, launch: RunnerLaunch) -> RunnerLaunch:
        env = {**launch.extra_env, **revision_environment(self.revision_id, self.source)}
        return replace(launch, app_reference=self.app_reference, extra_env=env)


class RunnerInstance(Protocol):
    """One started runner (a process, an actor) until it exits; a restart is a new instance."""

    @property
    def url(self) -> str:
        """Where the gateway reaches it over HTTP (``http://host:port``)."""
        ...

    @property
    def unix_path(self) -> str | None:
        """A unix socket it also listens on, which the gateway uses when it has one (a runner
        on the gateway's machine); None for none."""
        ...

    @property
    def node(self) -> str:
        """Which machine it runs on (``local`` for the gateway's own)."""
        ...

    @property
    def pid(self) -> int | None: ...

    @property
    def port(self) -> int | None: ...

    @property
    def exited(self) -> bool: ...

    async def wait_ready(self, timeout: float) -> bool:
        """True once it answers its ready probe (after ``setup()``); False if it exits first or
        ``timeout`` seconds from its start pass."""
        ...

    async def answers(self, timeout: float) -> bool:
        """True when its ready probe answers now (after a resume), within ``timeout``."""
        ...

    async def wait_exit(self) -> int:
        """Its exit code (negative: killed by that signal); may be awaited by several tasks."""
        ...

    def terminate(self) -> None:
        """Ask it to stop: it drains its requests and runs ``teardown()`` (SIGTERM)."""
        ...

    def kill(self) -> None:
        """Stop it now (SIGKILL)."""
        ...


class RunnerBackend(Protocol):
    async def start(
        self, runner_id: str, gpus: list[str], revision: RunnerRevision | None = None
    ) -> RunnerInstance:
        """Start runner ``runner_id`` (again, after an exit) on ``gpus``, serving ``revision``
        (None: the fleet's app as launched); returns once it runs, not once it is ready."""
        ...

    async def close(self) -> None:
        """Release what the backend holds, once every runner it started has exited."""
        ...
