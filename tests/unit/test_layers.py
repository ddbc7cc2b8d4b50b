"""The package's imports point one way: no cycles, labs never import report/, no private names across modules.

Walks every module's AST, imports inside functions included, so a cycle hidden by a late import still fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import raretask

PACKAGE = Path(raretask.__file__).parent
LABS = ("raretask.synthetic", "raretask.lm", "raretask.analysis", "raretask.theory", "raretask.runs",
        "raretask.config")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports() -> dict[str, list[tuple[str, str | None, int]]]:
    """module -> [(imported module, imported name or None, line)], every import statement anywhere in the file."""
    out: dict[str, list[tuple[str, str | None, int]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        is_pkg = path.name == "__init__.py"
        edges = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("raretask")]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against this module's package
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if not mod.startswith("raretask"):
                    continue
                for a in node.names:
                    # `from raretask.report import figures` imports a module, not a name
                    sub = f"{mod}.{a.name}"
                    if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() or \
                            (PACKAGE.parent / sub.replace(".", "/") / "__init__.py").exists():
                        edges.append((sub, None, node.lineno))
                    else:
                        edges.append((mod, a.name, node.lineno))
        out[name] = edges
    return out


def _graph() -> dict[str, set[str]]:
    imports = package_imports()
    return {m: {t for t, _, _ in edges if t in imports and t != m} for m, edges in imports.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = _graph()
    assert _cycles(graph) == []


def test_labs_never_import_report():
    bad = [(m, t, line) for m, edges in package_imports().items() if m.startswith(LABS)
           for t, _, line in edges if t.startswith("raretask.report") or t == "raretask.cli"]
    assert bad == []


def test_no_private_names_across_modules():
    bad = [(m, t, n, line) for m, edges in package_imports().items()
           for t, n, line in edges if n is not None and n.startswith("_") and t != m]
    assert bad == []


def test_the_walker_sees_imports_inside_functions_and_finds_a_planted_cycle():
    # The checks above are only as good as the walker: it must see a late import and close a two-module cycle.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    imports = package_imports()
    late = [t for t, _, _ in imports["raretask.cli"]]
    assert late, "cli imports something of the package"
