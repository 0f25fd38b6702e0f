"""The house's rules, checked on the source: no import cycles, pure-torch rooms, one module that
touches Lightning's private internals (shared/DESIGN.md, "The rooms")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffusion_lab"
PRIVATE_LIGHTNING_MODULE = "diffusion_lab.callbacks._lightning"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}


def imported(tree: ast.Module, known: set[str]) -> set[str]:
    """The project's modules ``tree`` imports anywhere (functions too), except inside a package's
    lazy ``__getattr__`` (PEP 562), which runs only when the attribute is asked for."""
    lazy = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
    skipped = {id(node) for function in lazy for node in ast.walk(function)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_cycles_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle():
    trees = modules()
    graph = {name: imported(tree, set(trees)) - {name} for name, tree in trees.items()}
    assert cycles(graph) == []


def test_diffusion_and_models_import_no_lightning_hydra_or_wandb():
    code = (
        "import sys, diffusion_lab.diffusion, diffusion_lab.models;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'hydra', 'wandb',"
        " 'pytorch_lightning'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def defined_names(trees: dict[str, ast.Module]) -> set[str]:
    """Every function, class and attribute name the project defines itself (``self._x = ...``)."""
    names = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def foreign_private_attributes(tree: ast.Module, own: set[str]) -> list[str]:
    """``x._name`` reads of a private name the project does not define itself: another library's
    internals, which its next release may change without notice. Not counted: Hydra's config keys
    (``_target_``) and torch's ``torch._foreach_*`` kernels."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or node.attr.endswith("_") or node.attr in own:
            continue
        if isinstance(node.value, ast.Name) and node.value.id == "torch":
            continue
        found.append(f"line {node.lineno}: .{node.attr}")
    return sorted(found)


def test_only_one_module_touches_lightning_internals():
    trees = modules()
    own = defined_names(trees)
    offenders = {
        name: touches
        for name, tree in trees.items()
        if name != PRIVATE_LIGHTNING_MODULE and (touches := foreign_private_attributes(tree, own))
    }
    assert offenders == {}
    assert foreign_private_attributes(trees[PRIVATE_LIGHTNING_MODULE], own)  # they are all there
