"""Capture one call's graph with Dynamo, compile it with Inductor, check it against eager.

The capture runs Dynamo once with a recording backend (``fullgraph=True``, ``dynamic=False``):
the graph it hands over takes the module's parameters and buffers, lifted as inputs, and the
call's tensors. Which graph input is which is recorded here as an *input plan* (``@k`` for the
k-th tensor of the call, ``p:<name>``/``b:<name>`` for a parameter or buffer), so that a process
that never ran Dynamo can rebuild the argument list from its own live module.
``torch._inductor.standalone_compile`` then compiles the graph into an artifact that loads with no
Dynamo, no guards and no re-tracing (see docs/compile-cache.md and WARM_START research).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minifal.compiled import torch_internals
from minifal.compiled.cache.inductor_setup import prepare_inductor
from minifal.compiled.call_signature import FlatCall
from minifal.compiled.precompiled.first_call import Layout, input_layouts

logger = logging.getLogger("minifal.precompiled")

# How far a compiled output may be from eager's, relative to the output's magnitude. Inductor
# reorders and fuses float arithmetic, so bit equality is not expected; a wrong graph (a swapped
# weight, a stale constant) is off by the magnitude itself, far beyond these.
TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 5e-2}
DEFAULT_TOLERANCE = 1e-3


class NotPrecompilable(Exception):
    """This call cannot be captured as one static graph (the reason says why)."""


@dataclass
class CompiledCall:
    artifact: Any  # torch._inductor.CompiledArtifact: called with the flat graph inputs
    input_plan: list[str]
    out_spec: str  # the output's pytree spec, from torch_internals.treespec_dumps
    capture_s: float  # Dynamo's share: tracing the call once
    compile_s: float  # Inductor's share: standalone_compile
    max_abs_diff: float  # against eager, on the capturing call
    saved_at: Path | None = None  # a worker's saved artifact (a loaded one cannot save again)
    input_layouts: list[Layout] = field(default_factory=list)  # for a placeholder first call
    grad_enabled: bool = False  # the grad mode it was compiled in


@dataclass
class CapturedCall:
    """One call's graph, captured by Dynamo, and what compiling it needs and is checked against."""

    gm: torch.fx.GraphModule
    example_inputs: list  # the live weights and the call's tensors, in the graph's order
    input_plan: list[str]
    out_spec: str
    expected: list[torch.Tensor]  # eager's output leaves for this call
    capture_s: float
    grad_enabled: bool  # the grad mode it was captured in, and must be compiled in
    inductor_options: dict[str, Any] = field(default_factory=dict)  # its module's, checked


def capture_call(
    module: torch.nn.Module, call: FlatCall, inductor_options: dict[str, Any] | None = None
) -> tuple[CapturedCall, Any]:
    """Run ``call`` eagerly, then capture its graph; returns the capture (to be compiled with
    ``inductor_options``, checked by ``inductor_options.checked_options``) and eager's output.

    The eager call comes first and its exceptions are the app's own: they propagate unchanged.
    Anything that goes wrong after it is a :class:`NotPrecompilable`.
    """
    args, kwargs = call.rebuild(tuple(call.tensors))
    expected = module(*args, **kwargs)
    expected_leaves, out_spec = torch_internals.tree_flatten(expected)
    if not all(isinstance(leaf, torch.Tensor) for leaf in expected_leaves):
        raise NotPrecompilable("the output holds non-tensor values")
    try:
        out_spec_text = torch_internals.treespec_dumps(out_spec)
    except Exception as exc:
        raise NotPrecompilable(f"the output's structure cannot be saved ({exc})") from exc
    start = time.perf_counter()
    gm, example_inputs = _capture(module, call)
    capture_s = time.perf_counter() - start
    input_plan = _input_plan(module, call, example_inputs)
    captured = CapturedCall(
        gm,
        example_inputs,
        input_plan,
        out_spec_text,
        expected_leaves,
        capture_s,
        torch.is_grad_enabled(),
        dict(inductor_options or {}),
    )
    return captured, expected


def compile_captured(captured: CapturedCall) -> CompiledCall:
    """Compile ``captured`` in this process with ``standalone_compile`` (and its module's
    Inductor options), and check it."""
    try:
        prepare_inductor()  # once per process: Inductor's torch_key, the autotune redirect
        start = time.perf_counter()
        artifact = torch_internals.standalone_compile(
            captured.gm, captured.example_inputs, captured.inductor_options
        )
        compile_s = time.perf_counter() - start
    except Exception as exc:  # Inductor or a C++/Triton toolchain failed: not the app's error
        raise NotPrecompilable(f"compiling failed: {type(exc).__name__}: {exc}") from exc
    return checked_call(captured, artifact, compile_s)


