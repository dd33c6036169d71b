"""Compiled-cache benchmark: cold compile, minifal's warm load, fal's zip, Mega-Cache, N at once.

Every scenario runs in a fresh process (a runner's real start), one after the other, so the numbers
include torch's own process-level work. Default: the SD-Turbo UNet with random weights (real
architecture, ``apps/sd_turbo_configs/full/unet``), fp16 on CUDA, static 512x512 (64x64 latents).

    python benchmarks/compile_cache.py --out results.json                # GPU, full UNet
    python benchmarks/compile_cache.py --model tiny --device cpu --runners 2 --out cpu.json

Scenarios:
  cold            minifal, empty data dir: compiles and publishes; then measures the pack formats
                  (tar, tar.gz, zip of the whole dir; Mega-Cache blob) on the dir it produced
  warm-minifal    a fresh process loading what ``cold`` published (--repeats times)
  warm-fal        fal's way: unzip the whole cache dir into a fresh local dir, then compile
  warm-megacache  ``torch.compiler.load_cache_artifacts`` of the blob, then compile
  concurrent-N    N minifal runners started together on an empty data dir: time to ready of each
  aoti-cold/-warm with --precompile: what skipping Dynamo at start would give: torch.export +
                  AOTInductor package of a wrapper around the UNet, then a fresh process that loads
                  the package and runs it once (no tracing, no guards)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "apps" / "sd_turbo_configs"
CACHE_KEY = "bench/unet"
# SD_TURBO.md's numbers, used when the config file is not in the tree.
FULL_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}


# --------------------------------------------------------------------------- worker (child) side


def _unet_config(model: str) -> dict[str, Any]:
    path = CONFIGS / model / "unet" / "config.json"
    if path.exists():
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    if model == "full":
        return FULL_UNET
    raise SystemExit(f"no UNet config at {path}")


def _build(model: str, device: str) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from diffusers import UNet2DConditionModel

    config = _unet_config(model)
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**config).to(dtype).eval()
    side = 512 // 8
    inputs = (
        torch.randn(1, config["in_channels"], side, side, device=device, dtype=dtype),
        torch.tensor([999], device=device),
        torch.randn(1, 77, config["cross_attention_dim"], device=device, dtype=dtype),
    )
    return unet, inputs


def _compile_and_warm(unet: Any, inputs: tuple[Any, ...], device: str) -> float:
    import torch

    started = time.perf_counter()
    compiled = torch.compile(unet, mode="default", dynamic=False)
    with torch.no_grad():
        compiled(*inputs, return_dict=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _measure_formats(local_root: Path, scratch: Path) -> dict[str, Any]:
    """Pack the dir ``cold`` produced in each format, and unpack it into a fresh dir."""
    from minifal.compiled.cache.manifest import DirScanner
    from minifal.compiled.cache.pack_formats import ALL_FORMATS

    manifest = DirScanner(local_root).scan()
    raw = sum((local_root / p).stat().st_size for p in manifest)
    results: dict[str, Any] = {"files": len(manifest), "raw_bytes": raw}
    for name, fmt in ALL_FORMATS.items():
        archive = scratch / f"pack{fmt.suffix}"
        started = time.perf_counter()
        with open(archive, "wb") as out:
            fmt.pack(local_root, manifest, out)
        pack_s = time.perf_counter() - started
        target = scratch / f"unpack-{name}"
        started = time.perf_counter()
        fmt.unpack(archive.read_bytes(), target)
        unpack_s = time.perf_counter() - started
        results[name] = {"bytes": archive.stat().st_size, "pack_s": pack_s, "unpack_s": unpack_s}
        shutil.rmtree(target, ignore_errors=True)
        archive.unlink()
    return results


def _aoti(mode: str, unet: Any, inputs: tuple[Any, ...], device: str, package: Path) -> dict:
    import torch

    class UNetCall(torch.nn.Module):
        """Plain tensors in and out: what torch.export wants of diffusers' UNet."""

        def __init__(self, unet: Any) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample: Any, timestep: Any, context: Any) -> Any:
            return self.unet(sample, timestep, context, return_dict=False)[0]

    result: dict[str, Any] = {}
    try:
        if mode == "aoti-cold":
            package.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            with torch.no_grad():
                program = torch.export.export(UNetCall(unet), inputs, strict=False)
            result["export_s"] = time.perf_counter() - started
            started = time.perf_counter()
            torch._inductor.aoti_compile_and_package(program, package_path=str(package))
            result["compile_warmup_s"] = time.perf_counter() - started
            result["package_bytes"] = package.stat().st_size
        else:
            started = time.perf_counter()
            runner = torch._inductor.aoti_load_package(str(package))
            result["load_s"] = time.perf_counter() - started
            started = time.perf_counter()
            with torch.no_grad():
                runner(*inputs)
            if device == "cuda":
                torch.cuda.synchronize()
            result["compile_warmup_s"] = time.perf_counter() - started
    except Exception as exc:  # an investigation: a failure is a result to report
        result["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    return result


def _writes_outside_private_dirs(since: float, skip: tuple[str, ...]) -> list[str]:
    """Files this process may have written to shared places (/tmp, $HOME) that the cache misses."""
    found = []
    for top in ("/tmp", os.path.expanduser("~")):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not any(s in d for s in skip)]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if os.path.getmtime(path) > since:
                        found.append(path)
                except OSError:
                    continue
    return sorted(found)[:40]


