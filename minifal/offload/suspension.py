"""This process's arenas, and the two steps around a suspension's driver checkpoint.

An App opts in after loading its models, before anything captures their addresses (CUDA
graphs, compiled artifacts' warmup)::

    try:
        from minifal.offload.suspension import keep_addresses
    except ImportError:  # on fal
        keep_addresses = None
    if keep_addresses is not None:
        keep_addresses(pipeline.unet, pipeline.vae, pipeline.text_encoder)

The runner's ``/_minifal/offload`` (``prepare_for_checkpoint``) then moves those tensors to
pinned host memory and frees their GPU memory, and releases the caching allocator's free blocks
(for every App, arena or not), so that the driver's checkpoint moves only what is left (the
context, CUDA-graph pools, workspaces); ``/_minifal/restore`` (``restore_after_checkpoint``)
brings them back at the same addresses once the driver has restored the rest. Both are methods
of ``PROCESS_ARENAS``, the process's one ``ProcessArenas``.

Before a *late* checkpoint (the runner slept on its GPU first, its weights offloaded already),
or a checkpoint at once, ``/_minifal/release`` (``release_for_checkpoint``) drops the process's
CUDA graphs too, their private pools and the cuBLAS workspaces with them
(``minifal.compiled.cuda_graphs.release_cuda_graphs``): the checkpoint then carries less, and
the first call of each graphed signature after the resume runs as it is and captures again. A
runner that only sleeps keeps its graphs.

Where this cannot work (no GPU, no driver support, a failure while placing) ``keep_addresses``
leaves the modules as they are and says why, once; the suspension then checkpoints everything,
as without it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from minifal.compiled.background_work import GPU_GATE

if TYPE_CHECKING:
    import torch

    from minifal.offload.arena import DeviceMemory, TensorArena

logger = logging.getLogger("minifal.offload")

GATE_TIMEOUT_S = 20.0
"""How long an offload waits for a background GPU step in progress (then it fails, and the
gateway checkpoints the whole runner: the driver's lock waits for GPU work itself)."""


def _known_fields(record: type, answer: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``answer`` that are fields of the dataclass ``record`` (a newer runner may
    answer more)."""
    known = {field.name for field in fields(record)}
    return {key: value for key, value in answer.items() if key in known}


@dataclass(frozen=True)
class Offloaded:
    """What ``prepare_for_checkpoint`` did (the runner's answer to the gateway)."""

    arenas: int = 0
    device_bytes: int = 0
    """GPU memory the arenas gave back."""
    host_bytes: int = 0
    """Pinned host memory holding them (kept while the runner lives, from the first offload)."""
    cache_released_bytes: int = 0
    """Free blocks of torch's caching allocator given back (``empty_cache``)."""
    seconds: float = 0.0
    copy_s: float = 0.0
    host_buffer_s: float = 0.0
    gpu_used_bytes: int = 0
    """Memory in use on the runner's GPU once it offloaded (every process's: the driver's
    count); with ``gpu_total_bytes``, what decides whether it may sleep there (0: unknown)."""
    gpu_total_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, answer: dict[str, Any]) -> Offloaded:
        """The runner's answer as the gateway reads it (unknown keys ignored)."""
        return cls(**_known_fields(cls, answer))


@dataclass(frozen=True)
class Released:
    """What ``release_for_checkpoint`` did (the runner's answer to the gateway)."""

    graphs: int = 0
    """CUDA graphs dropped (captured again at their next call)."""
    reserved_before_bytes: int = 0
    """torch's caching allocator's reserved memory before, on this process's GPUs."""
    reserved_after_bytes: int = 0
    gpu_used_before_bytes: int = 0
    """Memory in use on those GPUs before (the driver's count, every process's; 0: unknown);
    it also sees what torch does not allocate (graph executables)."""
    gpu_used_after_bytes: int = 0
    seconds: float = 0.0

    @property
    def released_bytes(self) -> int:
        """What this process's allocator gave back to the driver."""
        return max(0, self.reserved_before_bytes - self.reserved_after_bytes)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "released_bytes": self.released_bytes}

    @classmethod
    def from_json(cls, answer: dict[str, Any]) -> Released:
        """The runner's answer as the gateway reads it (unknown keys ignored)."""
        return cls(**_known_fields(cls, answer))


class ProcessArenas:
    """The arenas of this process; one offload or restore at a time."""

    def __init__(self) -> None:
        self.arenas: list[TensorArena] = []
        self._lock = threading.Lock()
        self._said: set[str] = set()

    def keep_addresses(
        self,
        *modules: torch.nn.Module,
        memory: DeviceMemory | None = None,
        release_addresses: bool = False,
        pin_host: bool = True,
    ) -> TensorArena | None:
        """Put the GPU parameters and buffers of ``modules`` in a new arena (see the module
        docstring); None, with the reason logged once, where it cannot be done. ``memory``:
        where the arena lives (None: the CUDA driver's, on the modules' GPU, its host copy
        pinned unless ``pin_host`` is False); ``release_addresses``: see ``TensorArena``."""
        import torch

        from minifal.offload.arena import TensorArena, module_tensors

        start = time.perf_counter()
        try:
            if memory is None:
                memory, why = _cuda_memory(module_tensors(modules), pin_host)
                if memory is None:
                    self._say_once(why)
                    return None
            arena = TensorArena.place(modules, memory, release_addresses)
        except Exception as error:
            self._say_once(f"{type(error).__name__}: {error}", logging.WARNING)
            return None
        if arena is None:
            self._say_once(f"the modules have no tensor on {memory.device}")
            return None
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # the tensors' old copies
        with self._lock:
            self.arenas.append(arena)
        logger.info(
            "offload: %d tensors (%.2f GiB) in an arena at fixed addresses (%.2f s)",
            arena.tensor_count,
            arena.size / 2**30,
            time.perf_counter() - start,
        )
        return arena

    def prepare_for_checkpoint(self) -> Offloaded:
        """Pause background GPU work, offload every arena, then release the caching
        allocator's free blocks. The work stays paused until ``restore_after_checkpoint``."""
        start = time.perf_counter()
        if not GPU_GATE.close(GATE_TIMEOUT_S):
            raise TimeoutError(
                f"background GPU work (a compiled module's check) still runs after "
                f"{GATE_TIMEOUT_S:g} s"
            )
        with self._lock:
            copy_s = host_buffer_s = 0.0
            for arena in self.arenas:
                timings = arena.offload()
                copy_s += timings.copy_s
                host_buffer_s += timings.host_buffer_s
            released = _release_cached_blocks()
            used, total = _gpu_memory_in_use({arena.memory.device for arena in self.arenas})
            return Offloaded(
                arenas=len(self.arenas),
                device_bytes=sum(arena.size for arena in self.arenas),
                host_bytes=sum(arena.host_bytes for arena in self.arenas),
                cache_released_bytes=released,
                seconds=time.perf_counter() - start,
                copy_s=copy_s,
                host_buffer_s=host_buffer_s,
                gpu_used_bytes=used,
                gpu_total_bytes=total,
            )

    def release_for_checkpoint(self) -> Released:
        """Drop every CUDA graph, the cuBLAS workspaces and the cached blocks (see the module
        docstring), with background GPU work paused (it stays so until
        ``restore_after_checkpoint``, as after an offload). Never imports torch: a process that
        never initialized CUDA has nothing to release."""
        start = time.perf_counter()
        if not GPU_GATE.close(GATE_TIMEOUT_S):
            raise TimeoutError(
                f"background GPU work (a compiled module's check) still runs after "
                f"{GATE_TIMEOUT_S:g} s"
            )
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return Released(seconds=time.perf_counter() - start)
        from minifal.compiled.cuda_graphs import release_cuda_graphs

        with self._lock:
            devices = _devices_in_use({arena.memory.device for arena in self.arenas})
            reserved_before = sum(torch.cuda.memory_reserved(device) for device in devices)
            used_before, _ = _gpu_memory_in_use(devices)
            graphs = release_cuda_graphs()  # and the cached blocks, graphs or none
            used_after, _ = _gpu_memory_in_use(devices)
            released = Released(
                graphs=graphs,
                reserved_before_bytes=reserved_before,
                reserved_after_bytes=sum(torch.cuda.memory_reserved(d) for d in devices),
                gpu_used_before_bytes=used_before,
                gpu_used_after_bytes=used_after,
                seconds=time.perf_counter() - start,
            )
        logger.info(
            "offload: %d CUDA graphs dropped, %.2f GiB given back before the checkpoint (%.2f s)",
            released.graphs,
            released.released_bytes / 2**30,
            released.seconds,
        )
        return released

    def restore_after_checkpoint(self) -> dict[str, Any]:
        """Restore every offloaded arena (nothing to do when none is: safe to repeat), then
        let background GPU work go on."""
        start = time.perf_counter()
        with self._lock:
            copy_s = memory_s = 0.0
            for arena in self.arenas:
                timings = arena.restore()
                copy_s += timings.copy_s
                memory_s += timings.memory_s
        GPU_GATE.open()
        return {"seconds": time.perf_counter() - start, "copy_s": copy_s, "memory_s": memory_s}

    def _say_once(self, why: str, level: int = logging.INFO) -> None:
        if why not in self._said:
            self._said.add(why)
            logger.log(
                level, "offload: tensors stay where they are (%s); a suspension moves all", why
            )


def _cuda_memory(
    tensors: Iterable[torch.Tensor], pin_host: bool
) -> tuple[DeviceMemory | None, str]:
    """The CUDA driver's memory on the GPU of the first of ``tensors`` there, or why not."""
    import torch

    device = next((t.device for t in tensors if t.device.type == "cuda"), None)
    if device is None:
        return None, "the modules have no tensor on a GPU"
    from minifal.offload.cuda_vmm import load_device_memory

    index = torch.cuda.current_device() if device.index is None else device.index
    torch.cuda.synchronize(index)  # torch's context exists on that device
    return load_device_memory(index, pin_host=pin_host)


def _release_cached_blocks() -> int:
    """``torch.cuda.empty_cache()`` where this process uses CUDA; the bytes it gave back.
    Never imports torch (an App without it has nothing to release)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return 0
    devices = range(torch.cuda.device_count())
    before = sum(torch.cuda.memory_reserved(device) for device in devices)
    torch.cuda.empty_cache()  # every device's
    return before - sum(torch.cuda.memory_reserved(device) for device in devices)


def _devices_in_use(arena_devices: set[torch.device]) -> set[torch.device]:
    """The GPUs this process's allocator holds memory on, and its arenas': where it has a
    context (asking of another GPU would make one there). Only where torch is imported."""
    torch = sys.modules["torch"]
    held = {
        torch.device("cuda", index)
        for index in range(torch.cuda.device_count())
        if torch.cuda.memory_reserved(index) > 0
    }
    return held | {device for device in arena_devices if device.type == "cuda"}


def _gpu_memory_in_use(devices: set[torch.device]) -> tuple[int, int]:
    """Bytes in use and in all on the GPUs of ``devices`` (the arenas', where this process
    has a context already: asking of another GPU would make one there), the driver's count of
    every process's; (0, 0) for none. Never imports torch."""
    torch = sys.modules.get("torch")
    gpus = [device for device in devices if device.type == "cuda"]
    if torch is None or not gpus:
        return 0, 0
    used = total = 0
    for device in gpus:
        free, size = torch.cuda.mem_get_info(device)
        used, total = used + size - free, total + size
    return used, total


PROCESS_ARENAS = ProcessArenas()
"""The one set of a process: what its App placed, what the runner's routes offload."""
keep_addresses = PROCESS_ARENAS.keep_addresses
