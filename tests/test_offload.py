"""Offload before a checkpoint (``minifal.offload``): the arena's layout, its placement of
modules' tensors, the byte-exact round trip through host memory at the same addresses, the
fallbacks, and the protocol between the gateway (``fleet/runner_offload.py``) and the runner's
``/_minifal/offload``, ``/_minifal/release`` and ``/_minifal/restore`` routes, in process.

This machine has no GPU: ``FakeDeviceMemory`` stands in for the CUDA driver's virtual memory
calls. Its "device addresses" are host memory it owns, so the arena's tensors are real CPU
tensors at fixed addresses, and its unmap scribbles over them as if the physical memory were
gone: what comes back after a restore was copied back, not left there. The arena's logic is the
same on a GPU (``cuda_vmm.CudaDeviceMemory``); benchmarks/suspend_resume_arena.py runs it there.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

import pytest
import torch
from conftest import APPS_DIR
from in_process import InProcessRunners

from minifal.compat.fal_alias import install_fal_alias
from minifal.fleet.runner import Runner
from minifal.fleet.runner_http import RunnerConnectionError
from minifal.fleet.runner_offload import HeldMemory, OffloadError, RunnerOffload
from minifal.offload.arena import ArenaError, ArenaState, TensorArena, plan_layout
from minifal.offload.suspension import Offloaded, ProcessArenas, Released
from minifal.runner.app_loader import load_app_class
from minifal.runner.asgi import build_asgi_app
from minifal.runner_contract import OFFLOAD_PATH, RELEASE_PATH, RESTORE_PATH

pytestmark = pytest.mark.unit

SCRIBBLE = 0xAB


class FakeDeviceMemory:
    """The driver's virtual memory calls, faked over host memory (see the module docstring)."""

    device = torch.device("cpu")
    granularity = 4096

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.blocks: dict[int, ctypes.Array] = {}  # kept for good: tensors point into them
        self.reserved: set[int] = set()
        self.mapped: dict[int, int] = {}  # address -> handle
        self.handles: set[int] = set()
        self.calls: list[str] = []
        self.taken_meanwhile = False  # a re-reservation gets other addresses

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail == name:
            raise RuntimeError(f"{name} failed: CUDA_ERROR_OUT_OF_MEMORY")

    def reserve(self, size: int, address: int = 0) -> int:
        self._step("reserve")
        if address in self.blocks and address not in self.reserved and not self.taken_meanwhile:
            self.reserved.add(address)
            return address
        block = (ctypes.c_uint8 * size)()
        start = ctypes.addressof(block)
        self.blocks[start] = block
        self.reserved.add(start)
        return start

    def free(self, address: int, size: int) -> None:
        self._step("free")
        self.reserved.remove(address)

    def create(self, size: int) -> int:
        self._step("create")
        handle = len(self.calls)
        self.handles.add(handle)
        return handle

    def map(self, address: int, size: int, handle: int) -> None:
        self._step("map")
        assert address in self.reserved and handle in self.handles
        self.mapped[address] = handle

    def unmap(self, address: int, size: int) -> None:
        self._step("unmap")
        del self.mapped[address]
        ctypes.memset(address, SCRIBBLE, size)

    def release(self, handle: int) -> None:
        self._step("release")
        self.handles.remove(handle)

    def tensor_at(self, address: int, size: int) -> torch.Tensor:
        return torch.frombuffer(self.blocks[address], dtype=torch.uint8)[:size]

    def host_buffer(self, size: int) -> torch.Tensor:
        self.calls.append("host_buffer")
        return torch.empty(size, dtype=torch.uint8)

    def free_host_buffer(self, buffer: torch.Tensor) -> None:
        self.calls.append("free_host_buffer")

    def synchronize(self) -> None:
        pass


