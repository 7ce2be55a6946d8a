"""The package's layers (docs/design.md, "Layers"): every import of ``projects/salma``, module-level
or inside a function, goes to the importing module's own layer or a lower one, and no two modules
import each other, directly or around a loop. A function-local import is counted like any other:
it may not hide a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "projects" / "salma"

# Lowest first. A module belongs to the layer of the longest prefix naming it ('salma' alone is the
# package's __init__).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("salma", "salma.constants", "salma.registry", "salma.fingerprint")),
    ("data and training engine", ("salma.datasets", "salma.engine")),
    ("models", ("salma.models", "salma.testing")),
    ("build", ("salma.build", "salma.checkpoint")),
    ("evaluation and the exported model", ("salma.evaluation", "salma.salma_model")),
    ("applications", ("salma.export", "salma.inference", "salma.demo", "salma.analysis", "salma.app")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: set[str]) -> set[tuple[str, int]]:
    """(imported package module, line) for every import in the file, wherever it stands."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            target = target.removeprefix("projects.")
            while target and target not in modules:  # 'pkg.mod.func' -> 'pkg.mod'
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add((target, node.lineno))
    return found


def layer_of(name: str) -> int:
    best = max(((len(prefix), rank) for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if name == prefix or name.startswith(prefix + ".")), default=None)
    if best is None:
        raise AssertionError(f"{name}: in no layer of LAYERS; add it to one")
    return best[1]


def import_graph() -> dict[str, set[tuple[str, int]]]:
    modules = package_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[tuple[str, int]]]) -> list[str]:
    return sorted(f"{a}:{line} imports {b} ({LAYERS[layer_of(b)][0]} above {LAYERS[layer_of(a)][0]})"
                  for a, targets in graph.items() for b, line in targets if layer_of(b) > layer_of(a))


def test_every_module_has_a_layer():
    for name in package_modules():
        layer_of(name)


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The helpers on a made-up graph: a -> b -> a is one cycle; models importing evaluation goes up."""
    graph = {"salma.models.a": {("salma.models.b", 1)}, "salma.models.b": {("salma.models.a", 2)},
             "salma.datasets.c": {("salma.evaluation.d", 3)}, "salma.evaluation.d": set()}
    assert cycles(graph) == [["salma.models.a", "salma.models.b"]]
    assert upward_imports(graph) == ["salma.datasets.c:3 imports salma.evaluation.d (evaluation and the exported "
                                     "model above data and training engine)"]
