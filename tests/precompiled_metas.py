"""The record of a precompiled artifact for a ``torch.nn.Linear`` called on one tensor, as the
store keeps it: what tests hand a ``WarmLoader`` in place of a published artifact."""

from __future__ import annotations

import torch

from minifal.compiled import torch_internals
from minifal.compiled.call_signature import call_signature, flatten_call
from minifal.compiled.precompiled.artifact_files import ArtifactMeta
from minifal.compiled.precompiled.structure import module_digest


def linear_artifact_meta(linear: torch.nn.Linear, x: torch.Tensor) -> ArtifactMeta:
    """``linear``'s artifact for ``x``'s call signature (inputs: weight, bias, the tensor)."""
    signature = call_signature(flatten_call((x,), {}), False, False)
    _, out_spec = torch_internals.tree_flatten(x)
    return ArtifactMeta(
        "torch.nn.Linear",
        module_digest(linear),
        signature.digest,
        signature.label,
        ["p:weight", "p:bias", "@0"],
        torch_internals.treespec_dumps(out_spec),
        1.0,
        2.0,
    )