class Model(torch.nn.Module):
    """Every kind of tensor a real model has: float16 and float64, a channels-last weight,
    a tied weight, a parameter that is a view at an offset, two buffers sharing one storage, an
    odd size, and a tensor kept outside the arena's device (none here: all on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 16)
        self.tied = torch.nn.Linear(8, 16, bias=False)
        self.tied.weight = self.linear.weight
        self.conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        base = torch.randn(12)
        self.view = torch.nn.Parameter(base[2:7])
        shared = torch.randn(8, dtype=torch.float64)
        self.register_buffer("low", shared[:4])
        self.register_buffer("high", shared[4:])
        self.odd = torch.nn.Parameter(torch.randn(5).half())

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        y = self.linear(x) + self.tied(x) + self.view.sum() + self.odd.float().sum()
        z = self.conv(image).sum() * (self.low.sum() + self.high.sum()).float()
        return y * z


def tensors_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def snapshot(model: torch.nn.Module) -> dict[str, bytes]:
    """Each tensor's bytes, as laid out (strides included)."""
    return {name: t.detach().clone().numpy().tobytes() for name, t in tensors_of(model).items()}


INPUTS = (torch.randn(2, 8), torch.randn(1, 3, 6, 6).to(memory_format=torch.channels_last))

# -- the layout (pure) ----------------------------------------------------------------------------


def test_regions_are_aligned_and_the_arena_is_whole_granules() -> None:
    layout = plan_layout([10, 512, 1, 1000], granularity=4096, alignment=512)
    assert layout.offsets == (0, 512, 1024, 1536)
    assert layout.size == 4096
    assert plan_layout([4097], granularity=4096).size == 8192
    assert plan_layout([], granularity=4096).size == 4096


# -- placement and the round trip (fake driver) --------------------------------------------------


def test_placing_keeps_every_tensor_object_value_stride_and_sharing() -> None:
    model = Model()
    before, objects, expected = snapshot(model), tensors_of(model), model(*INPUTS)
    memory = FakeDeviceMemory()
    arena = TensorArena.place([model], memory)
    assert arena is not None and arena.tensor_count == 8  # the tied weight once
    for name, tensor in tensors_of(model).items():
        assert tensor is objects[name], name  # graphs and artifacts find weights by identity
        assert arena.address <= tensor.data_ptr() < arena.address + arena.size, name
        assert tensor.data_ptr() % 4 == 0
    assert snapshot(model) == before
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.tied.weight is model.linear.weight
    low, high = model.low, model.high
    assert low.untyped_storage().data_ptr() == high.untyped_storage().data_ptr()
    assert high.data_ptr() - low.data_ptr() == 4 * 8  # the view's offset in its storage kept
    assert torch.equal(model(*INPUTS), expected)
    assert memory.calls == ["reserve", "create", "map"]


def test_ten_offloads_and_restores_bring_back_the_same_bytes_at_the_same_addresses() -> None:
    model = Model()
    before, expected = snapshot(model), model(*INPUTS)
    memory = FakeDeviceMemory()
    arena = TensorArena.place([model], memory)
    assert arena is not None
    addresses = {name: t.data_ptr() for name, t in tensors_of(model).items()}
    for _ in range(10):
        arena.offload()
        assert arena.state is ArenaState.OFFLOADED and not memory.mapped and not memory.handles
        assert arena.address in memory.reserved  # the addresses stay reserved
        assert model.linear.weight.detach().reshape(-1).view(torch.uint8)[0] == SCRIBBLE
        assert arena.host_bytes == arena.size
        arena.restore()
        assert arena.state is ArenaState.LIVE
        assert {name: t.data_ptr() for name, t in tensors_of(model).items()} == addresses
        assert snapshot(model) == before
        assert torch.equal(model(*INPUTS), expected)
    assert memory.calls.count("host_buffer") == 1  # pinned once, kept


def test_offload_and_restore_are_no_ops_when_done_already() -> None:
    model = Model()
    memory = FakeDeviceMemory()
    arena = TensorArena.place([model], memory)
    assert arena is not None
    arena.restore()  # live: nothing to do
    arena.offload()
    calls = len(memory.calls)
    arena.offload()
    assert len(memory.calls) == calls
    arena.close()
    assert arena.state is ArenaState.CLOSED and not memory.reserved


def test_released_addresses_are_reserved_again_at_the_same_start_or_the_restore_fails() -> None:
    model = Model()
    before = snapshot(model)
    memory = FakeDeviceMemory()
    arena = TensorArena.place([model], memory, release_addresses=True)
    assert arena is not None
    arena.offload()
    assert arena.address not in memory.reserved
    arena.restore()
    assert snapshot(model) == before
    arena.offload()
    memory.taken_meanwhile = True
    with pytest.raises(ArenaError, match="taken meanwhile"):
        arena.restore()
    assert arena.state is ArenaState.OFFLOADED and not memory.mapped


