"""The warm-start machinery: the compiled-kernel cache (``cache/``, fal's
``synchronized_inductor_cache`` and its store, leases and keys), precompiled modules
(``precompiled/``), CUDA graphs, call signatures and the bytecode cache. Every private torch or
Triton call of minifal is in ``torch_internals.py`` (a torch upgrade starts there).

Imported by ``toolkit`` (which re-exports fal's compilation names: the façade imports the
machinery, never the reverse), by the runner and by apps that use minifal's own APIs
(``minifal.compiled.precompiled``, ``minifal.compiled.cuda_graphs``). It imports ``host`` and
``startup``, never the fleet, the runner or the toolkit.
"""
