"""``PrecompiledModule``: the dispatch, which artifact (or fallback) serves each call signature.

Each call is flattened and its signature computed (a few microseconds). A signature seen before
goes straight to what served it last time: a loaded or freshly compiled artifact, called with the
live module's parameters and buffers and the call's tensors, or the fallback. A new signature is
resolved once, under a lock: a loaded artifact of this module and signature, else (while the
``precompiled_modules`` block is open) a capture and compile that is saved for publishing, else
the fallback: eager (the default) or plain ``torch.compile``. A call is never answered by an
artifact made for another signature, so an uncovered call is slower, never wrong.

Serving while compiling (the block's default), a new signature with no artifact yet is not
compiled in the call: it is answered eagerly (from a CUDA graph of the eager module where asked)
and handed to the block, whose switchover (``switchover.py``) later installs an artifact for it.
An install is one assignment in the signature's slot, made once the artifact matched eager and
ran its first call: a call in flight finishes on what it started with, the next one runs the
artifact, and none sees half of it.

Its block (``session.py``) hands it the three parts it asks: the warm loader (which artifact is
loaded for a signature), the compile pool (whether compiling is still allowed; workers) and the
artifact store (where a fresh artifact is saved for publishing).

With ``cuda_graphs=True`` each artifact's CUDA calls are also captured into a CUDA graph and
replayed (``minifal.compiled.cuda_graphs``); the fallback is not. ``inductor_options``
(``inductor_options.py``) go to every compile of the module's calls (here, in a worker, in the
switchover, and a ``"compile"`` fallback's ``torch.compile``) and into its digest: its
artifacts are its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch

from minifal.compiled import torch_internals
from minifal.compiled.call_signature import (
    CallSignature,
    FlatCall,
    call_signature,
    flatten_call,
)
from minifal.compiled.cuda_graphs import GraphedCall, WeightSlots, capturable_call
from minifal.compiled.precompiled.artifact_store import ArtifactStore
from minifal.compiled.precompiled.compile_phase import CompilePhase
from minifal.compiled.precompiled.compile_pool import CompilePool
from minifal.compiled.precompiled.graph_compile import (
    CapturedCall,
    CompiledCall,
    NotPrecompilable,
    capture_call,
    check_outputs,
    compile_captured,
)
from minifal.compiled.precompiled.inductor_options import checked_options
from minifal.compiled.precompiled.structure import module_digest
from minifal.compiled.precompiled.warm_loader import LoadedArtifact, WarmLoader
from minifal.compiled.wrapped_module import WrappedModule

logger = logging.getLogger("minifal.precompiled")

FALLBACKS = ("eager", "compile")

_Runner = Callable[[FlatCall], Any]
_TensorsRunner = Callable[[list[torch.Tensor]], Any]
_NOT_RUN = object()  # what _resolve returns when it did not run the call itself


class InputBinder:
    """Rebuilds a graph's flat inputs from an input plan: the call's tensors, the live weights.

    Weights are looked up at every call (a few hundred dict lookups, tens of microseconds), so a
    module whose parameters were replaced (``load_state_dict(assign=True)``, LoRA fusing) is
    still called with what it holds now.
    """

    def __init__(self, module: torch.nn.Module, plan: list[str]) -> None:
        self._slots: list[tuple[Any, str, str] | int] = []
        for entry in plan:
            if entry.startswith("@"):
                self._slots.append(int(entry[1:]))
                continue
            kind, _, name = entry.partition(":")
            owner_name, _, attr = name.rpartition(".")
            table = "_parameters" if kind == "p" else "_buffers"
            try:
                owner = module.get_submodule(owner_name) if owner_name else module
            except AttributeError:
                owner = None
            if owner is None or getattr(owner, table).get(attr) is None:
                raise NotPrecompilable(f"the module has no {table[1:-1]} {name!r}")
            self._slots.append((owner, table, attr))

    def bind(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            tensors[slot] if isinstance(slot, int) else getattr(slot[0], slot[1])[slot[2]]
            for slot in self._slots
        ]


class PrecompiledModule(WrappedModule):
    """Wraps ``module``; its calls dispatch by signature (see the module docstring)."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        loader: WarmLoader,
        compiles: CompilePool,
        store: ArtifactStore,
        fallback: str = "eager",
        cuda_graphs: bool = False,
        inductor_options: Mapping[str, Any] | None = None,
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback={fallback!r}: expected one of {FALLBACKS}")
        options = checked_options(inductor_options)  # a ValueError before anything is wrapped
        super().__init__(module)
        self.inductor_options = options
        self._loader = loader
        self._compiles = compiles
        self._store = store
        self._fallback = fallback
        self._cuda_graphs = cuda_graphs
        self._digest = module_digest(module, self.inductor_options)
        self._runners: dict[str, _Runner] = {}
        self._lock = threading.Lock()
        self._compiled_fallback: Callable[..., Any] | None = None
        self.resolutions: dict[str, str] = {}  # signature label -> "loaded" | "compiled" | fallback

    @property
    def module_digest(self) -> str:
        return self._digest

    @property
    def fallback(self) -> str:
        return self._fallback

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        call = flatten_call(args, kwargs)
        signature = call_signature(call, torch.is_grad_enabled(), self._orig_mod.training)
        runner = self._runners.get(signature.digest)
        if runner is not None:
            return runner(call)
        with self._lock:
            runner = self._runners.get(signature.digest)
            if runner is not None:
                return runner(call)
            runner, result = self._resolve(call, signature)
            self._runners[signature.digest] = runner
        return result if result is not _NOT_RUN else runner(call)

    def _resolve(self, call: FlatCall, signature: CallSignature) -> tuple[_Runner, Any]:
        loaded = self._loader.loaded_artifact(self._digest, signature.digest)
        if loaded is not None:
            try:
                runner = self._graphed(
                    _artifact_runner(
                        loaded.artifact,
                        InputBinder(self._orig_mod, loaded.meta.input_plan),
                        loaded.meta.out_spec,
                    ),
                    call,
                    signature,
                    capture_in=self._loader.run_warmed if loaded.first_called else None,
                )
            except NotPrecompilable as exc:
                logger.warning(
                    "precompiled %s: artifact for %s unusable (%s)",
                    self._name,
                    signature.label,
                    exc,
                )
            else:
                self.resolutions[signature.label] = "loaded"
                return runner, _NOT_RUN
        if self._compiles.deferring:
            self._compiles.defer(self, self._name, call, signature)
            self.resolutions[signature.label] = "eager, switching"
            return self._eager_runner(call, signature), _NOT_RUN
        if self._compiles.accepting:
            try:
                return self._compile(call, signature)
            except NotPrecompilable as exc:
                logger.warning(
                    "precompiled %s: %s cannot be precompiled (%s): runs %s",
                    self._name,
                    signature.label,
                    exc,
                    self._fallback,
                )
        else:
            logger.warning(
                "precompiled %s: %s was not covered by warmup: runs %s",
                self._name,
                signature.label,
                self._fallback,
            )
        self.resolutions[signature.label] = self._fallback
        return self._fallback_runner(), _NOT_RUN

    def _compile(self, call: FlatCall, signature: CallSignature) -> tuple[_Runner, Any]:
        """Capture ``call``; compile it here, or in a worker (answered eagerly meanwhile).

        Its ``precompiled.compile`` phase starts here; the save ends it, or the exception."""
        in_worker = self._compiles.workers > 0
        phase = CompilePhase(self._store.cache_key, self._name, signature.label, in_worker)
        try:
            captured, result = capture_call(self._orig_mod, call, self.inductor_options)
            if in_worker:
                try:
                    self._compiles.submit(self, self._name, call, signature, captured, phase)
                except NotPrecompilable as exc:
                    logger.info("precompiled %s: compiling here (%s)", self._name, exc)
                    phase = phase.moved_inline(exc)
                else:
                    self.resolutions[signature.label] = "compiling"
                    return self._target_runner(self._orig_mod), result
            compiled = compile_captured(captured)
            runner = self._compiled_runner(call, signature, compiled)
        except BaseException as exc:
            phase.failed(exc)
            raise
        self._save(signature, compiled, phase)
        return runner, result

    def capture(self, call: FlatCall) -> CapturedCall:
        """``call``'s graph (Dynamo), and eager's output to check a compile against."""
        return capture_call(self._orig_mod, call, self.inductor_options)[0]

    def install(
        self,
        call: FlatCall,
        signature: CallSignature,
        compiled: CompiledCall,
        phase: CompilePhase,
    ) -> None:
        """Serve ``signature`` from ``compiled`` from now on, once it ran ``call`` (its first
        call, and CUDA graph capture, happen here, not in a request); save it for publishing,
        which ends its compile's ``phase`` (a failure leaves that to the caller)."""
        self._switch(call, signature, self._compiled_runner(call, signature, compiled))
        self._save(signature, compiled, phase)

    def install_loaded(
        self, call: FlatCall, signature: CallSignature, loaded: LoadedArtifact
    ) -> float:
        """Serve ``signature`` from ``loaded`` (another runner's) once its output on ``call``
        matched eager's; returns the largest difference. :class:`NotPrecompilable` if not."""
        run = _artifact_runner(
            loaded.artifact,
            InputBinder(self._orig_mod, loaded.meta.input_plan),
            loaded.meta.out_spec,
        )
        args, kwargs = call.rebuild(tuple(call.tensors))
        expected = torch_internals.tree_leaves(self._orig_mod(*args, **kwargs))
        try:
            got = torch_internals.tree_leaves(run(call.tensors))
        except Exception as exc:
            raise NotPrecompilable(f"the artifact failed: {type(exc).__name__}: {exc}") from exc
        difference = check_outputs(got, expected)
        self._switch(call, signature, self._graphed(run, call, signature))
        self.resolutions[signature.label] = "loaded"
        return difference

    def _switch(self, call: FlatCall, signature: CallSignature, runner: _Runner) -> None:
        """Run ``runner`` once, then make it the one that serves ``signature``."""
        try:
            runner(call)
        except Exception as exc:
            raise NotPrecompilable(f"its first call failed: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._runners[signature.digest] = runner

    def use_fallback(self, signature: CallSignature) -> None:
        """Serve ``signature`` by the fallback from now on (its compile failed); an eager
        fallback keeps the eager runner that served it meanwhile (graphed, where asked)."""
        with self._lock:
            if self._fallback != "eager" or signature.digest not in self._runners:
                self._runners[signature.digest] = self._fallback_runner()
        self.resolutions[signature.label] = self._fallback

    def _compiled_runner(
        self, call: FlatCall, signature: CallSignature, compiled: CompiledCall
    ) -> _Runner:
        return self._graphed(
            _artifact_runner(
                compiled.artifact,
                InputBinder(self._orig_mod, compiled.input_plan),
                compiled.out_spec,
            ),
            call,
            signature,
        )

    def _save(self, signature: CallSignature, compiled: CompiledCall, phase: CompilePhase) -> None:
        """Save a compile for publishing; its ``precompiled.compile`` ``phase`` ends."""
        self._store.save(type(self._orig_mod), self._digest, signature, compiled, phase)
        self.resolutions[signature.label] = "compiled"

    def _graphed(
        self,
        run: _TensorsRunner,
        call: FlatCall,
        signature: CallSignature,
        capture_in: Callable[[Callable[[], None]], None] | None = None,
    ) -> _Runner:
        """``run`` replayed from a CUDA graph when asked and the call allows it; ``capture_in``
        runs the first capture in the thread that made the artifact's placeholder call."""
        if not (self._cuda_graphs and capturable_call(call)):
            return lambda flat: run(flat.tensors)
        graphed = GraphedCall(
            run,
            WeightSlots(self._orig_mod),
            f"{self._name} {signature.label}",
            capturable=True,
            capture_in=capture_in,
        )
        return lambda flat: graphed(flat.tensors)

    def _eager_runner(self, call: FlatCall, signature: CallSignature) -> _Runner:
        """The module as it is, for this signature: replayed from a CUDA graph where asked."""
        module = self._orig_mod

        def run(tensors: list[torch.Tensor]) -> Any:
            args, kwargs = call.rebuild(tuple(tensors))
            return module(*args, **kwargs)

        return self._graphed(run, call, signature)

    def _fallback_runner(self) -> _Runner:
        if self._fallback == "compile":
            if self._compiled_fallback is None:
                self._compiled_fallback = torch.compile(
                    self._orig_mod, dynamic=False, options=self.inductor_options or None
                )
            return self._target_runner(self._compiled_fallback)
        return self._target_runner(self._orig_mod)

    @staticmethod
    def _target_runner(target: Callable[..., Any]) -> _Runner:
        def run(call: FlatCall) -> Any:
            args, kwargs = call.rebuild(tuple(call.tensors))
            return target(*args, **kwargs)

        return run

    @property
    def _name(self) -> str:
        return type(self._orig_mod).__name__


def _artifact_runner(artifact: Any, binder: InputBinder, out_spec_text: str) -> _TensorsRunner:
    out_spec = torch_internals.treespec_loads(out_spec_text)

    def run(tensors: list[torch.Tensor]) -> Any:
        outputs = artifact(*binder.bind(tensors))
        return torch_internals.tree_unflatten(list(outputs), out_spec)

    return run
