"""The gateway's half of "offload before checkpoint": around the driver's checkpoint of an idle
runner, ask the runner itself to move what it can faster than the driver can.

Before the checkpoint, ``offload`` posts ``runner_contract.OFFLOAD_PATH``: the runner copies the
tensors its App keeps in arenas to pinned host memory, frees their GPU memory and releases
torch's cached blocks (``minifal.offload``), so the checkpoint moves only what is left. After
the driver's restore, ``restore`` posts ``RESTORE_PATH``: the arenas come back at their
addresses. Right before the checkpoint (after the sleep, or at once), ``release`` posts
``RELEASE_PATH``: the runner drops its CUDA graphs, cuBLAS workspaces and cached blocks; one that
cannot (an error, or no answer in time) is checkpointed as it is, the reason logged once. A
runner that cannot offload (it answers an error, or not in time) is checkpointed
whole, as without this, and the reason is logged once; ``restore`` is asked of every resumed
runner all the same (it does nothing where nothing was offloaded), so a runner whose offload
half happened is never served without its tensors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from minifal.fleet.runner import Runner
from minifal.fleet.runner_http import RunnerClient, RunnerConnectionError
from minifal.offload.suspension import Offloaded, Released
from minifal.runner_contract import OFFLOAD_PATH, RELEASE_PATH, RESTORE_PATH

logger = logging.getLogger("minifal.fleet")

OFFLOAD_TIMEOUT_SECONDS = 60.0
"""An offload's bound: the first one pins a host buffer as large as the arenas (seconds)."""
RESTORE_TIMEOUT_SECONDS = 60.0
RELEASE_TIMEOUT_SECONDS = 20.0
"""A release's bound: a synchronize, graphs destroyed, ``empty_cache`` (well under a second);
past it the checkpoint goes on without."""


GIB = 2**30


@dataclass(frozen=True)
class HeldMemory:
    """What a suspended runner holds in host memory, as the gateway measures it."""

    resident: int | None
    """Its whole resident memory (``VmRSS``) once checkpointed; None where unreadable."""
    pinned: int | None
    """Of it, the pinned copies of the tensors it offloaded itself (None: it offloaded none)."""
    checkpoint: int | None
    """What the driver's checkpoint added to its resident memory."""
    offload_s: float | None = None

    @classmethod
    def of(
        cls, resident: int | None, before: int | None, offloaded: Offloaded | None
    ) -> HeldMemory:
        """From its resident memory after the checkpoint and ``before`` it (after the offload)."""
        checkpoint = None if resident is None or before is None else max(0, resident - before)
        if offloaded is None or not offloaded.arenas:
            return cls(resident, None, checkpoint, offloaded and offloaded.seconds)
        return cls(resident, offloaded.host_bytes, checkpoint, offloaded.seconds)

    def details(self) -> dict[str, Any]:
        """For the runner's ``suspend`` event."""
        return {
            "rss": self.resident,
            "pinned_bytes": self.pinned,
            "checkpoint_bytes": self.checkpoint,
            "offload_s": self.offload_s,
        }

    def __str__(self) -> str:
        if self.resident is None:
            return "host memory held: ?"
        parts = [] if self.pinned is None else [f"{self.pinned / GIB:.2f} GiB pinned tensors"]
        if self.checkpoint is not None:
            parts.append(f"{self.checkpoint / GIB:.2f} GiB from the checkpoint")
        more = f" ({', '.join(parts)})" if parts else ""
        return f"host memory held: {self.resident / GIB:.1f} GiB{more}"


class OffloadError(RuntimeError):
    """The runner did not do what was asked; the message says what it answered."""


class RunnerOffload:
    """Posts the offload, release and restore steps to runners, through the gateway's runner
    client."""

    def __init__(
        self,
        client: RunnerClient,
        offload_timeout: float = OFFLOAD_TIMEOUT_SECONDS,
        restore_timeout: float = RESTORE_TIMEOUT_SECONDS,
        release_timeout: float = RELEASE_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client
        self.offload_timeout = offload_timeout
        self.restore_timeout = restore_timeout
        self.release_timeout = release_timeout
        self._said: set[tuple[str, str]] = set()

    async def offload(self, runner: Runner) -> Offloaded | None:
        """What the runner moved; None when it moved nothing (it cannot, or failed: logged
        once per reason), and the checkpoint takes its whole GPU state."""
        try:
            answer = await self._post(runner, OFFLOAD_PATH, self.offload_timeout)
        except (OffloadError, RunnerConnectionError, TimeoutError) as error:
            self._say_once(runner, "offload", error, "checkpointing its whole GPU state")
            return None
        return Offloaded.from_json(answer)

    async def release(self, runner: Runner) -> Released | None:
        """What the runner gave back before its checkpoint; None when it failed (logged once
        per reason), and the checkpoint takes it as it is."""
        try:
            answer = await self._post(runner, RELEASE_PATH, self.release_timeout)
        except (OffloadError, RunnerConnectionError, TimeoutError) as error:
            self._say_once(runner, "release", error, "checkpointing it with its CUDA graphs")
            return None
        return Released.from_json(answer)

    async def restore(self, runner: Runner) -> dict[str, Any]:
        """The runner's timings (for its ``resume`` event); raises ``OffloadError`` (or a
        connection error) when it cannot restore."""
        answer = await self._post(runner, RESTORE_PATH, self.restore_timeout)
        return {"copy_back": answer}

    def _say_once(self, runner: Runner, step: str, error: Exception, then: str) -> None:
        why = str(error) or type(error).__name__
        if (step, why) not in self._said:
            self._said.add((step, why))
            logger.warning(
                "[%s] %s before the checkpoint failed (%s): %s", runner.runner_id, step, why, then
            )

    async def _post(self, runner: Runner, path: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            response = await self.client.send(runner.address, "POST", path, (), b"")
            try:
                body = await response.read()
            finally:
                response.close()
        if response.status != 200:
            try:
                detail = json.loads(body).get("detail")
            except (ValueError, AttributeError):
                detail = body[:200].decode(errors="replace")
            raise OffloadError(f"{path} answered {response.status}: {detail}")
        return json.loads(body)
