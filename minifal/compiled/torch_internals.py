"""Every private torch and Triton API minifal calls, each behind one small named function.

torch's compiler internals (``torch._dynamo``, ``torch._inductor``, ``torch.utils._pytree``,
``torch.cuda._*``) and Triton's runtime change between releases without notice; keeping every
touch point here makes a torch upgrade one file's work (like vLLM's
``vllm/compilation/compiler_interface.py``). ``tests/test_torch_internals.py`` checks that no
other module of ``minifal/`` reaches them. Public APIs (``torch.compile``, ``torch.cuda.*``,
``torch.fx``, ``torch.export``) are called where they are used.

Checked against: torch 2.13.0+cpu (the development machine; no Triton there, so not
``triton_key``); torch 2.11.0+cu130 with Triton 3.6.0 (the GPU machine), where these same calls
ran from their old places (BENCHMARKS.md section 5), not yet through this module;
``standalone_compile``'s ``config_patches`` and ``inductor_settings`` on 2.13 only so far (an
older ``standalone_compile``'s source, of the 2.8 era, hands its ``options`` to ``compile_fx``
as 2.13's does; 2.11 itself is not checked yet).
What each function wraps:

- ``tree_flatten``, ``tree_unflatten``, ``tree_leaves``, ``treespec_dumps``, ``treespec_loads``,
  ``TreeSpec``: the same names of ``torch.utils._pytree`` (the module ``torch.compile`` itself
  flattens with; its specs serialize to text);
- ``dynamo_imported``: whether ``torch._dynamo`` is in ``sys.modules`` (imports nothing);
- ``dynamo_time_metrics``: ``torch._dynamo.utils.compilation_time_metrics``;
- ``dynamo_counters``: ``torch._dynamo.utils.counters[group]``;
- ``forget_dynamo_trace``: ``torch._dynamo.eval_frame.remove_from_cache``;
- ``standalone_compile``: ``torch._inductor.standalone_compile`` (torch >= 2.8), its ``options``
  ``{"config_patches": ...}``;
- ``inductor_settings``: ``torch._inductor.config.get_config_copy``;
- ``load_compiled_artifact``, ``save_compiled_artifact``: ``torch._inductor.CompiledArtifact``'s
  ``load`` and an artifact's ``save``;
- ``inductor_vec_isa_ok``, ``patched_inductor_config``: ``torch._inductor.config.cpp.vec_isa_ok``
  and ``torch._inductor.config.patch``;
- ``torch_key``, ``torch_key_setter``: ``torch._inductor.codecache.torch_key`` and its ``set``;
- ``replace_autotune_cache_create``:
  ``torch._inductor.runtime.autotune_cache.AutotuneCache.create`` (a staticmethod, replaced);
- ``cuda_in_bad_fork``: ``torch.cuda._is_in_bad_fork``;
- ``clear_cublas_workspaces``: ``torch._C._cuda_clearCublasWorkspaces`` (in CUDA builds only);
- ``triton_key``: ``triton.runtime.cache.triton_key``.

Not here: ``nn.Module``'s ``_parameters``/``_buffers`` dicts, which ``cuda_graphs.WeightSlots``
and ``precompiled.module.InputBinder`` read on module instances, on the per-call path.

Nothing here imports torch or Triton at module level (``compiled/cache``, which ``toolkit``
imports, loads without them): each function imports what it wraps when called, a lookup in
``sys.modules`` once it is loaded (0.3 us). Functions raise what torch raises: callers keep
their own handling (an ``ImportError`` from an older torch, say).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch.utils._pytree import TreeSpec
else:
    TreeSpec = Any  # torch.utils._pytree.TreeSpec, named for annotations without importing torch

# torch.utils._pytree: flattening calls and outputs (the hot path: a few microseconds a call)


def tree_flatten(tree: Any) -> tuple[list[Any], TreeSpec]:
    from torch.utils import _pytree

    return _pytree.tree_flatten(tree)


def tree_unflatten(leaves: Sequence[Any], spec: TreeSpec) -> Any:
    from torch.utils import _pytree

    return _pytree.tree_unflatten(leaves, spec)


def tree_leaves(tree: Any) -> list[Any]:
    from torch.utils import _pytree

    return _pytree.tree_leaves(tree)


def treespec_dumps(spec: TreeSpec) -> str:
    """``spec`` as text, for an artifact's meta (raises what torch raises when it cannot be)."""
    from torch.utils import _pytree

    return _pytree.treespec_dumps(spec)


def treespec_loads(text: str) -> TreeSpec:
    from torch.utils import _pytree

    return _pytree.treespec_loads(text)


# torch._dynamo: its timers and counters, and its per-function trace cache


def dynamo_imported() -> bool:
    """Whether Dynamo was imported in this process (if not, it has compiled nothing)."""
    return "torch._dynamo" in sys.modules


def dynamo_time_metrics() -> Mapping[str, Sequence[float]]:
    """Seconds per timed torch function (``_compile.compile_inner``,
    ``OutputGraph.call_user_compiler``...), one entry per call; imports Dynamo."""
    from torch._dynamo.utils import compilation_time_metrics

    return compilation_time_metrics


