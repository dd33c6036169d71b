"""One block of device memory holding modules' parameters and buffers, whose physical memory
can leave and come back while its addresses stay.

``TensorArena.place(modules, memory)`` reserves a range of device addresses, maps physical
memory there, copies every storage of the modules' device tensors into it (one region each,
aligned as the caching allocator aligns its blocks) and re-points each parameter and buffer at
its region (``tensor.data = view``: the same Python objects, so CUDA-graph wrappers and
precompiled modules that look weights up by identity see no change). The old copies go back to
the caching allocator.

``offload()`` copies the whole arena to a host buffer in one copy, then unmaps and releases the
physical memory; the address range stays reserved. ``restore()`` maps new physical memory at
the same addresses and copies back: every pointer baked in since (CUDA graphs, compiled
kernels' arguments) is valid again. Nothing may touch the modules' tensors in between.

The arena does its device work through a ``DeviceMemory`` (``cuda_vmm.CudaDeviceMemory`` on a
GPU); the layout and the protocol here are device-agnostic, so the unit tests run them on CPU
over fake memory at real host addresses.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

REGION_ALIGNMENT = 512
"""Bytes each region starts at a multiple of: the caching allocator's block rounding, so kernels
that assume aligned weights (vectorised loads, Inductor's alignment guard) see what they saw."""


class DeviceMemory(Protocol):
    """Where an arena's bytes live: a range of device addresses, physical memory mapped there,
    tensors over them, and a host buffer to hold them meanwhile."""

    @property
    def device(self) -> torch.device:
        """The device whose tensors it holds."""
        ...

    @property
    def granularity(self) -> int:
        """Sizes and addresses of mappings are multiples of this."""
        ...

    def reserve(self, size: int, address: int = 0) -> int:
        """Reserve ``size`` bytes of addresses (at ``address`` if free: a hint); the start."""
        ...

    def free(self, address: int, size: int) -> None: ...

    def create(self, size: int) -> int:
        """Physical memory of ``size`` bytes; its handle."""
        ...

    def map(self, address: int, size: int, handle: int) -> None:
        """Put ``handle`` at ``address`` and make it readable and writable."""
        ...

    def unmap(self, address: int, size: int) -> None: ...

    def release(self, handle: int) -> None: ...

    def tensor_at(self, address: int, size: int) -> torch.Tensor:
        """A uint8 tensor over ``size`` mapped bytes at ``address`` (no copy, no ownership)."""
        ...

    def host_buffer(self, size: int) -> torch.Tensor:
        """A uint8 host tensor the device copies to and from at full speed (pinned)."""
        ...

    def free_host_buffer(self, buffer: torch.Tensor) -> None: ...

    def synchronize(self) -> None:
        """Wait for the device's queued work (before the arena's bytes are read or unmapped)."""
        ...


class ArenaError(RuntimeError):
    """An arena could not be placed, offloaded or restored; the message says which step."""


class ArenaState(enum.StrEnum):
    LIVE = "live"
    """Its physical memory is mapped: the tensors are usable."""
    OFFLOADED = "offloaded"
    """Its bytes are in the host buffer; the addresses are reserved (or remembered) only."""
    CLOSED = "closed"


@dataclass(frozen=True)
class ArenaLayout:
    """Where each storage goes: ``offsets[i]`` for ``sizes[i]`` bytes; ``size`` in all."""

    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    size: int


def plan_layout(
    sizes: Iterable[int], granularity: int, alignment: int = REGION_ALIGNMENT
) -> ArenaLayout:
    """Storages back to back, each at a multiple of ``alignment``; the whole a multiple of
    ``granularity`` (what the driver maps)."""
    offsets, end = [], 0
    sizes = tuple(sizes)
    for size in sizes:
        offsets.append(end)
        end += -(-size // alignment) * alignment
    total = max(granularity, -(-end // granularity) * granularity)
    return ArenaLayout(sizes, tuple(offsets), total)


@dataclass(frozen=True)
class Timings:
    copy_s: float = 0.0
    """Copying the arena (to the host buffer, or back)."""
    memory_s: float = 0.0
    """Unmapping and releasing, or creating and mapping, the physical memory."""
    host_buffer_s: float = 0.0
    """Allocating and pinning the host buffer (the first offload only)."""


def module_tensors(modules: Iterable[torch.nn.Module]) -> Iterator[torch.Tensor]:
    """Every parameter and buffer of ``modules`` once (shared ones once)."""
    seen: set[int] = set()
    for module in modules:
        for owner in module.modules():
            for table in (owner._parameters, owner._buffers):
                for tensor in table.values():
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))
                        yield tensor


def _storage_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor over the whole storage of ``tensor`` (no copy)."""
    storage = tensor.untyped_storage()
    return torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage)


class TensorArena:
    """The device tensors of some modules, in one block that can go to host memory and back."""

    def __init__(
        self,
        memory: DeviceMemory,
        layout: ArenaLayout,
        address: int,
        handle: int,
        tensor_count: int,
        release_addresses: bool = False,
    ) -> None:
        self.memory = memory
        self.layout = layout
        self.address = address
        self.tensor_count = tensor_count
        self.release_addresses = release_addresses
        """On offload, free the address range too (and reserve it again at the same start on
        restore, failing if it is taken): for drivers whose checkpoint cannot hold a reserved,
        unmapped range."""
        self.state = ArenaState.LIVE
        self._handle: int | None = handle
        self._device = memory.tensor_at(address, layout.size)
        self._host: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Device bytes the arena maps while live (and the host buffer's size)."""
        return self.layout.size

    @property
    def host_bytes(self) -> int:
        """Host memory the arena holds (its buffer, kept from the first offload on)."""
        return 0 if self._host is None else self._host.numel()

    @classmethod
    def place(
        cls,
        modules: Iterable[torch.nn.Module],
        memory: DeviceMemory,
        release_addresses: bool = False,
    ) -> TensorArena | None:
        """Move the tensors of ``modules`` that live on ``memory.device`` into a new arena; None
        when they have none there. All or nothing: a failure leaves every tensor where it was."""
        tensors = [t for t in module_tensors(modules) if t.device == memory.device]
        storages: dict[int, int] = {}  # storage address -> its index in the layout
        sources: list[torch.Tensor] = []
        for tensor in tensors:
            key = tensor.untyped_storage().data_ptr()
            if key not in storages:
                storages[key] = len(sources)
                sources.append(_storage_bytes(tensor))
        if not sources:
            return None
        layout = plan_layout((s.numel() for s in sources), memory.granularity)
        address = memory.reserve(layout.size)
        handle = None
        try:
            handle = memory.create(layout.size)
            memory.map(address, layout.size, handle)
            arena = cls(memory, layout, address, handle, len(tensors), release_addresses)
            with torch.no_grad():
                for source, offset in zip(sources, layout.offsets, strict=True):
                    arena._device[offset : offset + source.numel()].copy_(source)
                memory.synchronize()
        except BaseException:
            if handle is not None:
                _quietly(memory.unmap, address, layout.size)
                _quietly(memory.release, handle)
            _quietly(memory.free, address, layout.size)
            raise
        storage = arena._device.untyped_storage()
        with torch.inference_mode(False), torch.no_grad():
            for tensor in tensors:
                offset = layout.offsets[storages[tensor.untyped_storage().data_ptr()]]
                moved = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
                moved.set_(
                    storage,
                    (arena._device.storage_offset() + offset) // tensor.element_size()
                    + tensor.storage_offset(),
                    tensor.shape,
                    tensor.stride(),
                )
                tensor.data = moved
        return arena

    def offload(self) -> Timings:
        """Copy the arena to host memory, then give its physical memory back (no-op when
        offloaded). A failure before the unmap leaves it live."""
        if self.state is not ArenaState.LIVE:
            return Timings()
        start = time.perf_counter()
        if self._host is None:
            self._host = self.memory.host_buffer(self.size)
        pinned = time.perf_counter()
        self.memory.synchronize()
        self._host.copy_(self._device)
        self.memory.synchronize()
        copied = time.perf_counter()
        self.memory.unmap(self.address, self.size)
        self.state = ArenaState.OFFLOADED
        handle, self._handle = self._handle, None
        assert handle is not None
        self.memory.release(handle)
        if self.release_addresses:
            self.memory.free(self.address, self.size)
        return Timings(copied - pinned, time.perf_counter() - copied, pinned - start)

    def restore(self) -> Timings:
        """Map physical memory at the same addresses again and copy the arena back (no-op when
        live). Raises ``ArenaError`` when the addresses or the memory cannot be had; then the
        arena stays offloaded and its tensors must not be used."""
        if self.state is not ArenaState.OFFLOADED:
            return Timings()
        assert self._host is not None
        start = time.perf_counter()
        if self.release_addresses:
            self._reserve_again()
        handle = self.memory.create(self.size)
        try:
            self.memory.map(self.address, self.size, handle)
        except BaseException:
            _quietly(self.memory.release, handle)
            raise
        self._handle = handle
        self.state = ArenaState.LIVE
        mapped = time.perf_counter()
        self._device.copy_(self._host)
        self.memory.synchronize()
        return Timings(time.perf_counter() - mapped, mapped - start)

    def _reserve_again(self) -> None:
        address = self.memory.reserve(self.size, self.address)
        if address != self.address:
            self.memory.free(address, self.size)
            raise ArenaError(
                f"the arena's addresses {self.address:#x} (+{self.size}) were taken meanwhile"
            )

    def close(self) -> None:
        """Give everything back; the modules' tensors are unusable after this."""
        if self.state is ArenaState.CLOSED:
            return
        if self.state is ArenaState.LIVE and self._handle is not None:
            self.memory.synchronize()
            _quietly(self.memory.unmap, self.address, self.size)
            _quietly(self.memory.release, self._handle)
        if not (self.state is ArenaState.OFFLOADED and self.release_addresses):
            _quietly(self.memory.free, self.address, self.size)
        if self._host is not None:
            self.memory.free_host_buffer(self._host)
            self._host = None
        self._handle = None
        self.state = ArenaState.CLOSED


def _quietly(step: Callable[..., object], *args: int) -> None:
    """A clean-up step after a failure: its own error would hide the first one."""
    with contextlib.suppress(Exception):
        step(*args)