def checked_call(
    captured: CapturedCall, artifact: Any, compile_s: float, saved_at: Path | None = None
) -> CompiledCall:
    """``artifact`` as the compiled ``captured``, once its output on the captured call matches
    eager's (the first run also tunes its Triton kernels)."""
    try:
        got = list(artifact(*captured.example_inputs))
    except Exception as exc:
        raise NotPrecompilable(f"the compiled graph failed: {type(exc).__name__}: {exc}") from exc
    diff = check_outputs(got, captured.expected)
    return CompiledCall(
        artifact,
        captured.input_plan,
        captured.out_spec,
        captured.capture_s,
        compile_s,
        diff,
        saved_at,
        input_layouts(captured.example_inputs),
        captured.grad_enabled,
    )


def compile_call(module: torch.nn.Module, call: FlatCall) -> tuple[CompiledCall, Any]:
    """Capture and compile ``call`` here; returns the compiled call and eager's output."""
    captured, expected = capture_call(module, call)
    return compile_captured(captured), expected


def _capture(forward: Callable[..., Any], call: FlatCall) -> tuple[torch.fx.GraphModule, list]:
    captured: dict[str, Any] = {}

    def record(gm: torch.fx.GraphModule, example_inputs: list, **_: Any) -> Callable[..., Any]:
        if captured:
            raise NotPrecompilable("Dynamo produced more than one graph")
        captured["gm"], captured["inputs"] = gm, list(example_inputs)
        return gm.forward

    def flat_forward(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args, kwargs = call.rebuild(tensors)
        return tuple(torch_internals.tree_leaves(forward(*args, **kwargs)))

    try:
        torch.compile(flat_forward, backend=record, fullgraph=True, dynamic=False)(*call.tensors)
    except NotPrecompilable:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotPrecompilable(f"Dynamo could not capture one graph: {message}") from exc
    finally:
        # Forget this trace (and only it): the next capture of another call traces afresh, and
        # whatever else the process compiled with torch.compile keeps its cache.
        torch_internals.forget_dynamo_trace(flat_forward)
    if not captured:
        raise NotPrecompilable("Dynamo captured no graph")
    return captured["gm"], captured["inputs"]


def _input_plan(module: torch.nn.Module, call: FlatCall, inputs: list) -> list[str]:
    """Name every graph input: a tensor of the call, or a parameter/buffer of the module."""
    by_id: dict[int, str] = {}
    for name, tensor in module.named_buffers(remove_duplicate=False):
        by_id.setdefault(id(tensor), f"b:{name}")
    for name, tensor in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(tensor), f"p:{name}")
    for index, tensor in enumerate(call.tensors):
        by_id[id(tensor)] = f"@{index}"
    plan = []
    for position, tensor in enumerate(inputs):
        name = by_id.get(id(tensor))
        if name is None:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise NotPrecompilable(
                f"graph input {position} ({shape}) is neither an input of the call nor a "
                "parameter or buffer of the module (a global tensor?)"
            )
        plan.append(name)
    return plan


def check_outputs(got: list, expected: list[torch.Tensor]) -> float:
    """The largest difference of ``got`` from eager's ``expected``, within the tolerance
    (:data:`TOLERANCE`); :class:`NotPrecompilable` saying where it is not."""
    if len(got) != len(expected):
        raise NotPrecompilable(f"the graph returns {len(got)} tensors, eager {len(expected)}")
    worst = 0.0
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
            raise NotPrecompilable(
                f"output {index}: {mine.dtype}{tuple(mine.shape)} compiled, "
                f"{theirs.dtype}{tuple(theirs.shape)} eager"
            )
        if not theirs.is_floating_point():
            if not torch.equal(mine, theirs):
                raise NotPrecompilable(f"output {index} differs from eager")
            continue
        diff = (mine.float() - theirs.float()).abs().max().item() if theirs.numel() else 0.0
        scale = 1.0 + (theirs.float().abs().max().item() if theirs.numel() else 0.0)
        tolerance = TOLERANCE.get(theirs.dtype, DEFAULT_TOLERANCE)
        if not diff <= tolerance * scale:  # also catches NaN
            raise NotPrecompilable(
                f"output {index} differs from eager by {diff:.3g} (allowed {tolerance * scale:.3g})"
            )
        worst = max(worst, diff)
    return worst
