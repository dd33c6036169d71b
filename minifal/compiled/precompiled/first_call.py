"""An artifact's first call, made early with placeholder inputs.

A loaded artifact's first call does one-time work that does not depend on the input values:
the CUDA driver loads each Triton kernel's module into the context (hundreds for a UNet), cuDNN
and cuBLAS load and pick their kernels for the graph's convolutions and matmuls, and the
runtime wrappers take their first-call paths. A warm runner's background thread makes that
call right after loading the artifact, while the app is still loading its weights, so the app's
own warmup call finds it done.

The weights are not there yet, so the call gets zeros of the recorded layouts: the parameters
share one zero buffer per dtype and device (read-only, as large as the largest of them: 30 MB for
the SD-Turbo UNet instead of 1.7 GB), and buffers and the call's tensors get their own. Zeros
make no invalid index and no out-of-range value; the output is thrown away.
"""

from __future__ import annotations

from typing import Any

import torch

# A layout as saved in an artifact's meta: shape, stride, dtype name, device.
Layout = tuple[list[int], list[int], str, str]


def input_layouts(tensors: list[Any]) -> list[Layout]:
    """The layouts of a graph's example inputs, as the artifact's meta saves them."""
    return [
        (list(t.shape), list(t.stride()), str(t.dtype).removeprefix("torch."), str(t.device))
        for t in tensors
    ]


def placeholder_inputs(layouts: list[Layout], input_plan: list[str]) -> list[torch.Tensor]:
    """Zeros of each layout; parameters (``p:`` in the input plan) are views of one buffer."""
    largest: dict[tuple[torch.dtype, str], int] = {}
    parsed = []
    for (shape, stride, dtype_name, device), entry in zip(layouts, input_plan, strict=True):
        dtype = getattr(torch, dtype_name)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"not a dtype: {dtype_name!r}")
        size = _storage_size(shape, stride)
        shared = entry.startswith("p:")
        if shared:
            largest[(dtype, device)] = max(largest.get((dtype, device), 0), size)
        parsed.append((shape, stride, dtype, device, size, shared))
    buffers = {key: torch.zeros(size, dtype=key[0], device=key[1]) for key, size in largest.items()}
    tensors = []
    for shape, stride, dtype, device, size, shared in parsed:
        base = buffers[(dtype, device)] if shared else torch.zeros(size, dtype=dtype, device=device)
        tensors.append(base.as_strided(shape, stride))
    return tensors


def run_first_call(artifact: Any, layouts: list[Layout], input_plan: list[str], grad: bool) -> None:
    """Call ``artifact`` once on placeholder inputs, in the grad mode it was compiled for, and
    wait for the device: a failure surfaces here, not in the app's next call."""
    inputs = placeholder_inputs(layouts, input_plan)
    with torch.inference_mode(not grad), torch.set_grad_enabled(grad):
        artifact(*inputs)
    for device in {t.device for t in inputs if t.is_cuda}:
        torch.cuda.synchronize(device)


def _storage_size(shape: list[int], stride: list[int]) -> int:
    if any(size == 0 for size in shape):
        return 0
    return 1 + sum((size - 1) * step for size, step in zip(shape, stride, strict=True))
