"""Each room its purpose: no module imports another module's private names,
and the experiments' modules import one another without cycles."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"circuits": "bss2sim.circuits", "digital": "bss2sim.digital",
            "experiments": "bss2sim.experiments"}


def _modules():
    """module name -> (path, ast) of every module of the three packages."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if parts and parts[0] == "toplevel":
                name = ".".join(["bss2sim", *parts[1:]])
            else:
                name = ".".join([package, *parts])
            out[name] = (path, ast.parse(path.read_text(), filename=str(path)), path.name == "__init__.py")
    return out


MODULES = _modules()


def _resolve(module, node):
    """Absolute name of the module an ImportFrom refers to."""
    if node.level == 0:
        return node.module
    is_pkg = MODULES[module][2]
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module):
    """(imported module, names, line) of every import in a module, anywhere in it."""
    tree = MODULES[module][1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno


def test_the_module_table_is_complete():
    assert "bss2sim.experiments.calibration.store" in MODULES
    assert "bss2sim.experiments.validation" in MODULES
    assert "bss2sim.digital.nux.core" in MODULES
    assert len(MODULES) > 40


def test_no_module_imports_another_modules_private_names():
    found = []
    for module in MODULES:
        for target, name, line in _imports(module):
            if name is None or not name.startswith("_") or name.startswith("__"):
                continue
            if target in MODULES and target.rsplit(".", 1)[-1] == name:
                continue                      # a module imported under its own name
            if target != module:
                found.append(f"{module}:{line} imports {name} from {target}")
    assert found == []


def _graph(prefix):
    graph = {m: set() for m in MODULES if m.startswith(prefix)}
    for m in graph:
        for target, _, _ in _imports(m):
            # Importing a name from a package runs its __init__; count the package
            # only when no submodule of that name exists.
            if target in graph and target != m:
                graph[m].add(target)
    return graph


def _cycles(graph):
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_experiments_modules_import_one_another_without_cycles():
    graph = _graph("bss2sim.experiments")
    # A package's __init__ re-exports its modules: edges from a package to its own
    # submodules are how it is built, not a cycle of purposes.
    for m in list(graph):
        if MODULES[m][2]:
            graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
