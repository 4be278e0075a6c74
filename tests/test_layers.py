"""The package's shape: one namespace, layers that import only downward, no import cycles,
``import stepwise`` cheap. Read from the source with ``ast`` (imports inside functions count too)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "stepwise"
# DESIGN.md's order: a layer may import itself and the layers before it.
LAYERS = ["io", "schedules", "data", "evaluation", "denoisers", "training", "solvers", "samplers", "search",
          "integrations", "cli"]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    mod = "stepwise." + ".".join(path.relative_to(PKG).with_suffix("").parts).replace(".__init__", "")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("stepwise")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stepwise"):
            base = node.module
            out |= {f"{base}.{a.name}" if base == "stepwise" else base for a in node.names}
    return {m for m in out if _layer(m) != _layer(mod) or m != mod}


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_down_the_layers(path):
    here = _layer("stepwise." + ".".join(path.relative_to(PKG).with_suffix("").parts))
    if here not in LAYERS:
        return  # stepwise/__init__.py
    for m in _imports(path):
        there = _layer(m)
        assert there in LAYERS, f"{path}: imports {m}, which is in no layer"
        assert LAYERS.index(there) <= LAYERS.index(here), f"{path} ({here}) imports {m} ({there}): upward"


def _find_cycle(graph: dict) -> list | None:
    """A cycle of the directed graph (a list of nodes), or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and m in graph:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles_between_modules():
    """Edges from a package's __init__ to its own submodules (re-exports) are not dependencies."""
    graph = {}
    for p in _modules():
        name = "stepwise." + ".".join(p.relative_to(PKG).with_suffix("").parts).replace(".__init__", "")
        is_pkg = p.name == "__init__.py"
        graph[name] = {m for m in _imports(p) if m != name and not (is_pkg and m.startswith(name + "."))}
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]   # the check can fail


def test_one_namespace_and_a_cheap_import():
    code = ("import sys, stepwise, stepwise.cli.defaults; heavy = [m for m in ('jax', 'flax', 'torch', 'orbax') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    root = PKG.parent   # also from the repository root, where `configs/` is a folder on sys.path
    for cwd in ("/", root):
        for name in ("search", "configs", "schedules", "solvers", "samplers", "denoisers", "evaluation"):
            r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd=cwd)
            assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (name, cwd)
