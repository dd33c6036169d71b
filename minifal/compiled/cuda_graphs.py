"""CUDA graphs for modules called with a few fixed shapes: capture each call signature once,
then every call is a copy of its inputs and one graph launch.

A one-step SD-Turbo image is about two thousand small kernel launches (text encoder, UNet, VAE
decoder); at batch 1 the GPU finishes many of them faster than Python issues them, so the launch
path, not the arithmetic, sets the time. A replayed graph issues them all at once.

``cuda_graphed(module)`` wraps a module: the first call of a signature (shapes, strides, dtypes,
non-tensor arguments, grad mode; as for precompiled artifacts) runs the module as it is, which
warms cuBLAS, cuDNN and lazily loaded kernels, and then captures it; later calls replay. The
precompiled path uses the same :class:`GraphedCall` around its artifacts.

What a graph bakes in, and what is done about it:

- the addresses of the module's parameters and buffers: a parameter or buffer *replaced* by
  another tensor (``load_state_dict(assign=True)``, a LoRA swap) is noticed at the next call,
  which runs the module as it is and captures again; in-place updates are seen as they are;
- the outputs' memory: each call returns clones, so a result stays valid after the next call;
- one stream: calls of one graph are serialized by a lock and replay on the caller's current
  stream, so concurrent callers (``max_multiplexing``) get their own results.

Calls that cannot be captured (CPU tensors, grad enabled, a module that synchronizes with the host
inside its forward) run the module as it is; a failed capture is logged once per signature.

A graph holds GPU memory while it lives (its private pool: every activation of the captured
call). :func:`release_cuda_graphs` drops every graph of the process (a runner does it before a
late suspension checkpoint, ``minifal.offload.suspension``): the next call of each signature runs
the module as it is and captures again, as a first call does.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch

from minifal.compiled import torch_internals
from minifal.compiled.call_signature import FlatCall, call_signature, flatten_call
from minifal.compiled.wrapped_module import WrappedModule

logger = logging.getLogger("minifal.cuda_graphs")

# torch allows one capture at a time in a process.
_CAPTURE_LOCK = threading.Lock()

RELEASE_LOCK_TIMEOUT_S = 5.0
"""How long a release waits for a call in progress (then that call keeps its graph)."""

_GRAPHED_CALLS: weakref.WeakSet[GraphedCall] = weakref.WeakSet()
"""Every ``GraphedCall`` alive in this process (weakly: a dropped module drops its calls)."""
_REGISTRY_LOCK = threading.Lock()


class WeightSlots:
    """Where a module keeps each parameter and buffer, and the tensor that was there at capture."""

    def __init__(self, module: torch.nn.Module) -> None:
        self._module = module
        self._slots: list[tuple[dict[str, Any], str, torch.Tensor]] = []
        self.refresh()

    def refresh(self) -> None:
        """Take what the module holds now as the captured state."""
        self._slots = [
            (table, name, tensor)
            for owner in self._module.modules()
            for table in (owner._parameters, owner._buffers)
            for name, tensor in table.items()
            if tensor is not None
        ]

    def unchanged(self) -> bool:
        """Whether every slot still holds the same tensor object (tens of microseconds)."""
        return all(table.get(name) is tensor for table, name, tensor in self._slots)


class CapturedGraph:
    """One captured call: static inputs, the graph, its static outputs."""

    def __init__(self, run: Callable[[list[torch.Tensor]], Any], example: list[torch.Tensor]):
        device = example[0].device
        self._inputs = [t.clone() for t in example]
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            run(self._inputs)  # a warm-up on the capture stream (its cuBLAS workspace, etc.)
        torch.cuda.current_stream(device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph, stream=stream, capture_error_mode="thread_local"):
            outputs = run(self._inputs)
        self._outputs, self._spec = torch_internals.tree_flatten(outputs)
        self._device = device

    def release(self) -> None:
        """Free its GPU memory: the static inputs and outputs, then the graph (its executable
        and its private pool, given back to the driver by the next ``empty_cache``). Not
        usable after."""
        torch.cuda.synchronize(self._device)  # no replay of it still runs
        self._inputs, self._outputs = [], []
        self._graph.reset()

    def replay(self, tensors: list[torch.Tensor]) -> Any:
        for static, tensor in zip(self._inputs, tensors, strict=True):
            if static.data_ptr() != tensor.data_ptr():
                static.copy_(tensor)
        self._graph.replay()
        leaves = [o.clone() if isinstance(o, torch.Tensor) else o for o in self._outputs]
        return torch_internals.tree_unflatten(leaves, self._spec)


class GraphedCall:
    """The graph of one call signature; ``run(tensors)`` is the call itself.

    The first call runs ``run`` and then captures it; later calls replay, unless a weight slot
    changed (run and capture again). ``capturable=False`` (CPU, grad on) always runs ``run``.

    ``capture_in(fn)``, when given, runs the first capture in another thread, one whose
    thread-local state is already warm (cuDNN keeps its execution plans per thread): the caller
    then gets its result from the graph's first replay, and never runs ``run`` itself.
    """

    def __init__(
        self,
        run: Callable[[list[torch.Tensor]], Any],
        weights: WeightSlots,
        label: str,
        capturable: bool,
        capture_in: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._run = run
        self._weights = weights
        self._label = label
        self._capturable = capturable
        self._capture_in = capture_in
        self._graph: CapturedGraph | None = None
        self._lock = threading.Lock()
        self.captures = 0
        with _REGISTRY_LOCK:
            _GRAPHED_CALLS.add(self)

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, tensors: list[torch.Tensor]) -> Any:
        if not self._capturable or torch.cuda.is_current_stream_capturing():
            return self._run(tensors)
        with self._lock:
            if self._graph is not None and self._weights.unchanged():
                return self._graph.replay(tensors)
            if self._capture_in is not None and self.captures == 0:
                self._capture_in(lambda: self._capture(tensors))
                graph = self._graph
                return graph.replay(tensors) if graph is not None else self._run(tensors)
            result = self._run(tensors)  # first call: warms everything up; its result is returned
            self._capture(tensors)
            return result

    def release(self, timeout: float = RELEASE_LOCK_TIMEOUT_S) -> bool:
        """Drop the graph, if captured (between calls, never during one); the next call runs
        ``run`` and captures again. Whether a graph was dropped; ``TimeoutError`` when a call
        still runs after ``timeout`` seconds (the graph is kept)."""
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"{self._label} still running after {timeout:g} s")
        try:
            graph, self._graph = self._graph, None
            if graph is None:
                return False
            graph.release()
            return True
        finally:
            self._lock.release()

    def _capture(self, tensors: list[torch.Tensor]) -> None:
        self._graph = None
        try:
            with _CAPTURE_LOCK:
                self._weights.refresh()
                self._graph = CapturedGraph(self._run, tensors)
        except Exception as exc:  # never fails the call: this signature runs as it is
            logger.warning("CUDA graph of %s not captured (%s): runs without", self._label, exc)
            self._capturable = False
            return
        finally:
            torch.cuda.synchronize()
        self.captures += 1


def release_cuda_graphs(timeout: float = RELEASE_LOCK_TIMEOUT_S) -> int:
    """Drop every captured CUDA graph of this process; how many were dropped.

    Frees, on every GPU: each graph's executable and private memory pool (the captured call's
    activations and outputs) and its static inputs; then, where every graph was dropped, the
    cuBLAS workspaces torch keeps per (handle, stream) (``torch_internals.clear_cublas_workspaces``,
    where torch has it: tens of MiB per stream a matmul ran on); then the caching allocator's
    free blocks (``empty_cache``), so the memory goes back to the driver. Each call's graph is
    dropped under its lock (never during a replay) and no capture runs meanwhile; a call whose
    lock is not had within ``timeout`` keeps its graph (logged), and then the workspaces stay,
    since a graph captured here baked in its capture stream's workspace address (its warm-up ran
    a matmul on that stream first). The next call of each signature runs the module as it is,
    then captures again.

    Graphs an App captures itself, outside ``GraphedCall``, are neither dropped nor known. One
    captured on a stream that ran a matmul just before (as here) uses that stream's workspace,
    which this frees: such an App's replays after a checkpointed resume would use freed memory
    (run it with ``--suspend off``). torch.compile's CUDA graph trees (``mode="reduce-overhead"``)
    clear these workspaces around each recording themselves, so theirs hold none.
    """
    if not torch.cuda.is_initialized():
        return 0  # no capture ever ran: nothing on a GPU
    dropped = 0
    if _CAPTURE_LOCK.acquire(timeout=timeout):
        try:
            with _REGISTRY_LOCK:
                calls = list(_GRAPHED_CALLS)
            kept = 0
            for call in calls:
                try:
                    if call.release(timeout):
                        dropped += 1
                except TimeoutError as busy:
                    kept += 1
                    logger.warning("CUDA graph kept: %s", busy)
            if not kept:
                torch_internals.clear_cublas_workspaces()
        finally:
            _CAPTURE_LOCK.release()
    else:
        logger.warning("CUDA graphs kept: a capture still runs after %g s", timeout)
    torch.cuda.empty_cache()  # the cached blocks all the same, graphs dropped or not
    return dropped


def capturable_call(call: FlatCall) -> bool:
    """CUDA tensors only, grad off: what a graph can replay."""
    tensors = call.tensors
    return (
        bool(tensors)
        and all(t.is_cuda for t in tensors)
        and not torch.is_grad_enabled()
        and not any(t.requires_grad for t in tensors)
    )


class CudaGraphModule(WrappedModule):
    """Wraps ``module``; one graph per call signature."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__(module)
        self._calls: dict[str, GraphedCall] = {}
        self._calls_lock = threading.Lock()

    @property
    def captured_signatures(self) -> int:
        """Signatures whose graph is captured now."""
        return sum(call.captured for call in self._calls.values())

    @property
    def captures(self) -> int:
        """Captures so far, of every signature (a graph captured again after a release or a
        replaced weight counts again)."""
        return sum(call.captures for call in self._calls.values())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        call = flatten_call(args, kwargs)
        if not call.tensors or not call.tensors[0].is_cuda:
            return self._orig_mod(*args, **kwargs)
        signature = call_signature(call, torch.is_grad_enabled(), self._orig_mod.training)
        key = f"{signature.digest} inference={torch.is_inference_mode_enabled()}"
        graphed = self._calls.get(key)
        if graphed is None:
            with self._calls_lock:
                graphed = self._calls.get(key) or self._new_call(call, signature.label)
                self._calls[key] = graphed
        return graphed(call.tensors)

    def _new_call(self, call: FlatCall, label: str) -> GraphedCall:
        module = self._orig_mod

        def run(tensors: list[torch.Tensor]) -> Any:
            args, kwargs = call.rebuild(tuple(tensors))
            return module(*args, **kwargs)

        name = f"{type(module).__name__} {label}"
        return GraphedCall(run, WeightSlots(module), name, capturable_call(call))


def cuda_graphed(module: torch.nn.Module) -> CudaGraphModule:
    """``module`` replayed from a CUDA graph per call signature; see the module docstring."""
    return CudaGraphModule(module)
