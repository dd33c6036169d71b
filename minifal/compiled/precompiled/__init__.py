"""Precompiled modules: warm runners call Inductor artifacts directly, with no Dynamo at all.

fal's ``synchronized_inductor_cache`` shares compiled kernels, but every runner still re-traces
the model with Dynamo (5-15 s a shape for a UNet). Here the first runner captures each warmup
call's graph once, compiles it with ``torch._inductor.standalone_compile`` and publishes one
artifact per input signature through the same shared store; later runners load the artifacts
and dispatch each call by its signature. See docs/compile-cache.md.
"""

from minifal.compiled.precompiled.inductor_options import MAX_AUTOTUNE
from minifal.compiled.precompiled.module import PrecompiledModule
from minifal.compiled.precompiled.session import PrecompiledModules, precompiled_modules

__all__ = ["MAX_AUTOTUNE", "PrecompiledModule", "PrecompiledModules", "precompiled_modules"]
