"""Where torch.compile spent its time in this process, from torch's own counters.

Dynamo's share (bytecode tracing, guards) is ``_compile.compile_inner`` minus the backend call
(``OutputGraph.call_user_compiler``: AOTAutograd + Inductor, cache hits included). Runtime
autotuning shows up as ``CachingAutotuner.benchmark_all_configs``. Never imports torch: a process
that has not loaded it has spent nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from minifal.compiled import torch_internals


@dataclass(frozen=True)
class CompileTimes:
    dynamo_s: float  # tracing and guards
    backend_s: float  # AOTAutograd + Inductor (a cache hit is a quick load)
    autotune_s: float  # Triton benchmarking at run time
    dynamo_graphs: int  # graphs Dynamo handed to a backend

    def since(self, earlier: CompileTimes) -> CompileTimes:
        return CompileTimes(
            dynamo_s=round(self.dynamo_s - earlier.dynamo_s, 3),
            backend_s=round(self.backend_s - earlier.backend_s, 3),
            autotune_s=round(self.autotune_s - earlier.autotune_s, 3),
            dynamo_graphs=self.dynamo_graphs - earlier.dynamo_graphs,
        )


def compile_times() -> CompileTimes:
    if not torch_internals.dynamo_imported():
        return CompileTimes(0.0, 0.0, 0.0, 0)
    try:
        compilation_time_metrics = torch_internals.dynamo_time_metrics()
        stats = torch_internals.dynamo_counters("stats")
    except ImportError:
        return CompileTimes(0.0, 0.0, 0.0, 0)

    def total(name: str) -> float:
        return float(sum(compilation_time_metrics.get(name, ())))

    autotune = sum(
        sum(values)
        for name, values in compilation_time_metrics.items()
        if "benchmark_all_configs" in name
    )
    backend = total("OutputGraph.call_user_compiler")
    return CompileTimes(
        dynamo_s=max(0.0, total("_compile.compile_inner") - backend),
        backend_s=backend,
        autotune_s=float(autotune),
        dynamo_graphs=int(stats.get("unique_graphs", 0)),
    )
