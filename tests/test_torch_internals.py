"""Private torch and Triton APIs are reached through ``minifal/compiled/torch_internals.py`` only.

An ast scan of every module of ``minifal/``: imports of private modules or names
(``torch._inductor``, ``from torch.utils import _pytree``), attribute chains through them
(``torch._dynamo.eval_frame...``, ``torch.cuda._is_in_bad_fork``), and module names spelled as
strings (``"torch._dynamo" in sys.modules``). Triton's public API is ``triton``'s own names,
``triton.language`` and ``triton.testing``; its runtime, compiler and backends are internals.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "minifal"
ADAPTER = PACKAGE / "compiled" / "torch_internals.py"
TRITON_INTERNALS = {"runtime", "compiler", "backends", "tools", "knobs"}
DOTTED = re.compile(r"(torch|triton)(\.[A-Za-z_]\w*)+")


def is_private(dotted: str) -> bool:
    """Whether ``dotted`` (a module path or attribute chain) names a private torch/Triton API."""
    root, *rest = dotted.split(".")
    if root not in ("torch", "triton"):
        return False
    if any(part.startswith("_") and not part.endswith("__") for part in rest):
        return True
    return root == "triton" and bool(rest) and rest[0] in TRITON_INTERNALS


def _chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None when it does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for each private torch/Triton touch point in ``source``."""
    tree = ast.parse(source)
    bound = {"torch": "torch", "triton": "triton"}  # local name -> the module path it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_private(alias.name):
                    found.append((node.lineno, alias.name))
                if alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if is_private(node.module) or is_private(dotted):
                    found.append((node.lineno, dotted))
                bound[alias.asname or alias.name] = dotted
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = _chain(node)
            if parts and parts[0] in bound:
                dotted = ".".join([bound[parts[0]], *parts[1:]])
                if is_private(dotted):
                    found.append((node.lineno, dotted))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and DOTTED.fullmatch(node.value)
            and is_private(node.value)
        ):
            found.append((node.lineno, repr(node.value)))
    return sorted(set(found))


@pytest.mark.parametrize(
    "source",
    [
        "from torch._inductor import standalone_compile",
        "import torch._dynamo",
        "from torch.utils import _pytree as pytree",
        "import torch\ntorch._dynamo.eval_frame.remove_from_cache(f)",
        "import torch\ntorch.cuda._is_in_bad_fork()",
        "torch = sys.modules.get('torch')\ntorch.cuda._is_in_bad_fork()",
        "import torch as t\nt._C._set_something()",
        "from torch import cuda\ncuda._lazy_init()",
        "import sys\n'torch._dynamo' in sys.modules",
        "from triton.runtime.cache import triton_key",
        "import triton\ntriton.compiler.compile(src)",
    ],
)
def test_the_scan_finds_a_private_touch_point(source: str) -> None:
    assert private_uses(source)


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.compile(m)\ntorch.cuda.is_available()\ntorch.__version__",
        "import torch.fx\ntorch.fx.GraphModule(root, graph)",
        "from torch.fx.node import map_arg",
        "import triton\ntriton.__version__",
        "import triton.language as tl\ntl.program_id(0)",
        "owner._parameters.items()",  # a module instance's own state, not a torch namespace
        "'see torch._inductor.standalone_compile in the docs'",
        "from minifal.compiled import torch_internals\ntorch_internals.tree_flatten(x)",
    ],
)
def test_the_scan_leaves_public_apis_alone(source: str) -> None:
    assert private_uses(source) == []


def test_private_torch_and_triton_apis_are_reached_through_the_adapter_only() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ADAPTER
        for line, what in private_uses(path.read_text())
    ]
    assert offenders == [], "move these behind minifal/compiled/torch_internals.py:\n" + "\n".join(
        offenders
    )


def test_the_adapter_is_where_the_private_apis_are() -> None:
    """The scan sees the adapter's own touch points (it would miss the others otherwise)."""
    found = {what for _, what in private_uses(ADAPTER.read_text())}
    assert {"torch._inductor.standalone_compile", "triton.runtime.cache.triton_key"} <= found
