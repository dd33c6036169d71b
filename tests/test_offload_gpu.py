"""An arena on a real GPU (``minifal.offload`` over the CUDA driver's virtual memory calls): a
module's weights placed at fixed addresses, a CUDA graph captured on them, the weights offloaded
(their GPU memory given back) and restored at the same addresses, the graph replayed: the same
output, bit for bit. Then the same with the release a late checkpoint asks for in between: the
graph dropped, its memory given back, captured again at the next call. No checkpoint here:
benchmarks/suspend_resume_arena.py times the whole. Each test closes its arena: a runner's live
as long as it does, but here a pinned host copy left registered when its memory is freed makes
the next test's copies fail ("resource already mapped").

Skipped on CPU CI (no GPU); on a GPU host: ``pytest tests/test_offload_gpu.py``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"),
]

MIB = 2**20


def graphed_model_in_an_arena() -> tuple:
    """16 fp16 linear layers whose weights live in an arena, their CUDA-graphed call (nothing
    captured yet), the process's arenas, that arena, and an input."""
    from minifal.compiled.cuda_graphs import cuda_graphed
    from minifal.offload.suspension import ProcessArenas

    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(2048, 2048) for _ in range(16)))
    model = model.cuda().half().eval()
    arenas = ProcessArenas()
    arena = arenas.keep_addresses(model)
    assert arena is not None, "no arena on this GPU (the log says why)"
    tokens = torch.randn(64, 2048, device="cuda", dtype=torch.half)
    return model, arenas, arena, cuda_graphed(model), tokens


def test_a_graph_captured_on_arena_weights_replays_the_same_after_a_round_trip() -> None:
    from minifal.offload.arena import ArenaState

    model, arenas, arena, graphed, tokens = graphed_model_in_an_arena()
    with torch.inference_mode():
        graphed(tokens)
        expected = graphed(tokens).clone()  # replayed
    pointers = [p.data_ptr() for p in model.parameters()]
    free_before = torch.cuda.mem_get_info()[0]
    offloaded = arenas.prepare_for_checkpoint()
    assert arena.state is ArenaState.OFFLOADED and offloaded.host_bytes == arena.size
    assert torch.cuda.mem_get_info()[0] - free_before >= arena.size - 8 * MIB  # given back
    arenas.restore_after_checkpoint()
    assert [p.data_ptr() for p in model.parameters()] == pointers
    with torch.inference_mode():
        again = graphed(tokens)
    assert graphed.captured_signatures == 1
    assert torch.equal(again, expected)
    arena.close()  # its pinned host copy is unregistered before its memory goes back


def test_a_release_between_offload_and_restore_drops_the_graph_and_it_is_captured_again() -> None:
    model, arenas, arena, graphed, tokens = graphed_model_in_an_arena()
    with torch.inference_mode():
        eager = model(tokens).clone()
        graphed(tokens)
        expected = graphed(tokens).clone()  # replayed
    arenas.prepare_for_checkpoint()
    released = arenas.release_for_checkpoint()
    assert released.graphs >= 1 and graphed.captured_signatures == 0
    assert released.released_bytes > 0  # the graph's pool and workspaces
    assert released.gpu_used_after_bytes < released.gpu_used_before_bytes
    arenas.restore_after_checkpoint()
    with torch.inference_mode():
        first = graphed(tokens)  # runs as it is, then captures again
        again = graphed(tokens)  # replays the new graph
    assert graphed.captures == 2 and graphed.captured_signatures == 1
    torch.testing.assert_close(first, eager)
    torch.testing.assert_close(again, expected)
    arena.close()