def test_a_failed_placement_leaves_the_tensors_where_they_were() -> None:
    model = Model()
    addresses = {name: t.data_ptr() for name, t in tensors_of(model).items()}
    memory = FakeDeviceMemory(fail="map")
    with pytest.raises(RuntimeError, match="map failed"):
        TensorArena.place([model], memory)
    assert {name: t.data_ptr() for name, t in tensors_of(model).items()} == addresses
    assert not memory.reserved and not memory.handles  # given back


def test_keep_addresses_falls_back_and_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    arenas = ProcessArenas()
    model = Model()
    with caplog.at_level(logging.INFO, logger="minifal.offload"):
        assert arenas.keep_addresses(model) is None  # CPU tensors only: no CUDA arena
        assert arenas.keep_addresses(model, memory=FakeDeviceMemory(fail="create")) is None
        assert arenas.keep_addresses(model, memory=FakeDeviceMemory(fail="create")) is None
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 2, reasons
    assert "no tensor on a GPU" in reasons[0] and "create failed" in reasons[1]
    assert arenas.arenas == []
    offloaded = arenas.prepare_for_checkpoint()
    assert (offloaded.arenas, offloaded.host_bytes) == (0, 0)


def test_the_process_arenas_offload_and_restore_together() -> None:
    arenas = ProcessArenas()
    first, second = Model(), Model()
    memory = FakeDeviceMemory()
    assert arenas.keep_addresses(first, memory=memory) is not None
    assert arenas.keep_addresses(second, memory=memory) is not None
    before = snapshot(first), snapshot(second)
    offloaded = arenas.prepare_for_checkpoint()
    assert offloaded.arenas == 2 and offloaded.device_bytes == offloaded.host_bytes == 2 * 4096
    assert all(arena.state is ArenaState.OFFLOADED for arena in arenas.arenas)
    arenas.restore_after_checkpoint()
    arenas.restore_after_checkpoint()  # repeated: nothing more
    assert (snapshot(first), snapshot(second)) == before


# -- the gateway and the runner's routes, in process ----------------------------------------------


def runner_named(name: str) -> Runner:
    runner = Runner(name, [], None, None, False)
    runner.instance = type("Instance", (), {"url": "http://runner.invalid", "unix_path": None})()
    return runner


@pytest.fixture
def served_arena(monkeypatch: pytest.MonkeyPatch) -> tuple[InProcessRunners, Model, TensorArena]:
    """A runner's ASGI app whose process holds one arena (fake memory)."""
    from minifal.offload import suspension

    install_fal_alias()
    model = Model()
    arenas = ProcessArenas()
    arena = arenas.keep_addresses(model, memory=FakeDeviceMemory())
    assert arena is not None
    monkeypatch.setattr(suspension, "PROCESS_ARENAS", arenas)
    app = build_asgi_app(load_app_class(str(APPS_DIR / "echo_app.py"))())
    return InProcessRunners(app), model, arena


def test_the_gateway_offloads_and_restores_through_the_runners_routes(served_arena) -> None:
    runners, model, arena = served_arena
    before = snapshot(model)
    offload = RunnerOffload(runners)  # type: ignore[arg-type]
    runner = runner_named("runner-0")

    async def scenario() -> tuple[Offloaded | None, Released | None]:
        offloaded = await offload.offload(runner)
        assert arena.state is ArenaState.OFFLOADED
        released = await offload.release(runner)
        await offload.restore(runner)
        return offloaded, released

    offloaded, released = asyncio.run(scenario())
    assert offloaded is not None and offloaded.arenas == 1 and offloaded.host_bytes == arena.size
    assert released is not None and released.graphs == 0  # no CUDA in this process: nothing
    assert [path for _, path in runners.sent] == [OFFLOAD_PATH, RELEASE_PATH, RESTORE_PATH]
    assert arena.state is ArenaState.LIVE and snapshot(model) == before


