"""``minifal.compiled.cuda_graphs``: one CUDA graph per call signature, replayed.

The CPU tests check what happens where no graph can be captured (the module runs as it is),
the weight-slot check, and the bookkeeping of a release (the process's calls, weakly; a graph
dropped under its call's lock). The GPU tests need a CUDA device (skipped here; run on the GPU
host): replayed results equal eager ones, results survive the next call, a replaced weight is
noticed, grad-mode calls are not graphed, threads calling at once each get their own result,
and a released graph gives its memory back and is captured again at the next call.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

from minifal.compiled import cuda_graphs
from minifal.compiled.cuda_graphs import (
    CudaGraphModule,
    GraphedCall,
    WeightSlots,
    cuda_graphed,
    release_cuda_graphs,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.out = torch.nn.Linear(8, 3)
        self.register_buffer("offset", torch.full((3,), 0.5))

    def forward(self, x: torch.Tensor, scale: float = 1.0, *, extra=None) -> dict:
        h = torch.nn.functional.silu(self.norm(self.conv(x))).mean(dim=(2, 3))
        y = self.out(h) * scale + self.offset
        return {"y": y, "h": h} if extra is None else {"y": y + extra, "h": h}


@pytest.mark.unit
def test_cpu_calls_run_the_module_and_capture_nothing() -> None:
    torch.manual_seed(0)
    block = Block().eval()
    graphed = cuda_graphed(block)
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        for _ in range(3):
            assert torch.equal(graphed(x, 2.0)["y"], block(x, 2.0)["y"])
    assert graphed.captured_signatures == 0
    assert isinstance(graphed, CudaGraphModule)


@pytest.mark.unit
def test_attributes_are_the_wrapped_modules() -> None:
    block = Block()
    graphed = cuda_graphed(block)
    assert graphed.conv is block.conv
    assert graphed.offset is block.offset
    assert graphed._orig_mod is block


@pytest.mark.unit
def test_weight_slots_notice_a_replaced_parameter_not_an_in_place_update() -> None:
    block = Block()
    slots = WeightSlots(block)
    assert slots.unchanged()
    with torch.no_grad():
        block.out.weight.mul_(2)
    assert slots.unchanged()
    block.out.weight = torch.nn.Parameter(block.out.weight.detach().clone())
    assert not slots.unchanged()
    slots.refresh()
    assert slots.unchanged()
    block.offset = torch.zeros(3)
    assert not slots.unchanged()


class StandInGraph:
    """Where a ``CapturedGraph`` would be (capturing needs CUDA): records its release. Only the
    call's bookkeeping is tested with it; the GPU test below releases real graphs."""

    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


@pytest.mark.unit
def test_the_process_knows_its_graphed_calls_weakly() -> None:
    block = Block()
    call = GraphedCall(lambda tensors: block(tensors[0]), WeightSlots(block), "block", False)
    assert call in cuda_graphs._GRAPHED_CALLS
    known = weakref.ref(call)
    del call
    gc.collect()
    assert known() is None  # the registry did not keep it alive


@pytest.mark.unit
def test_a_release_drops_the_graph_between_calls_only() -> None:
    block = Block()
    call = GraphedCall(lambda tensors: block(tensors[0]), WeightSlots(block), "block", False)
    assert not call.release()  # nothing captured: nothing dropped
    graph = StandInGraph()
    call._graph = graph  # type: ignore[assignment]
    # a call in progress holds the lock
    with call._lock, pytest.raises(TimeoutError, match="block still running"):
        call.release(timeout=0.01)
    assert call.captured and graph.released == 0
    assert call.release()
    assert not call.captured and graph.released == 1
    assert not call.release()


@pytest.mark.unit
def test_without_cuda_a_release_of_every_graph_drops_nothing() -> None:
    if torch.cuda.is_initialized():
        pytest.skip("this process uses CUDA")
    assert release_cuda_graphs() == 0
    assert not torch.cuda.is_initialized()  # and did not start it


@pytest.mark.gpu
@cuda
def test_a_released_graph_gives_its_memory_back_and_is_captured_again() -> None:
    torch.manual_seed(0)
    block = Block().cuda().eval()
    graphed = cuda_graphed(block)
    x = torch.randn(8, 4, 64, 64, device="cuda")
    with torch.inference_mode():
        expected = block(x, 2.0)["y"]
        graphed(x, 2.0)  # runs, then captures
        torch.testing.assert_close(graphed(x, 2.0)["y"], expected)  # replays
    assert graphed.captured_signatures == 1 and graphed.captures == 1
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # what is left reserved is in use: the graph's pool among it
    reserved = torch.cuda.memory_reserved()
    assert release_cuda_graphs() >= 1
    assert torch.cuda.memory_reserved() < reserved  # its pool (and workspaces) given back
    assert graphed.captured_signatures == 0
    with torch.inference_mode():
        first = graphed(x, 2.0)["y"]  # runs as it is, then captures again
        again = graphed(x, 2.0)["y"]  # replays the new graph
    assert graphed.captured_signatures == 1 and graphed.captures == 2
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(again, expected)
    assert release_cuda_graphs() >= 1  # and once more, from the new graph
    # the workspaces went too: what torch_internals.clear_cublas_workspaces calls is there
    assert hasattr(torch._C, "_cuda_clearCublasWorkspaces"), torch.__version__


