"""An environment holding only an App's requirements, what they depend on, and minifal's own
dependencies: the environment fal builds for an App from its ``requirements``, made here from the
packages this interpreter already has (links, nothing downloaded).

Why: a shared image holds more than an App asks for, and some libraries import what they find.
On the lent GPU image, diffusers imports peft when it is installed, and peft's import of
transformers' generation utilities imports scikit-learn: 5.2 s of a cold SD-Turbo start that
the App never asked for. Timing a start in both environments says which part is the App's.

    python benchmarks/app_environment.py torch diffusers transformers accelerate --out /tmp/appenv
    PYTHONPATH=$PWD /tmp/appenv/bin/python benchmarks/cold_start_serving.py ...

The requirements are the App's ``requirements`` (SD-Turbo's: the four above); minifal's come from
``pyproject.toml`` (``--no-minifal``: not). Markers are evaluated for this interpreter, extras
followed where a requirement names them (``uvicorn[standard]``). The environment is a venv
without system packages whose ``site-packages`` links to each distribution's top-level files;
it prints what it left out of this interpreter's packages.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from minifal.compiled.bytecode_warmup import requirement_closure

REPO = Path(__file__).resolve().parents[1]


def minifal_requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def closure(requirements: list[str]) -> tuple[dict[str, metadata.Distribution], list[str]]:
    """Every installed distribution the requirements need, by canonical name, and those not
    installed here (an optional extra's, say: this interpreter runs without them too). A
    requirement named on the command line that is not installed is an error."""
    distributions, missing = requirement_closure(requirements)
    named = {canonicalize_name(Requirement(text).name) for text in requirements}
    absent = named & {canonicalize_name(Requirement(text).name) for text in missing}
    if absent:
        raise SystemExit(f"not installed here: {', '.join(sorted(absent))}")
    return {canonicalize_name(d.metadata["Name"]): d for d in distributions}, missing


def top_level_paths(distribution: metadata.Distribution) -> set[Path]:
    """The distribution's files and folders directly in its site-packages (its RECORD)."""
    paths = set()
    for file in distribution.files or []:
        first = file.parts[0]
        if first == ".." or first.endswith(".pth"):
            continue
        paths.add(Path(distribution.locate_file(first)))
    return paths


def build(target: Path, distributions: dict[str, metadata.Distribution]) -> int:
    """A venv at ``target`` whose site-packages links to every file of ``distributions``."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--clear", str(target)], check=True
    )
    python = target / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site = Path(purelib)
    links = 0
    for distribution in distributions.values():
        for path in top_level_paths(distribution):
            link = site / path.name
            if path.exists() and not link.exists():
                link.symlink_to(path)
                links += 1
    return links


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="+", help="the App's requirements")
    parser.add_argument("--no-minifal", action="store_true", help="without minifal's own")
    parser.add_argument("--out", type=Path, required=True, help="the venv to make")
    args = parser.parse_args()
    wanted = args.requirements + ([] if args.no_minifal else minifal_requirements())
    distributions, missing = closure(wanted)
    links = build(args.out, distributions)
    everything = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
    left_out = sorted(everything - set(distributions))
    report = {
        "requirements": wanted,
        "distributions": sorted(distributions),
        "links": links,
        "left_out": left_out,
        "not_installed": missing,
        "python": str(args.out / "bin" / "python"),
        "base_purelib": sysconfig.get_paths()["purelib"],
    }
    (args.out / "app_environment.json").write_text(json.dumps(report, indent=1))
    print(f"{len(distributions)} distributions ({links} links) in {args.out}")
    print(f"left out ({len(left_out)}): {', '.join(left_out)}")
    if missing:
        print(f"needed but not installed here ({len(missing)}): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