class BrokenRunners:
    """A runner client whose runner answers 500 (``status``) or cannot be reached (0)."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def send(self, *args: object) -> object:
        if not self.status:
            raise RunnerConnectionError("cannot connect to the runner: refused")
        answer = type("Answer", (), {"status": self.status, "close": lambda self: None})()

        async def read() -> bytes:
            return b'{"detail": "RuntimeError: host buffer: out of memory"}'

        answer.read = read
        return answer


def test_a_runner_that_cannot_offload_is_checkpointed_whole_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = runner_named("runner-0")

    async def scenario() -> None:
        for status in (500, 500, 0):
            assert await RunnerOffload(BrokenRunners(status)).offload(runner) is None  # type: ignore[arg-type]
        broken = RunnerOffload(BrokenRunners(500))  # type: ignore[arg-type]
        assert await broken.offload(runner) is None
        assert await broken.offload(runner) is None
        with pytest.raises(OffloadError, match="out of memory"):
            await broken.restore(runner)

    with caplog.at_level(logging.WARNING, logger="minifal.fleet"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records]
    assert sum("out of memory" in line for line in said) == 3  # one line per offloader
    assert any("refused" in line for line in said)


class SilentRunners:
    """A runner client whose runner never answers."""

    async def send(self, *args: object) -> object:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_release_that_fails_or_does_not_answer_is_none_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway then checkpoints the runner as it is (``runner_suspension.py``)."""
    runner = runner_named("runner-0")

    async def scenario() -> None:
        broken = RunnerOffload(BrokenRunners(500))  # type: ignore[arg-type]
        assert await broken.release(runner) is None
        assert await broken.release(runner) is None
        silent = RunnerOffload(SilentRunners(), release_timeout=0.05)  # type: ignore[arg-type]
        assert await silent.release(runner) is None

    with caplog.at_level(logging.WARNING, logger="minifal.fleet"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records]
    assert sum("release before the checkpoint failed" in line for line in said) == 2
    assert sum("out of memory" in line for line in said) == 1
    assert any("TimeoutError" in line for line in said)


def test_what_a_release_gave_back_goes_to_the_gateway_as_json() -> None:
    released = Released(graphs=4, reserved_before_bytes=3000, reserved_after_bytes=1000)
    answer = released.as_json()
    assert answer["released_bytes"] == 2000
    assert Released.from_json({**answer, "from_a_newer_runner": 1}) == released


def test_what_a_suspended_runner_holds_is_reported_in_parts() -> None:
    gib = 2**30
    offloaded = Offloaded(arenas=1, device_bytes=2 * gib, host_bytes=2 * gib, seconds=0.1)
    held = HeldMemory.of(4 * gib, 3 * gib, offloaded)
    assert (held.pinned, held.checkpoint) == (2 * gib, gib)
    assert str(held) == (
        "host memory held: 4.0 GiB (2.00 GiB pinned tensors, 1.00 GiB from the checkpoint)"
    )
    nothing = HeldMemory.of(4 * gib, 1 * gib, Offloaded(seconds=0.01))
    assert nothing.pinned is None and nothing.details()["checkpoint_bytes"] == 3 * gib
    assert Offloaded.from_json({"arenas": 2, "new_field": 1}) == Offloaded(arenas=2)


def test_a_host_without_the_driver_has_no_device_memory_and_says_why() -> None:
    from minifal.offload.cuda_vmm import load_device_memory

    memory, why = load_device_memory(0, library="libcuda-that-is-not-here.so.1")
    assert memory is None and "not found" in why


def test_on_a_gpu_the_arena_asks_the_driver_for_that_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The glue between keep_addresses and the driver's memory (the driver itself faked: no
    GPU here), so that a CPU run catches a call that does not fit."""
    from types import SimpleNamespace

    from minifal.offload import cuda_vmm, suspension

    asked: list[tuple[int, bool]] = []

    def load(index: int, library: str = cuda_vmm.LIBRARY, pin_host: bool = True) -> tuple:
        asked.append((index, pin_host))
        return None, "no virtual memory on this fake device"

    monkeypatch.setattr(cuda_vmm, "load_device_memory", load)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    on_gpu = SimpleNamespace(device=torch.device("cuda", 1))
    memory, why = suspension._cuda_memory([on_gpu], pin_host=False)  # type: ignore[list-item]
    assert memory is None and why == "no virtual memory on this fake device"
    assert asked == [(1, False)]