@pytest.mark.gpu
@cuda
def test_replays_equal_eager_and_outlive_the_next_call() -> None:
    torch.manual_seed(0)
    block = Block().cuda().eval()
    graphed = cuda_graphed(block)
    inputs = [torch.randn(2, 4, 16, 16, device="cuda") for _ in range(4)]
    with torch.inference_mode():
        expected = [block(x, 0.5)["y"] for x in inputs]
        results = [graphed(x, 0.5)["y"] for x in inputs]
    assert graphed.captured_signatures == 1
    for got, want in zip(results, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert results[1].data_ptr() != results[2].data_ptr()


@pytest.mark.gpu
@cuda
def test_each_signature_has_its_own_graph_and_constants_count() -> None:
    block = Block().cuda().eval()
    graphed = cuda_graphed(block)
    x = torch.randn(1, 4, 8, 8, device="cuda")
    wide = torch.randn(1, 4, 8, 12, device="cuda")
    with torch.inference_mode():
        for _ in range(2):
            torch.testing.assert_close(graphed(x, 1.0)["y"], block(x, 1.0)["y"])
            torch.testing.assert_close(graphed(x, 3.0)["y"], block(x, 3.0)["y"])
            torch.testing.assert_close(graphed(wide, 1.0)["y"], block(wide, 1.0)["y"])
    assert graphed.captured_signatures == 3


@pytest.mark.gpu
@cuda
def test_a_replaced_weight_is_recaptured() -> None:
    block = Block().cuda().eval()
    graphed = cuda_graphed(block)
    x = torch.randn(1, 4, 8, 8, device="cuda")
    with torch.inference_mode():
        graphed(x)
        graphed(x)
        block.offset = torch.full((3,), 10.0, device="cuda")
        torch.testing.assert_close(graphed(x)["y"], block(x)["y"])
        torch.testing.assert_close(graphed(x)["y"], block(x)["y"])


@pytest.mark.gpu
@cuda
def test_grad_mode_calls_are_not_graphed() -> None:
    block = Block().cuda()
    graphed = cuda_graphed(block)
    x = torch.randn(1, 4, 8, 8, device="cuda")
    for _ in range(2):
        graphed(x)["y"].sum().backward()
    assert graphed.captured_signatures == 0
    assert block.out.weight.grad is not None


@pytest.mark.gpu
@cuda
def test_threads_get_their_own_results() -> None:
    torch.manual_seed(0)
    block = Block().cuda().eval()
    graphed = cuda_graphed(block)
    inputs = [torch.randn(1, 4, 8, 8, device="cuda") for _ in range(8)]
    with torch.inference_mode():
        graphed(inputs[0])  # capture first
        expected = [block(x)["y"] for x in inputs]
    failures: list[int] = []

    def worker(offset: int) -> None:
        with torch.inference_mode():
            for round_ in range(25):
                i = (offset + round_) % len(inputs)
                if not torch.allclose(graphed(inputs[i])["y"], expected[i]):
                    failures.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures


@pytest.mark.gpu
@cuda
def test_a_capture_handed_to_another_thread_gives_the_same_results() -> None:
    """``capture_in``: the first capture runs in another thread (as the precompiled session's
    warmed thread does it); the caller's first result is the graph's first replay."""
    from minifal.compiled.cuda_graphs import GraphedCall

    torch.manual_seed(0)
    block = Block().cuda().eval()
    threads: list[str] = []

    def in_other_thread(fn) -> None:
        def run() -> None:
            threads.append(threading.current_thread().name)
            with torch.inference_mode():
                fn()

        worker = threading.Thread(target=run, name="warmed")
        worker.start()
        worker.join()

    graphed = GraphedCall(
        lambda tensors: block(tensors[0])["y"],
        WeightSlots(block),
        "block",
        capturable=True,
        capture_in=in_other_thread,
    )
    with torch.inference_mode():
        for seed in range(3):
            x = torch.randn(2, 4, 8, 8, device="cuda").add_(seed)
            torch.testing.assert_close(graphed([x]), block(x)["y"])
    assert threads == ["warmed"] and graphed.captures == 1
