"""The fleet's half of the bytecode warmup: start it once, on a cold cache, and own it.

``LocalRunnerBackend`` asks before each runner's start. The first time the data dir's bytecode
cache is in use and empty (a cold start on an image without bytecode,
``minifal.compiled.bytecode_cache``), it starts ``python -m minifal.compiled.bytecode_warmup``
over the App's ``requirements`` beside that runner, at a low priority, in a session of its own so
that stopping it stops its pool. Its one line of results goes to the gateway's log; the backend's
``close()`` stops it where it still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from minifal.host.parent_death import die_with_parent

logger = logging.getLogger("minifal.fleet")

STOP_TIMEOUT_SECONDS = 5.0


def cache_is_cold(cache_dir: Path | None) -> bool:
    """Whether ``cache_dir`` is a bytecode cache in use that holds nothing yet."""
    if cache_dir is None:
        return False
    try:
        return not any(cache_dir.iterdir())
    except OSError:
        return False


class BytecodeWarmer:
    """At most one warmup per backend (per App): ``maybe_start`` before a runner's start; the
    first runner's start decides (a cache found warm, or not used, stays so)."""

    def __init__(self, requirements: tuple[str, ...], log_file: Path) -> None:
        self.requirements = requirements
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None
        self._decided = False
        self._report: asyncio.Task[None] | None = None

    async def maybe_start(self, cache_dir: Path | None, env: dict[str, str]) -> bool:
        """At the first call: start the warmup when ``cache_dir`` (the runners' bytecode cache,
        None: not used) is cold; whether it started."""
        if self._decided:
            return False
        self._decided = True
        if not self.requirements or not cache_is_cold(cache_dir):
            return False
        assert cache_dir is not None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "minifal.compiled.bytecode_warmup",
                "--cache",
                str(cache_dir),
                *self.requirements,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # its pool with it: close() stops the whole group
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        logger.info(
            "bytecode cache %s is empty: compiling the packages of %s beside the first runner "
            "(pid %d)",
            cache_dir,
            ", ".join(self.requirements),
            self.process.pid,
        )
        self._report = asyncio.create_task(self._log_result(), name="bytecode-warmup")
        return True

    async def _log_result(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        output = await self.process.stdout.read()
        code = await self.process.wait()
        try:
            result = json.loads(output.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            if code != 0 and code != -signal.SIGTERM:
                logger.warning("bytecode warmup failed (exit %d; %s)", code, self.log_file)
            return
        logger.info(
            "bytecode warmup: %d files compiled in %.1f s (%d there already, %d failed)",
            result["compiled"],
            result["seconds"],
            result["skipped"],
            result["failed"],
        )

    async def close(self) -> None:
        """Stop it where it still runs (its whole session), and wait for it."""
        process, report = self.process, self._report
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if report is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await report