def dynamo_counters(group: str) -> Mapping[str, int]:
    """torch's compile counters of ``group`` (``"stats"``, ``"inductor"``); imports Dynamo."""
    from torch._dynamo.utils import counters

    return counters[group]


def forget_dynamo_trace(fn: Callable[..., Any]) -> None:
    """Drop what Dynamo compiled for ``fn`` (only it): the next call of ``fn`` traces afresh."""
    import torch

    torch._dynamo.eval_frame.remove_from_cache(fn)


# torch._inductor: compiling a captured graph into an artifact, saving and loading it


def standalone_compile(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    inductor_options: Mapping[str, Any] | None = None,
) -> Any:
    """Compile ``gm`` for inputs shaped like ``example_inputs`` (static shapes), with Inductor's
    settings changed by ``inductor_options`` (``{"max_autotune": True}``) for this compile; a
    ``CompiledArtifact`` that loads with no Dynamo and no guards.

    torch's own ``options`` are ``compile_fx``'s keyword arguments (torch 2.8 to 2.13), not
    Inductor settings: those go in as its ``config_patches`` (``options={"max_autotune": True}``
    would be a TypeError)."""
    from torch._inductor import standalone_compile as compile_graph

    options = {"config_patches": dict(inductor_options)} if inductor_options else None
    return compile_graph(gm, example_inputs, dynamic_shapes="from_example_inputs", options=options)


def inductor_settings() -> Mapping[str, Any]:
    """Every Inductor setting by its dotted name (``max_autotune``, ``triton.cudagraphs``), with
    its current value; imports Inductor's config (about a second on a fresh process)."""
    from torch._inductor import config

    return config.get_config_copy()


def import_compiler() -> None:
    """Import what ``standalone_compile`` and an artifact's load need (Dynamo, Inductor, and
    Triton where it is installed), without compiling anything: a compile worker does it before
    its job comes, the warm loader's thread before its first load. ``torch._dynamo`` first: the
    root by which apps' libraries enter too, so that threads importing both never take their
    import locks in opposite orders (``warm_loader.py``)."""
    import torch._dynamo
    import torch._inductor.compile_fx
    import torch._inductor.standalone_compile  # noqa: F401

    with contextlib.suppress(ImportError):  # CPU builds of torch come without Triton
        import triton  # noqa: F401


def load_compiled_artifact(path: str, format: str) -> Any:
    """A saved ``CompiledArtifact`` (``format``: ``"binary"`` or ``"unpacked"``)."""
    from torch._inductor import CompiledArtifact

    return CompiledArtifact.load(path=path, format=format)


def save_compiled_artifact(artifact: Any, path: str, format: str) -> None:
    artifact.save(path=path, format=format)


def inductor_vec_isa_ok() -> bool | None:
    """Inductor's ``cpp.vec_isa_ok`` setting: None means "probe the CPU"."""
    from torch._inductor import config

    return config.cpp.vec_isa_ok


def patched_inductor_config(changes: dict[str, Any]) -> AbstractContextManager[None]:
    """Inductor's settings with ``changes`` (dotted names) for the length of a ``with``."""
    from torch._inductor import config

    return config.patch(changes)


def torch_key_setter() -> Callable[[bytes], None] | None:
    """``torch_key.set``, which hands Inductor the hash of torch's sources computed elsewhere;
    None where this torch has none (or no Inductor)."""
    try:
        from torch._inductor import codecache
    except ImportError:
        return None
    return getattr(codecache.torch_key, "set", None)


def torch_key() -> bytes:
    """Inductor's hash of torch's installed sources (computed once per process, cached)."""
    from torch._inductor import codecache

    return codecache.torch_key()


def replace_autotune_cache_create(
    replacement: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> None:
    """Make ``AutotuneCache.create(inductor_meta, filename, configs_hash)``, a staticmethod,
    ``replacement(original)``. ImportError, KeyError or AttributeError where it is not there
    (nothing is changed then)."""
    from torch._inductor.runtime.autotune_cache import AutotuneCache

    original = AutotuneCache.__dict__["create"].__func__
    AutotuneCache.create = staticmethod(replacement(original))


# torch.cuda internals


def cuda_in_bad_fork() -> bool:
    """Whether torch refuses CUDA in this process: a child forked after its parent asked
    ``torch.cuda`` (asked in a probe child)."""
    import torch

    return torch.cuda._is_in_bad_fork()


def clear_cublas_workspaces() -> bool:
    """Drop the cuBLAS workspaces torch keeps per (handle, stream) (its caching allocator gets
    them back, and ``empty_cache`` the driver); the next matmul on a stream allocates its own
    again. False where this torch has no such call (a CPU build)."""
    import torch

    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is None:
        return False
    clear()
    return True


# Triton


def triton_key() -> str:
    """Triton's hash of its sources and compiler library (cached per process by Triton)."""
    from triton.runtime.cache import triton_key as compute

    return compute()