def _fx_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {k: int(v) for k, v in counters["inductor"].items() if k.startswith("fxgraph")}


def _dynamo_breakdown() -> dict[str, Any]:
    """Where the compile+warmup went, by torch's own timers (seconds per phase)."""
    from torch._dynamo.utils import compile_times

    try:
        names, values = compile_times(repr="csv", aggregate=True)
        return {n: float(v) for n, v in zip(names, values, strict=False)}
    except Exception as exc:  # the breakdown is a nicety; the timings stand without it
        return {"error": repr(exc)}


def run_worker(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    spawned_at = float(os.environ["BENCH_SPAWNED_AT"])
    data = Path(os.environ["MINIFAL_DATA_DIR"])
    import torch

    imported = time.time()
    unet, inputs = _build(args.model, args.device)
    built = time.time()
    result: dict[str, Any] = {
        "mode": mode,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "import_s": imported - spawned_at,
        "build_s": built - imported,
    }
    fal_zip = data / "fal" / f"{CACHE_KEY.replace('/', '_')}.zip"
    blob = data / "megacache.bin"
    if mode in ("cold", "warm-minifal"):
        from minifal.compiled.cache import load_inductor_cache, sync_inductor_cache

        started = time.perf_counter()
        dir_hash = load_inductor_cache(CACHE_KEY)
        result["load_s"] = time.perf_counter() - started
        result["compile_warmup_s"] = _compile_and_warm(unet, inputs, args.device)
        started = time.perf_counter()
        sync_inductor_cache(CACHE_KEY, dir_hash)
        result["sync_s"] = time.perf_counter() - started
        if mode == "cold" and args.measure_formats:
            local_root = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).parent
            scratch = Path(tempfile.mkdtemp(dir=data))
            result["formats"] = _measure_formats(local_root, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            # fal's artifact: the whole inductor dir zipped, for warm-fal
            fal_zip.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            with zipfile.ZipFile(fal_zip, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(local_root.rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(local_root).as_posix())
            result["fal_zip_s"] = time.perf_counter() - started
            started = time.perf_counter()
            artifacts = torch.compiler.save_cache_artifacts()
            if artifacts is not None:
                blob.write_bytes(artifacts[0])
                result["formats"]["megacache"] = {
                    "bytes": len(artifacts[0]),
                    "pack_s": time.perf_counter() - started,
                }
    elif mode == "warm-fal":
        local = Path(tempfile.mkdtemp(prefix="fal-inductor-"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(local / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(local / "triton")
        started = time.perf_counter()
        with zipfile.ZipFile(fal_zip) as archive:
            archive.extractall(local)
        result["load_s"] = time.perf_counter() - started
        result["load_bytes"] = fal_zip.stat().st_size
        result["compile_warmup_s"] = _compile_and_warm(unet, inputs, args.device)
    elif mode == "warm-megacache":
        local = Path(tempfile.mkdtemp(prefix="mega-inductor-"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(local / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(local / "triton")
        started = time.perf_counter()
        torch.compiler.load_cache_artifacts(blob.read_bytes())
        result["load_s"] = time.perf_counter() - started
        result["load_bytes"] = blob.stat().st_size
        result["compile_warmup_s"] = _compile_and_warm(unet, inputs, args.device)
    elif mode in ("aoti-cold", "aoti-warm"):
        result.update(_aoti(mode, unet, inputs, args.device, data / "unet.pt2"))
    else:
        raise SystemExit(f"unknown mode {mode}")
    result["fx"] = _fx_counters()
    if args.probe_writes:
        skip = ("minifal-inductor-", "fal-inductor-", "mega-inductor-", "cc-bench", "ccb", "site")
        result["writes_elsewhere"] = _writes_outside_private_dirs(spawned_at, skip)
        private = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/nonexistent"))
        result["best_config_files"] = len(list(private.rglob("*.best_config")))
    result["dynamo_breakdown"] = _dynamo_breakdown()
    result["ready_s"] = time.time() - spawned_at
    return result


# --------------------------------------------------------------------------- parent side


def _spawn(mode: str, data: Path, args: argparse.Namespace, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MINIFAL_DATA_DIR": str(data), "BENCH_SPAWNED_AT": repr(time.time())}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MINIFAL_EVENTS_FILE"] = str(log.with_suffix(".events.jsonl"))
    command = [sys.executable, "-X", "faulthandler", __file__, "--worker", mode]
    command += ["--model", args.model] + (["--probe-writes"] if args.probe_writes else [])
    command += ["--device", args.device] + (["--measure-formats"] if mode == "cold" else [])
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True
    )


def _collect(process: subprocess.Popen[str], mode: str) -> dict[str, Any]:
    stdout, _ = process.communicate()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"mode": mode, "error": f"exit {process.returncode}", "stdout": stdout[-2000:]}


def _events(log: Path) -> list[dict[str, Any]]:
    from minifal.startup.events import read_events

    keep = ("phase", "duration_s", "details")
    return [{k: e.get(k) for k in keep} for e in read_events(log.with_suffix(".events.jsonl"))]


def run_scenarios(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="cc-bench-"))
    logs = Path(args.logs or work / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    shared = work / "data-sequential"
    runs: list[dict[str, Any]] = []
    plan = ["cold"] + ["warm-minifal"] * args.repeats + ["warm-fal", "warm-megacache"]
    if args.precompile:
        plan += ["aoti-cold", "aoti-warm", "aoti-warm"]
    for i, mode in enumerate(plan):
        if mode not in args.skip:
            log = logs / f"{i:02d}-{mode}.log"
            result = _collect(_spawn(mode, shared, args, log), mode)
            result["events"] = _events(log)
            runs.append(result)
            print(_row(result), flush=True)
    concurrent: list[dict[str, Any]] = []
    if args.runners > 1 and "concurrent" not in args.skip:
        data = work / "data-concurrent"
        procs = [
            _spawn("warm-minifal", data, args, logs / f"concurrent-{n}.log")
            for n in range(args.runners)
        ]
        for n, process in enumerate(procs):
            result = _collect(process, f"concurrent-{n}")
            result["events"] = _events(logs / f"concurrent-{n}.log")
            result["role"] = _role(result["events"])
            concurrent.append(result)
            print(_row(result, f"concurrent {n} ({result['role']})"), flush=True)
    return {"runs": runs, "concurrent": concurrent, "args": vars(args)}


def _role(events: list[dict[str, Any]]) -> str:
    for event in events:
        details = event.get("details") or {}
        if event["phase"] == "compile_cache.wait":
            return "compiled" if details.get("role") == "compile" else "waited+loaded"
        if event["phase"] == "compile_cache.load" and details.get("hit"):
            return "loaded"
    return "?"


def _row(result: dict[str, Any], label: str | None = None) -> str:
    def fmt(name: str) -> str:
        value = result.get(name)
        return f"{value:8.2f}" if isinstance(value, int | float) else f"{'-':>8}"

    fx = result.get("fx", {})
    hits = f"{fx.get('fxgraph_cache_hit', 0)}/{fx.get('fxgraph_cache_miss', 0)}"
    label = label or result["mode"]
    cells = [fmt(n) for n in ("import_s", "load_s", "compile_warmup_s", "sync_s", "ready_s")]
    return (
        f"{label:28s}"
        + "".join(cells)
        + f"{hits:>9}"
        + (f"  ERROR {result['error']}" if "error" in result else "")
    )


def _format_table(formats: dict[str, Any]) -> str:
    lines = [f"pack formats on {formats['files']} files, {formats['raw_bytes'] / 1e6:.1f} MB raw:"]
    for name, m in formats.items():
        if isinstance(m, dict):
            unpack = f"{m['unpack_s']:.2f}" if "unpack_s" in m else "-"
            lines.append(
                f"  {name:10s} {m['bytes'] / 1e6:9.1f} MB  pack {m['pack_s']:6.2f} s"
                f"  unpack {unpack} s"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="full", choices=["full", "tiny"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=2, help="warm-minifal runs")
    parser.add_argument("--runners", type=int, default=3, help="N runners started together")
    parser.add_argument("--skip", nargs="*", default=[], help="modes to leave out")
    parser.add_argument("--precompile", action="store_true", help="add the AOTInductor runs")
    parser.add_argument(
        "--probe-writes", action="store_true", help="list files workers wrote outside their dirs"
    )
    parser.add_argument("--work-dir", help="data dirs live here (default: a temp dir)")
    parser.add_argument("--logs", help="where each worker's stderr goes")
    parser.add_argument("--out", help="write the JSON results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--measure-formats", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args.worker, args)), flush=True)
        return
    header = f"{'scenario':28s}{'import':>8}{'load':>8}{'compile':>8}{'sync':>8}{'ready':>8}"
    print(header + f"{'fx h/m':>9}   (seconds; compile = compile+warmup)", flush=True)
    results = run_scenarios(args)
    cold = next((r for r in results["runs"] if r.get("mode") == "cold"), {})
    if "formats" in cold:
        print(_format_table(cold["formats"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
