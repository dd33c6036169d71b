"""A digest of what a module *is*, not of what it holds: class, sub-module tree, tensor layout.

Compiled code depends on the module's class and code path (its ``repr`` names every sub-module and
its settings: kernel sizes, heads, activations) and on each parameter's and buffer's name, shape,
dtype and device. It does not depend on the weights' values: those are graph inputs, read from the
live module at every call, so new weights of the same architecture reuse the artifact.

A module compiled with Inductor options (``inductor_options.py``) gets them folded in: another
set of options is another artifact. A module without any keeps the digest it always had.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from minifal.compiled.precompiled.inductor_options import options_text


def module_digest(
    module: torch.nn.Module, inductor_options: Mapping[str, Any] | None = None
) -> str:
    """16 hex digits naming ``module``'s class, structure and tensor layout, and the Inductor
    options its calls are compiled with, where it has any."""
    digest = hashlib.sha256()
    cls = type(module)
    digest.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    digest.update(repr(module).encode())
    for kind, named in (
        ("p", module.named_parameters(remove_duplicate=False)),
        ("b", module.named_buffers(remove_duplicate=False)),
    ):
        for name, tensor in named:
            line = f"\n{kind} {name} {tuple(tensor.shape)} {tensor.dtype} {tensor.device.type}"
            digest.update(line.encode())
    if inductor_options:
        digest.update(f"\ninductor options {options_text(inductor_options)}".encode())
    return digest.hexdigest()[:16]
