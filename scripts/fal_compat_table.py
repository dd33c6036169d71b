"""Check minifal's fal compatibility table against fal's installed SDK; write the doc.

    .venv/bin/python scripts/fal_compat_table.py           # write docs/fal-compatibility.md
    .venv/bin/python scripts/fal_compat_table.py --check   # exit 1 on a gap or a stale doc
    .venv/bin/python scripts/fal_compat_table.py --fal-source PATH [--fal-source-ref main]
        # also compare a fal source tree (a checkout, or a git dir read with git archive) with
        # the installed release: docs/fal-source-diff.json, rendered into the doc

``--fal-source`` reads the tree without importing it (its dependencies may not be installed):
every public module of its ``fal`` package, each module's ``__all__`` or its top-level names,
parsed; the installed release is parsed the same way, so the two lists compare like for like.

fal's public names come from fal's own installed package, read by fal's interpreter (the reference
venv ``./.venv-fal``, made by scripts/setup-env.sh; ``$MINIFAL_FAL_PYTHON`` overrides): this
script runs itself there with ``--list-fal-names``, in isolated mode, and reads the JSON it
prints. The modules are ``minifal.compat.fal_compat.SCOPE``, and for a package in
``RECURSIVE_SCOPE`` every public submodule the installed package has (found on disk, so a module
fal adds is listed without a change here). A module's public names are its ``__all__``; without
one, the names it defines at top level (and, for a package, those it re-exports from its own
submodules), without a leading underscore. ``--check`` fails when a fal name has no row in
``minifal.compat.fal_compat``, a row names something fal does not have, a row's name is missing in
minifal, or the doc is not what the rows give.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "fal-compatibility.md"
SOURCE_DIFF = ROOT / "docs" / "fal-source-diff.json"
"""What ``--fal-source`` found, kept so the doc renders without the source tree."""
PORTED_TESTS = ROOT / "docs" / "fal-ported-tests.md"
"""The table of fal's own tests (ported or why not), included in the doc as written."""
REFERENCE_PYTHON = ROOT / ".venv-fal" / "bin" / "python"
LIST_TIMEOUT_S = 120


# -- run under fal's interpreter: list fal's public names (stdlib + fal only) -------------------


def _defined_names(tree: ast.Module) -> list[str]:
    """Top-level names a module binds itself (``if TYPE_CHECKING`` blocks aside)."""
    names: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.append(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.append(node.target.id)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)

    visit(tree.body)
    return names


def _public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse(Path(module.__file__).read_text())
    names = _defined_names(tree)
    if hasattr(module, "__path__"):
        for node in tree.body:
            if not isinstance(node, ast.ImportFrom):
                continue
            relative = "." * node.level + (node.module or "")
            source = importlib.util.resolve_name(relative, module_name) if node.level else relative
            if source != module_name and not source.startswith(module_name + "."):
                continue
            for alias in node.names:
                if alias.name == "*":
                    names.extend(_public_names(source))
                else:
                    names.append(alias.asname or alias.name)
    public = [n for n in names if not n.startswith("_") and hasattr(module, n)]
    return list(dict.fromkeys(public))


