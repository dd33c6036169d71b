"""The steps of suspending one idle runner and of bringing it back, for the supervisor.

A suspension first asks the runner to move what it can itself (``Offloader``: its App's weights,
kept in arenas at fixed addresses, to pinned host memory; ``runner_offload.py``). Then:

- **asleep** (``sleep_seconds`` > 0, the runner offloaded something, and its GPU is no more
  than ``SLEEP_MAX_GPU_SHARE`` full once it did): nothing more at once.
  The runner keeps its CUDA context, its CUDA-graph pools and whatever its App did not put in
  an arena on its GPU; a resume is the runner's own copy back (no driver call), about the time
  its weights take to cross the link. After ``sleep_seconds`` still suspended, the driver's
  checkpoint (``Suspender``) moves the rest to host memory too, and the GPU is empty.
- **checkpointed** (no sleep, or nothing offloaded): the driver's checkpoint at once, as it
  always was; a resume is the driver's restore, then the runner's copy back.

Right before either checkpoint, at once or after the sleep, the runner is asked to release
(``Offloader.release``): it drops its CUDA graphs, whose private pools hold every activation of
the captured calls, its cuBLAS workspaces and torch's cached blocks, so that the checkpoint
carries less: with them, a checkpointed SD-Turbo-sized process held 2.12x its live tensor bytes
in host memory (BENCHMARKS.md section 17, one process, weights offloaded); issue 30 asks for at
most 1.3x. The price: the first call of each graphed signature after the resume runs as it is
and captures again, on top of the driver's restore (about 1 s) that such a resume pays anyway.
Both checkpoint paths release, the one at once too: its resume pays the driver's restore all
the same. A runner that only sleeps keeps its graphs: its resume stays the copy back (about
0.15 s for SD-Turbo). A release that fails or does not answer in time is logged once per reason
and the checkpoint goes on: the runner is as correct, only larger in host memory.

A failed step raises; the supervisor treats it as a crash. One step at a time per runner: a
resume that comes while the late checkpoint runs waits for it, then restores from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.runner_offload import HeldMemory
from minifal.offload.suspension import Offloaded, Released
from minifal.startup.events import record_for

logger = logging.getLogger("minifal.fleet")

SUSPEND_LOCK_TIMEOUT_SECONDS = 10.0
"""How long a checkpoint waits for the runner's GPU work to finish before it gives up."""
DEFAULT_SLEEP_SECONDS = 60.0
"""How long a suspended runner stays asleep (its context on its GPU) before its checkpoint."""
SLEEP_MAX_GPU_SHARE = 0.25
"""A runner sleeps only where its GPU, once it offloaded, is at most this full (what it left
there and whatever else sleeps there): what it leaves must not starve the next runner granted
that GPU. SD-Turbo on an H100 leaves 4.1 GiB of 80 (5%); an App whose large buffers (a KV
cache) are not in arenas is checkpointed at once instead."""


def may_sleep(offloaded: Offloaded | None, sleep_seconds: float) -> bool:
    """Whether a runner that answered ``offloaded`` sleeps before its checkpoint (pure)."""
    return (
        sleep_seconds > 0
        and offloaded is not None
        and offloaded.arenas > 0
        and offloaded.gpu_total_bytes > 0
        and offloaded.gpu_used_bytes <= SLEEP_MAX_GPU_SHARE * offloaded.gpu_total_bytes
    )


class Suspender(Protocol):
    """Moves a process's GPU state to its host memory and back (blocking calls)."""

    def suspend(self, pid: int, lock_timeout_s: float) -> object: ...

    def resume(self, pid: int) -> object: ...


class Offloader(Protocol):
    """The runner's own half of a suspension, around the checkpoint (``RunnerOffload``)."""

    async def offload(self, runner: Runner) -> Offloaded | None: ...

    async def release(self, runner: Runner) -> Released | None: ...

    async def restore(self, runner: Runner) -> dict[str, Any]: ...


