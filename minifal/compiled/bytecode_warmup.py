"""Fill an empty bytecode cache with many processes, beside the first runner of a cold start.

On an image that ships no bytecode (``bytecode_cache``), the first runner of an empty data dir
compiles every module it imports from source, one after the other. On the lent H100 image that
is 13 s of a 24 s cold start of SD-Turbo (first image 23.6 s; 10.6 s where the bytecode was
there, BENCHMARKS.md section 18). Compiling is one independent job per file, so a pool of
processes that compiles the App's packages into the cache while the runner imports stays ahead
of it: the runner finds most ``.pyc`` files written before it needs them (each is written
atomically, and Python checks it against its source), and compiles the rest itself as before.

Which files: minifal's own, then those of the distributions the App's ``requirements`` name and
of what they depend on (their installed metadata; markers evaluated here, extras followed), in
that order, each one's files shallow first (a package's ``__init__`` before its subpackages), so
that what an import needs first is compiled first.

    python -m minifal.compiled.bytecode_warmup --cache DIR --workers N torch diffusers ...

runs it (the fleet's ``LocalRunnerBackend`` does, at a low priority) and prints one JSON line:
files compiled, skipped (already there), failed, seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import py_compile
import sys
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

NICENESS = 10
"""The pool's priority below the runner's: it must never slow the import it runs ahead of."""
CHUNK = 32


def requirement_closure(
    requirements: Iterable[str],
) -> tuple[list[metadata.Distribution], list[str]]:
    """The installed distributions ``requirements`` need, breadth first from the named ones,
    and those needed but not installed here (an optional extra's, say). Requirements that are
    not a name (a URL, a path) are skipped."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    pending: deque[tuple[Requirement, str]] = deque()
    for text in requirements:
        try:
            pending.append((Requirement(text), ""))
        except InvalidRequirement:
            continue
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, extra = pending.popleft()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        distribution = installed.get(name)
        if distribution is None:
            missing.append(str(requirement))
            continue
        found.setdefault(name, distribution)
        for text in distribution.requires or []:
            dependency = Requirement(text)
            pending.extend((dependency, wanted) for wanted in requirement.extras or {""})
    return list(found.values()), missing


def source_files(distributions: Iterable[metadata.Distribution]) -> list[Path]:
    """minifal's own ``.py`` files (every runner imports some, installed or not), then every
    one the distributions installed, in their order, shallow first in each."""
    package = Path(__file__).parents[1]  # as imported: the path the runner's imports see
    files = sorted(package.rglob("*.py"), key=lambda path: (len(path.parts), str(path)))
    listed = set(files)
    for distribution in distributions:
        ours = [
            file
            for file in distribution.files or []
            if file.suffix == ".py" and file.parts[0] != ".."
        ]
        for file in sorted(ours, key=lambda file: (len(file.parts), str(file))):
            path = Path(distribution.locate_file(file))
            if path not in listed:
                listed.add(path)
                files.append(path)
    return files


def _compile(jobs: list[tuple[str, str]]) -> tuple[int, int]:
    """Compile each source to its bytecode file; (compiled, failed)."""
    compiled = failed = 0
    for source, bytecode in jobs:
        try:
            py_compile.compile(source, cfile=bytecode, doraise=True)
            compiled += 1
        except (py_compile.PyCompileError, OSError, ValueError):
            failed += 1
    return compiled, failed


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(NICENESS)


def warm(files: list[Path], workers: int) -> dict[str, float]:
    """Compile ``files`` whose bytecode is not in this process's cache (``sys.pycache_prefix``,
    where the importer looks) yet, in ``workers`` processes, each told where to write."""
    start = time.perf_counter()
    todo = []
    for path in files:
        bytecode = importlib.util.cache_from_source(str(path))
        if path.is_file() and not os.path.exists(bytecode):
            todo.append((str(path), bytecode))
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    compiled = failed = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:  # they inherit the low priority
        for done, broken in pool.map(_compile, chunks):
            compiled, failed = compiled + done, failed + broken
    return {
        "files": len(files),
        "compiled": compiled,
        "skipped": len(files) - len(todo),
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 2),
    }


def default_workers(cpus: int | None = None) -> int:
    """Every core but two (the runner's and the gateway's), at least one."""
    return max(1, (cpus or os.cpu_count() or 1) - 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="*", help="the App's requirements")
    parser.add_argument("--cache", type=Path, required=True, help="the bytecode cache dir")
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args(argv)
    sys.pycache_prefix = str(args.cache)
    _lower_priority()
    distributions, missing = requirement_closure(args.requirements)
    result = {
        "distributions": len(distributions),
        **warm(source_files(distributions), max(1, args.workers)),
        "not_installed": missing,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
