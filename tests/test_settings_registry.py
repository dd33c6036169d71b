"""One registry of ``MINIFAL_*`` variables (``minifal/host/envs.py``): every name used in the
repository is declared there, ``minifal/`` spells none elsewhere, only the runner contract writes
``os.environ``, and docs/settings.md's table is the registry's."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from minifal import runner_contract
from minifal.host import envs
from minifal.host.envs import SETTINGS, Scope, Setting

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minifal"
REGISTRY = PACKAGE / "host" / "envs.py"
WRITER = PACKAGE / "runner_contract.py"
NAME = re.compile(r"MINIFAL_[A-Z0-9_]+")
DECLARED = {setting.name for setting in SETTINGS}


def _settings_table():
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts" / "settings_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (a module's, class's, function's,
    or an attribute's: a bare string statement)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


# -- the registry ----------------------------------------------------------------------------------


def test_each_setting_is_declared_once_with_a_type_a_default_and_one_line_of_doc() -> None:
    assert len(DECLARED) == len(SETTINGS)
    for setting in SETTINGS:
        assert NAME.fullmatch(setting.name), setting.name
        assert setting.type and setting.doc and "\n" not in setting.doc, setting.name


def test_a_declared_default_is_one_its_parser_reads_back() -> None:
    for setting in SETTINGS:
        if setting.default is None or isinstance(setting.default, bool):
            continue
        assert setting.get({setting.name: str(setting.default)}) == setting.default, setting.name


def test_a_value_is_read_when_asked_for_and_an_empty_one_is_unset() -> None:
    port = envs.PORT
    assert port.get({}) == 8080
    assert port.get({port.name: ""}) == 8080
    assert port.get({port.name: "9000"}) == 9000
    assert envs.FORK_SERVER.get({envs.FORK_SERVER.name: "OFF"}) is False
    assert envs.CACHE_AUTOTUNE_REDIRECT.get({envs.CACHE_AUTOTUNE_REDIRECT.name: "0"}) is False


def test_a_value_that_does_not_parse_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"\$MINIFAL_PORT='eighty'"):
        envs.PORT.get({envs.PORT.name: "eighty"})
    with pytest.raises(ValueError, match=r"MINIFAL_SUSPEND.*auto, on, off"):
        envs.SUSPEND.get({envs.SUSPEND.name: "sometimes"})


def test_the_runner_contract_builds_a_runner_environment_of_declared_names() -> None:
    env = runner_contract.runner_environment(
        data_dir=Path("/data"),
        run_id="r",
        runner_id="runner-0",
        events_file=Path("/data/runs/r/runner-0.jsonl"),
        public_url="http://127.0.0.1:8080/",
        gpus=None,
        max_body_bytes=1000,
    )
    env |= runner_contract.revision_environment("r2-0123abcd", "/data/app-revisions/x/app.py")
    ours = {name for name in env if name.startswith("MINIFAL_")}
    assert ours <= DECLARED
    runner_scope = {setting.name for setting in SETTINGS if setting.scope is Scope.RUNNER}
    assert runner_scope - {envs.STARTUP_DEADLINE.name} <= ours  # the runner sets its deadline
    assert envs.MAX_BODY_SIZE.get(env) == "1000"


# -- where names and writes may appear -------------------------------------------------------------


def test_minifal_spells_no_variable_name_outside_the_registry() -> None:
    """Code asks ``envs``; docstrings and comments may name a variable, a declared one."""
    problems = []
    for path in _modules():
        if path == REGISTRY:
            continue
        text = path.read_text()
        tree = ast.parse(text)
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and NAME.search(node.value)
            ):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        problems += [
            f"{path.relative_to(ROOT)}: {name} is not declared in minifal/host/envs.py"
            for name in sorted(set(NAME.findall(text)) - DECLARED)
        ]
    assert not problems, "\n".join(problems)


def test_every_variable_the_repository_reads_is_declared() -> None:
    undeclared = []
    for folder in ("tests", "scripts", "benchmarks", "apps"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".sh") or not path.is_file():
                continue
            for name in sorted(set(NAME.findall(path.read_text())) - DECLARED):
                undeclared.append(f"{path.relative_to(ROOT)}: {name}")
    assert not undeclared, "\n".join(undeclared)


def _environ_writes(tree: ast.AST) -> list[int]:
    """Lines that write ``os.environ``: item assignment or deletion, or a mutating method."""

    def is_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            if any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and (
                (
                    is_environ(node.func.value)
                    and node.func.attr in ("update", "setdefault", "pop", "clear", "popitem")
                )
                or (
                    isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "os"
                    and node.func.attr in ("putenv", "unsetenv")
                )
            )
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_runner_contract_writes_the_environment() -> None:
    writers = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _modules()
        if path != WRITER
        for line in _environ_writes(ast.parse(path.read_text()))
    ]
    assert not writers, "write through runner_contract.export_to_process:\n" + "\n".join(writers)
    assert _environ_writes(ast.parse(WRITER.read_text()))  # the check sees the contract's own


def test_the_settings_table_in_the_docs_is_the_registrys() -> None:
    table = _settings_table()
    current = table.DOC.read_text()
    assert current == table.with_table(current, table.render_table()), (
        "docs/settings.md is stale: run scripts/settings_table.py"
    )
    for setting in SETTINGS:
        assert f"`{setting.name}`" in current


def test_a_setting_is_a_typed_declaration() -> None:
    assert all(isinstance(setting, Setting) for setting in SETTINGS)
    assert envs.DATA_DIR.get({envs.DATA_DIR.name: "/x"}) == Path("/x")
