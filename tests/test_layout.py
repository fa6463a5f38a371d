"""The architecture, checked: the runtime package stays light, and no module imports in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from training.config import REPO

HEAVY = ("torch", "transformers", "sklearn", "onnxruntime", "onnx", "matplotlib", "rich", "training", "devtools")
PACKAGES = {"stream": REPO / "stream", "training": REPO / "tools" / "training", "devtools": REPO / "tools" / "devtools"}


def test_runtime_imports_no_torch_training_or_tooling() -> None:
    """Every module of `stream` imported in a fresh interpreter: none of the heavy or tooling packages loads."""
    code = (
        "import importlib, pkgutil, sys, stream\n"
        "for m in pkgutil.walk_packages(stream.__path__, 'stream.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", f"the runtime pulled in: {out.stdout.strip()}"


def _module_name(path: Path) -> str:
    for top, root in PACKAGES.items():
        if root in path.parents or path.parent == root:
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            return ".".join([top, *parts])
    raise ValueError(path)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at top level or inside functions)."""
    files = {_module_name(p): p for root in PACKAGES.values() for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in files and t != name:
                    graph[name].add(t)
    return graph


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert graph, "no project imports found: the graph walk is broken"
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package importing its own submodules from __init__ is not a cycle of behaviour
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in pairwise(c))]
    assert not real, f"import cycles: {real}"


def test_runtime_never_imports_tooling() -> None:
    graph = import_graph()
    bad = {m: sorted(t for t in ts if not t.startswith("stream")) for m, ts in graph.items() if m.startswith("stream")}
    assert not {m: t for m, t in bad.items() if t}, bad
