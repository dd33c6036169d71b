"""Suspend and resume one GPU process, side by side: today's whole driver checkpoint (as is, and
after ``empty_cache``) against offload before checkpoint (``minifal.offload``: the weights in an
arena at fixed addresses, copied to pinned host memory by the process itself, the checkpoint
carrying only the rest).

    python benchmarks/suspend_resume_arena.py --out /tmp/arena-bench

No gateway, no fastapi or diffusers: this script is the controller (what the gateway does, with
minifal's ``cuda_checkpoint`` on a child's pid: the driver's checkpoint API is for another
process) and a worker child holding a model of ``--gib`` GiB of random fp16 weights (a linear
tower like a text encoder, a conv tower like a UNet, a VAE-like decoder up to 512x512 whose
activations make a CUDA-graph pool), called through minifal's ``cuda_graphed`` (one captured
graph, replayed). ``--cache-gib`` of freed blocks stay in torch's allocator, as a served pipeline
leaves them. Per cycle: prepare (nothing, ``empty_cache``, or the offload), lock + checkpoint,
host memory (``VmRSS``) before and after, GPU memory while suspended (``nvidia-smi``, first
cycle), restore + unlock, copy back, first call (graph replay, output hashed; every hash must
equal the one before any suspension).

Methods (each in try/except; an error is reported and the next method runs, in a fresh worker
if needed):
- worker without arena: ``checkpoint`` (today), ``checkpoint+empty_cache``,
  ``checkpoint+release`` (``release_for_checkpoint``: the CUDA graph, cuBLAS workspaces and
  cached blocks dropped first);
- worker whose weights were placed in an arena before the graph was captured: ``arena`` (pinned
  host copy, address range kept reserved), ``arena+release`` (the offload, then the graph
  released as before a late checkpoint: the first call after the resume runs the model as it is
  and captures again, so its hash is the eager one's, and a second call replays the new graph,
  whose hash must be the replayed one's), ``arena-pageable`` (the host copy not pinned),
  ``arena-release-va`` (the address range freed too and reserved again at the same start),
  ``arena-fallback`` (no offload: the whole checkpoint with the arena mapped, what the gateway
  does when a runner cannot offload).
Prints a table; writes ``<out>/suspend_resume_arena.json``. Bounded by ``--budget-s`` (cycles
and methods past it are skipped and say so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
PLAIN = ("checkpoint", "checkpoint+empty_cache", "checkpoint+release")
ARENA = ("arena", "arena+release", "arena-pageable", "arena-release-va", "arena-fallback")
RELEASING = ("checkpoint+release", "arena+release")
"""Methods whose first call after the resume captures the graph again."""
PREPARE = {
    "checkpoint": "none",
    "checkpoint+empty_cache": "empty_cache",
    "checkpoint+release": "release",
    "arena": "offload",
    "arena+release": "offload+release",
    "arena-pageable": "offload",
    "arena-release-va": "offload",
    "arena-fallback": "empty_cache",
}
REPLY_TIMEOUT_S = 90.0


def import_minifal_leaves() -> None:
    """minifal's package without its root (which imports fastapi, absent on the GPU host):
    only the modules named later load (offload, cuda_graphs, cuda_checkpoint: torch/stdlib)."""
    package = types.ModuleType("minifal")
    package.__path__ = [str(REPO / "minifal")]
    sys.modules.setdefault("minifal", package)


# -- the worker (a child process: the model, the arena, the calls) --------------------------------


def build_model(gib: float) -> Any:
    import torch
    from torch import nn

    class Decoder(nn.Module):
        """VAE-like: 64x64 latents up to 512x512, channels 512 -> 128."""

        def __init__(self) -> None:
            super().__init__()
            plan = [(512, 512), (512, 512), (512, 256), (256, 128)]
            self.stages = nn.ModuleList(
                nn.ModuleList([nn.Conv2d(i, o, 3, padding=1), nn.Conv2d(o, o, 3, padding=1)])
                for i, o in plan
            )
            self.out = nn.Conv2d(128, 3, 3, padding=1)

        def forward(self, x: Any) -> Any:
            for index, (first, second) in enumerate(self.stages):
                x = second(torch.nn.functional.silu(first(x)))
                if index < len(self.stages) - 1:
                    x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            return self.out(x)

    class Model(nn.Module):
        def __init__(self, linears: int) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(1280, 1280, 3, padding=1) for _ in range(16))
            self.linears = nn.ModuleList(nn.Linear(4096, 4096) for _ in range(linears))
            self.register_buffer("scale", torch.full((4096,), 0.5))
            self.to_latent = nn.Linear(4096, 512)
            self.decoder = Decoder()

        def forward(self, image: Any, tokens: Any) -> Any:
            for conv in self.convs:
                image = torch.tanh(conv(image))
            for linear in self.linears:
                tokens = torch.tanh(linear(tokens)) * self.scale + tokens * 0.5
            latent = self.to_latent(tokens).t().reshape(1, 512, 64, 64)
            latent = latent + image.mean(dim=1, keepdim=True)[:, :, :1, :1]
            return self.decoder(latent)

    fixed = 16 * 1280 * 1280 * 9 + 4096 * 512 + 40_000_000  # convs, to_latent, decoder (about)
    linears = max(1, int((gib * GIB / 2 - fixed) / (4096 * 4096)))
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # built in fp16 on the GPU: no fp32 copies cached
    try:
        with torch.device("cuda"):
            model = Model(linears).eval()
            inputs = (torch.randn(1, 1280, 32, 32), torch.randn(4096, 4096))
    finally:
        torch.set_default_dtype(default)
    return model, inputs


class Worker:
    """Answers the controller's commands (JSON lines), one at a time."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        self.model = self.graphed = self.inputs = None
        self.arenas = None
        self.reference: str | None = None

    def build(self, gib: float, cache_gib: float, arena: bool) -> dict[str, Any]:
        torch = self.torch
        start = time.perf_counter()
        self.model, self.inputs = build_model(gib)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        built = time.perf_counter()
        info: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        info["live_tensor_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
        if arena:
            from minifal.offload.suspension import PROCESS_ARENAS

            self.arenas = PROCESS_ARENAS
            placed = PROCESS_ARENAS.keep_addresses(self.model)
            info["arena_bytes"] = None if placed is None else placed.size
            info["arena_place_s"] = time.perf_counter() - built
            if placed is None:
                raise RuntimeError("keep_addresses fell back (its reason is in the log above)")
        if cache_gib:
            scratch = torch.empty(int(cache_gib * GIB), dtype=torch.uint8, device="cuda")
            del scratch  # stays reserved in the caching allocator, as a pipeline leaves it
        try:
            from minifal.compiled.cuda_graphs import cuda_graphed

            self.graphed = cuda_graphed(self.model)
        except ImportError as error:
            info["graph_wrapper_error"] = str(error)
            self.graphed = self.model
        first = self.call()  # runs, then captures
        second = self.call()  # replays
        self.reference = second["hash"]
        info.update(
            build_s=built - start,
            eager_hash=first["hash"],
            reference_hash=self.reference,
            allocated_bytes=torch.cuda.memory_allocated(),
            reserved_bytes=torch.cuda.memory_reserved(),
            total_s=time.perf_counter() - start,
        )
        return info

    def call(self) -> dict[str, Any]:
        torch = self.torch
        start = time.perf_counter()
        with torch.inference_mode():
            output = self.graphed(*self.inputs)
            data = output.float().cpu().numpy().tobytes()
        seconds = time.perf_counter() - start
        captures = getattr(self.graphed, "captured_signatures", None)
        return {
            "seconds": seconds,
            "hash": hashlib.sha256(data).hexdigest()[:16],
            "captured_signatures": captures,
        }

    def prepare(self, mode: str, release_addresses: bool, pin_host: bool) -> dict[str, Any]:
        torch = self.torch
        torch.cuda.synchronize()
        before = {
            "allocated": torch.cuda.memory_allocated(),
            "reserved": torch.cuda.memory_reserved(),
        }
        start = time.perf_counter()
        answer: dict[str, Any] = {"before": before}
        if mode == "empty_cache":
            torch.cuda.empty_cache()
        elif mode == "release":
            from minifal.offload.suspension import PROCESS_ARENAS

            answer["released"] = PROCESS_ARENAS.release_for_checkpoint().as_json()
        elif mode.startswith("offload"):
            for arena in self.arenas.arenas:
                arena.release_addresses = release_addresses
                if arena.memory.pin_host != pin_host:  # a benchmark's switch: a new host buffer
                    if arena._host is not None:
                        arena.memory.free_host_buffer(arena._host)
                        arena._host = None
                    arena.memory.pin_host = pin_host
            answer["offloaded"] = self.arenas.prepare_for_checkpoint().as_json()
            if mode == "offload+release":
                answer["released"] = self.arenas.release_for_checkpoint().as_json()
        answer["seconds"] = time.perf_counter() - start
        answer["after"] = {
            "allocated": torch.cuda.memory_allocated(),
            "reserved": torch.cuda.memory_reserved(),
        }
        return answer

    def restore(self) -> dict[str, Any]:
        from minifal.offload.suspension import PROCESS_ARENAS

        return PROCESS_ARENAS.restore_after_checkpoint()  # also reopens the gate a release closed


def worker_main() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else prints goes to stderr
    import_minifal_leaves()
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            command = request.pop("cmd")
            if command == "quit":
                break
            answer = {"ok": True, **getattr(worker, command)(**request)}
        except Exception as error:  # the controller reports it
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        protocol.write(json.dumps(answer) + "\n")
    return 0


# -- the controller (what the gateway does) -------------------------------------------------------


class Child:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.process.pid

    def ask(self, cmd: str, timeout: float = REPLY_TIMEOUT_S, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the worker did not answer {cmd} within {timeout:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited (code {self.process.poll()}) during {cmd}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"{cmd}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def memory_of(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPin", "VmLck"):
                fields[name] = int(value.split()[0]) * 1024
    with open("/proc/meminfo") as meminfo:  # the host's view, wherever the driver keeps it
        for line in meminfo:
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                fields[name] = int(value.split()[0]) * 1024
    return fields


def gpu_mib(pid: int) -> int | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = (line.split(",") for line in out.splitlines() if line.strip())
    return sum(int(used) for owner, used in rows if int(owner) == pid)


def one_cycle(driver: Any, child: Child, method: str, first: bool) -> dict[str, Any]:
    release, pin = method == "arena-release-va", method != "arena-pageable"
    cycle: dict[str, Any] = {}
    cycle["prepare"] = child.ask(
        "prepare", mode=PREPARE[method], release_addresses=release, pin_host=pin
    )
    if first:
        cycle["gpu_mib_before_checkpoint"] = gpu_mib(child.pid)
    cycle["rss_before"] = memory_of(child.pid)
    suspend = driver.suspend(child.pid, 10.0)
    cycle["lock_s"], cycle["checkpoint_s"] = suspend.lock_s, suspend.checkpoint_s
    cycle["rss_suspended"] = memory_of(child.pid)
    if first:
        cycle["gpu_mib_suspended"] = gpu_mib(child.pid)
    start = time.perf_counter()
    resume = driver.resume(child.pid)
    cycle["restore_s"], cycle["unlock_s"] = resume.restore_s, resume.unlock_s
    cycle["copy_back"] = child.ask("restore")
    call = child.ask("call")
    cycle["first_answer_s"] = time.perf_counter() - start
    cycle["call_s"], cycle["hash"] = call["seconds"], call["hash"]
    cycle["captured_signatures"] = call["captured_signatures"]
    if method in RELEASING:  # that first call ran the model and captured again: now a replay
        replay = child.ask("call")
        cycle["replay_s"], cycle["replay_hash"] = replay["seconds"], replay["hash"]
    before, suspended = cycle["rss_before"]["VmRSS"], cycle["rss_suspended"]["VmRSS"]
    offloaded = cycle["prepare"].get("offloaded") or {}
    cycle["checkpoint_host_bytes"] = suspended - before
    cycle["checkpoint_mem_available_drop"] = (
        cycle["rss_before"]["MemAvailable"] - cycle["rss_suspended"]["MemAvailable"]
    )
    cycle["pinned_host_bytes"] = offloaded.get("host_bytes", 0)
    cycle["held_host_bytes"] = cycle["checkpoint_host_bytes"] + cycle["pinned_host_bytes"]
    released = cycle["prepare"].get("released") or {}
    cycle["graphs_released"] = released.get("graphs")
    cycle["released_bytes"] = released.get("released_bytes")
    return cycle


def recover(driver: Any, child: Child) -> bool:
    """After an error mid-cycle: the worker running and whole again, or False."""
    try:
        if driver.state(child.pid).name == "CHECKPOINTED":
            driver.resume(child.pid)
        child.ask("restore", timeout=30)
        child.ask("call", timeout=30)
        return True
    except Exception:
        return False


def run_method(
    driver: Any, child: Child, method: str, cycles: int, deadline: float, built: dict[str, Any]
) -> dict[str, Any]:
    """``cycles`` of ``method``; each first call's hash must be the replayed one's before any
    suspension (the eager one's where the graph was released, and then the replay's again)."""
    reference = built["eager_hash"] if method in RELEASING else built["reference_hash"]
    result: dict[str, Any] = {"method": method, "cycles": [], "error": None}
    for number in range(cycles):
        if time.monotonic() > deadline:
            result["skipped"] = f"time budget: {number} of {cycles} cycles run"
            break
        try:
            cycle = one_cycle(driver, child, method, first=number == 0)
        except Exception as error:
            result["error"] = f"cycle {number + 1}: {type(error).__name__}: {error}"
            result["recovered"] = recover(driver, child)
            break
        result["cycles"].append(cycle)
        print(
            f"  {method} {number + 1}: first answer {cycle['first_answer_s']:.3f} s,"
            f" checkpoint {cycle['checkpoint_s']:.3f} s, restore {cycle['restore_s']:.3f} s,"
            f" held {cycle['held_host_bytes'] / GIB:.2f} GiB (MemAvailable fell by"
            f" {cycle['checkpoint_mem_available_drop'] / GIB:.2f} GiB in the checkpoint),"
            f" hash {cycle['hash']}",
            flush=True,
        )
    done = result["cycles"]
    result["same_hash"] = bool(done) and all(
        c["hash"] == reference
        and c.get("replay_hash", built["reference_hash"]) == built["reference_hash"]
        for c in done
    )
    keys = ("first_answer_s", "checkpoint_s", "restore_s", "call_s", "held_host_bytes")
    for key in (*keys, "released_bytes"):
        values = [c[key] for c in done if c.get(key) is not None]
        result[f"median_{key}"] = statistics.median(values) if values else None
    result["max_first_answer_s"] = max((c["first_answer_s"] for c in done), default=None)
    result["median_offload_s"] = median([c["prepare"]["seconds"] for c in done])
    result["median_copy_back_s"] = median([c["copy_back"].get("seconds", 0.0) for c in done])
    return result


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_worker_methods(
    driver: Any,
    methods: list[str],
    arena: bool,
    args: argparse.Namespace,
    deadline: float,
    report: dict[str, Any],
) -> None:
    """One worker (fresh again after an error it cannot recover from) for ``methods``; each
    method's result goes into ``report["results"]`` and the report is saved at once (a run cut
    short keeps what it measured)."""
    results: list[dict[str, Any]] = report["results"]
    worker = "worker_arena" if arena else "worker_plain"
    child: Child | None = None
    build_error = None
    try:
        for method in methods:
            if build_error:
                results.append({"method": method, "error": build_error, "cycles": []})
                continue
            if time.monotonic() > deadline:
                results.append({"method": method, "skipped": "time budget", "cycles": []})
                continue
            if child is None:
                child = Child()
                try:
                    report[worker] = child.ask(
                        "build", timeout=120, gib=args.gib, cache_gib=args.cache_gib, arena=arena
                    )
                except Exception as error:
                    build_error = str(error)
                    results.append({"method": method, "error": build_error, "cycles": []})
                    child.close()
                    child = None
                    continue
                print(f"{worker}: {json.dumps(report[worker])}", flush=True)
            cycles = args.cycles if method == "arena" else args.other_cycles
            result = run_method(driver, child, method, cycles, deadline, report[worker])
            results.append(result)
            save(report, args.out)
            if result["error"] and not result.get("recovered"):
                child.close()
                child = None
    finally:
        if child is not None:
            child.close()


def save(report: dict[str, Any], out: str) -> None:
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, default=str)
    (directory / "suspend_resume_arena.json").write_text(text)


def cell(result: dict[str, Any], key: str, width: int) -> str:
    value = result.get(key)
    return f"{value:{width}.3f}" if value is not None else " " * (width - 1) + "-"


def print_table(results: list[dict[str, Any]], live: int | None) -> None:
    print()
    print(
        f"{'method':24} {'n':>2} {'offload':>8} {'ckpt':>7} {'restore':>8} {'copy back':>9}"
        f" {'call':>6} {'1st answer':>10} {'max':>6} {'held GiB':>8} {'x live':>6}"
        f" {'to ckpt':>7} {'GPU MiB':>7} {'freed':>6} same"
    )
    for result in results:
        if not result.get("cycles"):
            why = result.get("error") or result.get("skipped")
            print(f"{result['method']:24}  -  {why}")
            continue

        held = result["median_held_host_bytes"]
        ratio = f"{held / live:6.2f}" if live else "     -"
        gpu = result["cycles"][0].get("gpu_mib_suspended")
        left = result["cycles"][0].get("gpu_mib_before_checkpoint")
        freed = result.get("median_released_bytes")
        print(
            f"{result['method']:24} {len(result['cycles']):2} {cell(result, 'median_offload_s', 8)}"
            f" {cell(result, 'median_checkpoint_s', 7)} {cell(result, 'median_restore_s', 8)}"
            f" {cell(result, 'median_copy_back_s', 9)} {cell(result, 'median_call_s', 6)}"
            f" {cell(result, 'median_first_answer_s', 10)} {cell(result, 'max_first_answer_s', 6)}"
            f" {held / GIB:8.2f} {ratio} {left if left is not None else '-':>7}"
            f" {gpu if gpu is not None else '-':>7}"
            f" {'-' if freed is None else f'{freed / GIB:.2f}':>6}"
            f" {result['same_hash']}"
            + (f"  (error: {result['error']})" if result.get("error") else "")
        )
    print(
        "times in s (medians); held: pinned host copy + what the checkpoint added to VmRSS;"
        " to ckpt: the worker's GPU MiB left for the checkpoint (after the offload and the"
        " release); GPU MiB: while suspended (nvidia-smi, first cycle); freed: GiB torch's"
        " allocator gave back in the release (graph pool, cuBLAS workspaces, cached blocks);"
        " +release rows: the first call captures the graph again (its hash: the eager one's)"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="directory for suspend_resume_arena.json (required)")
    parser.add_argument("--gib", type=float, default=2.4, help="weights, GiB (fp16)")
    parser.add_argument("--cache-gib", type=float, default=1.2, help="freed blocks kept cached")
    parser.add_argument("--cycles", type=int, default=10, help="cycles of the arena method")
    parser.add_argument("--other-cycles", type=int, default=3, help="cycles of the others")
    parser.add_argument("--methods", nargs="+", default=[*PLAIN, *ARENA])
    parser.add_argument("--budget-s", type=float, default=180.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main()
    if not args.out:
        parser.error("--out is required")
    started = time.monotonic()
    deadline = started + args.budget_s
    import_minifal_leaves()
    from minifal.fleet.backends.cuda_checkpoint import load_cuda_checkpoint

    driver, why = load_cuda_checkpoint()
    print(f"driver checkpoint API: {why}", flush=True)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "driver": why,
        "arguments": vars(args),
        "results": [],
    }
    if driver is not None:
        plain = [m for m in args.methods if m in PLAIN]
        arena = [m for m in args.methods if m in ARENA]
        if plain:
            run_worker_methods(driver, plain, False, args, deadline, report)
        if arena:
            run_worker_methods(driver, arena, True, args, deadline, report)
    hashes = {
        name: (report.get(name) or {}).get("reference_hash")
        for name in ("worker_plain", "worker_arena")
    }
    report["same_reference_hash_with_and_without_arena"] = (
        None if None in hashes.values() else len(set(hashes.values())) == 1
    )
    report["total_s"] = time.monotonic() - started
    live = (report.get("worker_arena") or report.get("worker_plain") or {}).get("live_tensor_bytes")
    print_table(report["results"], live)
    print(
        f"live tensor bytes {live}; reference hash with and without the arena the same:"
        f" {report['same_reference_hash_with_and_without_arena']}; total"
        f" {report['total_s']:.1f} s",
        flush=True,
    )
    save(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