def _submodules(package_name: str) -> list[str]:
    """The package's public modules, namespace packages included, in path order; none for a
    plain module."""
    package = importlib.import_module(package_name)
    if not hasattr(package, "__path__"):
        return []
    root = Path(package.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts and not any(part.startswith("_") for part in parts):
            found.append(".".join([package_name, *parts]))
    return list(dict.fromkeys(found))


def list_fal_names(scope: list[str], recursive: list[str]) -> dict:
    import fal

    modules: dict[str, list[str]] = {}
    for name in scope:
        modules[name] = _public_names(name)
        if name in recursive:
            for sub in _submodules(name):
                modules[sub] = _public_names(sub)
    return {"version": fal.__version__, "modules": modules}


# -- a fal source tree, parsed (no imports) -----------------------------------------------------


def _literal_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            try:
                return [str(name) for name in ast.literal_eval(node.value)]
            except ValueError:
                return None
    return None


def parsed_public_names(package_dir: Path) -> dict[str, list[str]]:
    """Every public module of the ``fal`` package at ``package_dir`` (its ``__init__.py``'s
    directory) and its public names: ``__all__`` when literal, else the names it binds at top
    level and, for a package, those it imports from its own submodules."""
    modules: dict[str, list[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts):
            continue
        name = ".".join(["fal", *parts])
        tree = ast.parse(path.read_text(errors="replace"))
        names = _literal_all(tree)
        if names is None:
            names = _defined_names(tree)
            if path.name == "__init__.py":
                for node in tree.body:
                    if isinstance(node, ast.ImportFrom) and (
                        node.level or (node.module or "").startswith(name + ".")
                    ):
                        names += [a.asname or a.name for a in node.names if a.name != "*"]
        modules[name] = sorted({n for n in names if not n.startswith("_")})
    return modules


def installed_package_dir(python: Path) -> Path:
    done = subprocess.run(
        [str(python), "-I", "-c", "import fal, os; print(os.path.dirname(fal.__file__))"],
        capture_output=True,
        text=True,
        timeout=LIST_TIMEOUT_S,
        cwd="/",
    )
    if done.returncode != 0:
        raise SystemExit(f"finding fal's package with {python} failed:\n{done.stderr}")
    return Path(done.stdout.strip())


def source_package_dir(source: Path, ref: str, scratch: Path) -> tuple[Path, str]:
    """The ``fal`` package of a source tree (fal's repository or a copy of its package), and
    what it is (the git description of ``ref`` for a git dir). A git dir (a bare mirror) is
    read with ``git archive`` into ``scratch``."""
    if (source / "HEAD").is_file() and (source / "objects").is_dir():
        git = ["git", f"--git-dir={source}"]
        archive = subprocess.run(
            [*git, "archive", ref, "projects/fal/src/fal"], capture_output=True, timeout=120
        )
        if archive.returncode != 0:
            raise SystemExit(f"git archive {ref} failed: {archive.stderr.decode()}")
        archive_path = scratch / "fal.tar"
        archive_path.write_bytes(archive.stdout)
        with tarfile.open(archive_path) as tar:
            tar.extractall(scratch, filter="data")
        described = subprocess.run(
            [*git, "describe", "--tags", "--match", "fal_v*", ref],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        commit = subprocess.run(
            [*git, "log", "-1", "--format=%h %cs", ref], capture_output=True, text=True
        ).stdout.strip()
        return scratch / "projects" / "fal" / "src" / "fal", f"{ref} ({described}, {commit})"
    for candidate in (source / "projects/fal/src/fal", source / "src/fal", source / "fal", source):
        if (candidate / "__init__.py").is_file() and (candidate / "app.py").is_file():
            return candidate, str(source)
    raise SystemExit(f"no fal package found in {source}")


def compare_names(base: dict[str, list[str]], other: dict[str, list[str]]) -> dict:
    """What ``other`` has beyond ``base`` and lacks of it, module by module."""
    added = {m: names for m, names in other.items() if m not in base}
    removed = {m: names for m, names in base.items() if m not in other}
    added_names = {m: sorted(set(other[m]) - set(base[m])) for m in other.keys() & base.keys()}
    removed_names = {m: sorted(set(base[m]) - set(other[m])) for m in other.keys() & base.keys()}
    return {
        "modules_added": dict(sorted(added.items())),
        "modules_removed": sorted(removed),
        "names_added": {m: n for m, n in sorted(added_names.items()) if n},
        "names_removed": {m: n for m, n in sorted(removed_names.items()) if n},
    }


def write_source_diff(python: Path, source: Path, ref: str) -> None:
    base = parsed_public_names(installed_package_dir(python))
    version = read_fal_names(python)["version"]
    with tempfile.TemporaryDirectory(prefix="fal-source-") as scratch:
        package_dir, described = source_package_dir(source, ref, Path(scratch))
        other = parsed_public_names(package_dir)
    diff = {"release": version, "source": described, **compare_names(base, other)}
    SOURCE_DIFF.write_text(json.dumps(diff, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SOURCE_DIFF.relative_to(ROOT)}")


def render_source_diff(diff: dict) -> list[str]:
    """The doc's section on a fal source tree against the installed release."""
    release, source = diff["release"], diff["source"]
    lines = [
        f"## fal's source ({source}) against {release}",
        "",
        f"Written by `scripts/fal_compat_table.py --fal-source`: the public modules and names "
        f"of that tree's `fal` package, parsed, against fal {release}'s, parsed the same way. "
        "A name the tree adds is checked in minifal (at its `minifal` path); the table above "
        "covers the release. To refresh it: `scripts/fal_compat_table.py --fal-source PATH "
        "[--fal-source-ref REF]` (a checkout of fal's repository, or a git dir of it).",
        "",
    ]
    added = [(m, n) for m, names in diff["names_added"].items() for n in names]
    added += [(m, n) for m, names in diff["modules_added"].items() for n in names]
    if diff["modules_added"] or added:
        lines += ["| what the source adds | in minifal |", "| --- | --- |"]
        for module in diff["modules_added"]:
            lines.append(f"| module `{module}` | {'yes' if minifal_has(module, '') else 'no'} |")
        for module, name in added:
            lines.append(f"| `{module}.{name}` | {'yes' if minifal_has(module, name) else 'no'} |")
    else:
        lines.append(f"The source adds no public module or name over {release}.")
    lines.append("")
    if diff["modules_removed"] or diff["names_removed"]:
        lines.append(f"What {release} has and the source does not (it is older, or removed them):")
        lines.append("")
        if diff["modules_removed"]:
            modules = ", ".join(f"`{m}`" for m in diff["modules_removed"])
            lines.append(f"- modules: {modules}")
        for module, names in diff["names_removed"].items():
            lines.append(f"- `{module}`: " + ", ".join(f"`{n}`" for n in names))
        lines.append("")
    return lines


# -- run in minifal's venv: check the rows, render the doc ---------------------------------------


def reference_python() -> Path | None:
    from minifal.host import envs

    configured = envs.FAL_PYTHON.get()
    candidate = Path(configured) if configured else REFERENCE_PYTHON
    return candidate if candidate.exists() else None


def read_fal_names(python: Path) -> dict:
    from minifal.compat.fal_compat import RECURSIVE_SCOPE, SCOPE

    done = subprocess.run(
        [
            str(python),
            "-I",
            str(Path(__file__).resolve()),
            "--list-fal-names",
            json.dumps({"scope": SCOPE, "recursive": RECURSIVE_SCOPE}),
        ],
        capture_output=True,
        text=True,
        timeout=LIST_TIMEOUT_S,
        cwd="/",
    )
    if done.returncode != 0:
        raise SystemExit(f"listing fal's names with {python} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def minifal_has(fal_module: str, dotted_name: str) -> bool:
    """Whether ``dotted_name`` resolves in the minifal module ``fal_module`` maps to."""
    from minifal.compat.fal_alias import target_module

    target = target_module(fal_module) or "minifal" + fal_module[len("fal") :]
    try:
        obj = importlib.import_module(target)
    except ImportError:
        return False
    for part in filter(None, dotted_name.split(".")):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def find_problems(fal_names: dict) -> list[str]:
    from minifal.compat.fal_compat import EXTRA_NAMES, ROWS

    problems = []
    fal_pairs = {(m, n) for m, names in fal_names["modules"].items() for n in names}
    row_pairs: dict[tuple[str, str], int] = Counter(
        (module, row.name) for row in ROWS for module in row.modules
    )
    for pair, count in sorted(row_pairs.items()):
        if count > 1:
            problems.append(f"{pair[0]}.{pair[1]}: more than one row")
    for module, name in sorted(fal_pairs - set(row_pairs)):
        problems.append(f"{module}.{name}: fal has it, minifal.compat.fal_compat has no row")
    for module, name in sorted(set(row_pairs) - fal_pairs):
        problems.append(f"{module}.{name}: a row for a name fal {fal_names['version']} lacks")
    for row in (*ROWS, *EXTRA_NAMES):
        for module in row.modules:
            if not minifal_has(module, row.name):
                problems.append(f"{module}.{row.name}: missing in minifal ({row.status})")
    return problems


def _scope_text() -> str:
    """``fal``, ``fal.toolkit`` (with its submodules)... as the table's scope says."""
    from minifal.compat.fal_compat import RECURSIVE_SCOPE, SCOPE

    names = [
        f"`{module}`" + (" (with its submodules)" if module in RECURSIVE_SCOPE else "")
        for module in SCOPE
    ]
    return ", ".join(names[:-1]) + " and " + names[-1]


def render(fal_version: str) -> str:
    from minifal.compat.fal_compat import EXTRA_NAMES, NOTES, ROWS

    by_module: dict[str, list] = {}
    for row in sorted((*ROWS, *EXTRA_NAMES), key=lambda r: r.name.lower()):
        for module in row.modules:
            by_module.setdefault(module, []).append(row)
    counts = Counter(row.status for row in ROWS)
    lines = [
        "# fal compatibility",
        "",
        "<!-- Generated by scripts/fal_compat_table.py from minifal/compat/fal_compat.py; "
        "do not edit. -->",
        "",
        f"Every public name of fal {fal_version}'s {_scope_text()}, with what it means in "
        "minifal. "
        "The same name in minifal lives at the same path with `fal` replaced by `minifal`; "
        "inside an app file, `import fal` reaches it. A test (`tests/test_fal_compat_table.py`) "
        "reads fal's installed package and fails when a name has no row here, when a row's name "
        "is missing in minifal, or when this file is stale.",
        "",
        "- **implemented**: does here what it does on fal;",
        "- **accepted**: an app uses it unchanged, with the local meaning given;",
        "- **not applicable**: needs fal's platform; the name exists so the app loads, and using "
        "it raises an error saying why.",
        "",
        f"{len(ROWS)} names: " + ", ".join(f"{counts[s]} {s}" for s in sorted(counts)) + ".",
        "",
        NOTES,
    ]
    for module in sorted(by_module):
        lines += [f"## `{module}`", "", "| name | status | local meaning |", "| --- | --- | --- |"]
        for row in by_module[module]:
            meaning = row.meaning.replace("|", "\\|")
            lines.append(f"| `{row.name}` | {row.status} | {meaning} |")
        lines.append("")
    if PORTED_TESTS.exists():
        lines += [PORTED_TESTS.read_text().rstrip(), ""]
    if SOURCE_DIFF.exists():
        lines += render_source_diff(json.loads(SOURCE_DIFF.read_text()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check only; exit 1 on a problem")
    parser.add_argument("--list-fal-names", metavar="SCOPE_JSON", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fal-source",
        type=Path,
        metavar="PATH",
        help="a fal source tree or git dir to compare with the installed release",
    )
    parser.add_argument(
        "--fal-source-ref", default="HEAD", help="the commit of a git dir to read (default HEAD)"
    )
    args = parser.parse_args(argv)
    if args.list_fal_names:
        scope = json.loads(args.list_fal_names)
        print(json.dumps(list_fal_names(scope["scope"], scope["recursive"])))
        return 0

    sys.path.insert(0, str(ROOT))
    python = reference_python()
    if python is None:
        print(f"no reference fal venv at {REFERENCE_PYTHON}: run scripts/setup-env.sh")
        return 2
    if args.fal_source is not None:
        write_source_diff(python, args.fal_source, args.fal_source_ref)
    fal_names = read_fal_names(python)
    problems = find_problems(fal_names)
    text = render(fal_names["version"])
    if not args.check:
        DOC.write_text(text)
        print(f"wrote {DOC.relative_to(ROOT)}")
    elif not DOC.exists() or DOC.read_text() != text:
        problems.append(f"{DOC.relative_to(ROOT)} is stale: run scripts/fal_compat_table.py")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
