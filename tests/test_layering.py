"""The layering rules of docs/architecture.md, checked on the code itself.

* every project module imports (a module that fails to import is a broken seam, not a style issue);
* no module imports a leading-underscore name from another project module (private means private);
* no import cycle between project modules, counting imports inside functions too (a cycle hidden in a
  function body is still a cycle: both modules must be understood together);
* ``model/`` never imports Ray or MLflow (the ``Sink`` seam), and no package imports one above it
  (orchestrator -> analysis -> model).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "analysis", "orchestrator")
RANK = {"model": 0, "analysis": 1, "orchestrator": 2}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every project import in module ``name``."""
    f = MODULES[name]
    out = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (mod, a.name, node.lineno))
    return out


def _owner(mod: str) -> str:
    while mod not in MODULES and "." in mod:
        mod = mod.rsplit(".", 1)[0]
    return mod


def _graph() -> dict[str, set[str]]:
    return {m: {_owner(t) for t, _, _ in _imports(m)} - {m} for m in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_private_names_across_modules():
    bad = [
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {nm} from {t}"
        for m in MODULES
        for t, nm, line in _imports(m)
        if nm and nm.startswith("_") and not nm.startswith("__") and _owner(t) != m
    ]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles between project modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_packages_import_only_downwards():
    bad = [
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
        for m in MODULES
        for t, _, line in _imports(m)
        if RANK[t.split(".")[0]] > RANK[m.split(".")[0]]
    ]
    assert not bad, "imports running back up (orchestrator -> analysis -> model):\n" + "\n".join(bad)


def test_model_never_imports_ray_or_mlflow():
    bad = []
    for m, f in MODULES.items():
        if not m.startswith("model"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [
                f"{f.relative_to(ROOT)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] in ("ray", "mlflow")
            ]
    assert not bad, "\n".join(bad)
