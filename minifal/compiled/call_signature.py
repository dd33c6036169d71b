"""A call's input signature: what identifies one compiled artifact, or one CUDA graph, among
a module's calls.

A graph captured with ``dynamic=False`` is only valid for calls that look exactly like the one it
was captured from: the same argument structure (positional and keyword names, ``None``s), the same
tensor shapes, strides, dtypes and devices, the same non-tensor values (they are baked into the
graph as constants) and the same grad mode. The signature names all of these; two calls with the
same digest can share an artifact, any difference is another artifact or an uncovered call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from minifal.compiled import torch_internals
from minifal.compiled.torch_internals import TreeSpec


class CallSignature:
    """``digest`` (16 hex digits, the artifact's file name) and a readable ``label`` for logs."""

    __slots__ = ("_call", "_grad_enabled", "_training", "digest")

    def __init__(self, digest: str, call: FlatCall, grad_enabled: bool, training: bool) -> None:
        self.digest = digest
        self._call, self._grad_enabled, self._training = call, grad_enabled, training

    @property
    def label(self) -> str:
        """``args[0]=f16[1,4,64,64] args[1]=f32[] encoder_hidden_states=f16[1,77,1024] grad=off``"""
        call = self._call
        parts = [
            f"{name}={_describe(leaf)}"
            for name, leaf in zip(_leaf_names(call), call.leaves, strict=True)
            if leaf is not None
        ]
        parts.append(f"grad={'on' if self._grad_enabled else 'off'}")
        if self._training:
            parts.append("training")
        return " ".join(parts)


@dataclass(frozen=True)
class FlatCall:
    """One call's arguments as pytree leaves: the tensors are the compiled graph's inputs."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    leaves: list[Any]
    spec: TreeSpec
    tensor_positions: tuple[int, ...]

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [self.leaves[i] for i in self.tensor_positions]

    def rebuild(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` with this call's constants and the given tensors in their places."""
        leaves = list(self.leaves)
        for position, tensor in zip(self.tensor_positions, tensors, strict=True):
            leaves[position] = tensor
        return torch_internals.tree_unflatten(leaves, self.spec)


def flatten_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> FlatCall:
    leaves, spec = torch_internals.tree_flatten((args, kwargs))
    positions = tuple(i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor))
    return FlatCall(args, kwargs, leaves, spec, positions)


def call_signature(call: FlatCall, grad_enabled: bool, training: bool = False) -> CallSignature:
    """The signature of ``call`` made in this grad mode to a module in this train/eval mode.

    Computed at every call (a sha256 of a short text; the readable label is built lazily).
    """
    exact = repr(call.spec) + "\n" + "\n".join(_exact(leaf) for leaf in call.leaves)
    exact += f"\ngrad={grad_enabled} training={training}"
    digest = hashlib.sha256(exact.encode()).hexdigest()[:16]
    return CallSignature(digest, call, grad_enabled, training)


_DTYPE_SHORT = {
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.bool: "bool",
}


def _describe(leaf: Any) -> str:
    if isinstance(leaf, torch.Tensor):
        dtype = _DTYPE_SHORT.get(leaf.dtype, str(leaf.dtype).removeprefix("torch."))
        return f"{dtype}[{','.join(map(str, leaf.shape))}]"
    text = repr(leaf)
    return text if len(text) <= 40 else text[:37] + "..."


def _exact(leaf: Any) -> str:
    if isinstance(leaf, torch.Tensor):
        return (
            f"T {leaf.dtype} {tuple(leaf.shape)} {leaf.stride()} {leaf.device} "
            f"rg={leaf.requires_grad} layout={leaf.layout}"
        )
    return f"V {type(leaf).__module__}.{type(leaf).__qualname__} {leaf!r}"


def _leaf_names(call: FlatCall) -> list[str]:
    """A readable name for each leaf of (args, kwargs): ``args[0]``, ``encoder_hidden_states``."""
    names = []
    for prefix, value in [(f"args[{i}]", arg) for i, arg in enumerate(call.args)] + list(
        call.kwargs.items()
    ):
        count = len(torch_internals.tree_leaves(value))
        names += [prefix] if count == 1 else [f"{prefix}.{j}" for j in range(count)]
    return (
        names if len(names) == len(call.leaves) else [f"leaf{i}" for i in range(len(call.leaves))]
    )