def resident_bytes(pid: int) -> int | None:
    """A process's resident memory (``VmRSS``), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class SuspensionFailed(RuntimeError):
    """A step failed; the message says which and why."""


class RunnerSuspension:
    """Suspends and resumes runners; ``later(coroutine, name)`` runs a late checkpoint (the
    supervisor's owned tasks), ``failed(runner, reason)`` ends a runner whose late checkpoint
    failed (a crash)."""

    def __init__(
        self,
        suspender: Suspender,
        offloader: Offloader | None,
        sleep_seconds: float,
        later: Callable[[Awaitable[None], str], None],
        failed: Callable[[Runner, str], Awaitable[None]],
    ) -> None:
        self.suspender = suspender
        self.offloader = offloader
        self.sleep_seconds = sleep_seconds
        self._later = later
        self._failed = failed
        self._asleep: dict[str, int] = {}
        """runner id -> pid of the runners asleep: suspended, not checkpointed (yet)."""
        self._steps: dict[str, asyncio.Lock] = {}

    async def suspend(self, runner: Runner, pid: int) -> None:
        """SUSPENDING -> SUSPENDED; raises ``SuspensionFailed``."""
        async with self._step(runner):
            self._asleep.pop(runner.runner_id, None)
            start = time.time()
            offloaded = None if self.offloader is None else await self.offloader.offload(runner)
            sleep = may_sleep(offloaded, self.sleep_seconds)
            before = released = None  # asleep: no checkpoint, nothing it adds
            if not sleep:
                released = await self._release(runner)
                before = resident_bytes(pid)
                await self._checkpoint(pid, "suspend")
            end = time.time()
            memory = resident_bytes(pid)
            held = HeldMemory.of(memory, before, offloaded)
            runner.suspended(
                end,
                end - start,
                memory,
                held.pinned,
                held.checkpoint,
                asleep=sleep,
                **_release_figures(released),
            )
            details = {**held.details(), "asleep": sleep, "release": _as_json(released)}
            record_for(runner.events_file, runner.runner_id, pid, "suspend", start, end, **details)
            if sleep:
                self._asleep[runner.runner_id] = pid
                logger.info(
                    "[%s] asleep in %.2f s (%s; its context and CUDA graphs stay on its GPU, "
                    "checkpointed after %g s)",
                    runner.runner_id,
                    end - start,
                    held,
                    self.sleep_seconds,
                )
                later = self._checkpoint_later(runner, pid, runner.suspensions.suspends)
                self._later(later, f"{runner.runner_id}-checkpoint")
            else:
                logger.info(
                    "[%s] suspended in %.2f s (%s; %s)",
                    runner.runner_id,
                    end - start,
                    held,
                    _release_note(released),
                )

    async def resume(self, runner: Runner, pid: int) -> dict[str, Any]:
        """The driver's restore where it was checkpointed, then the runner's copy back; what
        the runner answered (for the ``resume`` event). Raises ``SuspensionFailed``."""
        async with self._step(runner):
            if self._asleep.pop(runner.runner_id, None) != pid:
                try:
                    await asyncio.to_thread(self.suspender.resume, pid)
                except Exception as exc:
                    raise SuspensionFailed(f"resume failed: {exc}") from exc
            if self.offloader is None:
                return {}
            try:
                return await self.offloader.restore(runner)
            except Exception as exc:
                raise SuspensionFailed(f"resume failed: {exc}") from exc

    async def _checkpoint_later(self, runner: Runner, pid: int, suspension: int) -> None:
        """After the sleep, the driver's checkpoint of the rest, if still the same suspension."""
        await asyncio.sleep(self.sleep_seconds)
        async with self._step(runner):
            if (
                self._asleep.get(runner.runner_id) != pid
                or runner.state != RunnerState.SUSPENDED
                or runner.suspensions.suspends != suspension
            ):
                return  # resumed, stopped or suspended again meanwhile
            start = time.time()
            released = await self._release(runner)
            before = resident_bytes(pid)
            try:
                await self._checkpoint(pid, "checkpoint after the sleep")
            except SuspensionFailed as exc:
                self._asleep.pop(runner.runner_id, None)
                await self._failed(runner, str(exc))
                return
            del self._asleep[runner.runner_id]
            end = time.time()
            memory = resident_bytes(pid)
            checkpoint = HeldMemory.of(memory, before, None).checkpoint
            runner.checkpointed(memory, checkpoint, **_release_figures(released))
            record_for(
                runner.events_file,
                runner.runner_id,
                pid,
                "checkpoint",
                start,
                end,
                rss=memory,
                checkpoint_bytes=checkpoint,
                release=_as_json(released),
            )
            logger.info(
                "[%s] checkpointed after %g s asleep, in %.2f s (host memory held: %s; %s)",
                runner.runner_id,
                self.sleep_seconds,
                end - start,
                "?" if memory is None else f"{memory / 2**30:.1f} GiB",
                _release_note(released),
            )

    async def _release(self, runner: Runner) -> Released | None:
        """The runner's release before a checkpoint; None without an offloader or when it
        failed (``RunnerOffload`` said why)."""
        return None if self.offloader is None else await self.offloader.release(runner)

    async def _checkpoint(self, pid: int, what: str) -> None:
        try:
            await asyncio.to_thread(self.suspender.suspend, pid, SUSPEND_LOCK_TIMEOUT_SECONDS)
        except Exception as exc:
            raise SuspensionFailed(f"{what} failed: {exc}") from exc

    def _step(self, runner: Runner) -> asyncio.Lock:
        return self._steps.setdefault(runner.runner_id, asyncio.Lock())


def _release_figures(released: Released | None) -> dict[str, int | None]:
    """For ``Runner.suspended`` and ``Runner.checkpointed``."""
    if released is None:
        return {"graphs_released": None, "released_bytes": None}
    return {"graphs_released": released.graphs, "released_bytes": released.released_bytes}


def _as_json(released: Released | None) -> dict[str, Any] | None:
    return None if released is None else released.as_json()


def _release_note(released: Released | None) -> str:
    if released is None:
        return "CUDA graphs kept"
    return (
        f"{released.graphs} CUDA graphs dropped, {released.released_bytes / 2**30:.2f} GiB "
        "given back before the checkpoint"
    )
