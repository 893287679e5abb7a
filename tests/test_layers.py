"""The layers a maintainer reads from the folder tree are the layers the imports keep.

``runtime/`` < ``host/`` < ``lattice/`` < ``node.py`` < ``cli/``; beside them ``system/``
and ``tools/``; ``config.py``, ``security/`` (keys, claims, the trust policy) and
``errors.py`` below all of them; ``providers/`` never
imports the node; only the runtime imports wasmtime; nothing imports in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"node": "drupelet.node", "providers": "drupelet.providers"}
MAX_LINES = 500

# what each part of the node may import (besides itself, the standard library and third parties)
ALLOWED: dict[str, set[str]] = {
    "drupelet.node.errors": set(),
    "drupelet.node.security": {"drupelet.node.errors"},
    "drupelet.node.config": {"drupelet.node.errors", "drupelet.node.security", "drupelet.providers"},
    "drupelet.node.runtime": {"drupelet.node.errors", "drupelet.providers"},
    "drupelet.node.host": {"drupelet.node.errors", "drupelet.node.config", "drupelet.node.runtime",
                           "drupelet.node.security", "drupelet.providers", "drupelet.node"},
    "drupelet.node.lattice": {"drupelet.node.errors", "drupelet.node.config", "drupelet.node.runtime.errors",
                              "drupelet.node.host", "drupelet.node.security", "drupelet.providers"},
    "drupelet.node.system": {"drupelet.node.errors", "drupelet.node.config", "drupelet.node.security",
                             "drupelet.providers"},
    "drupelet.node.node": {"drupelet.node.errors", "drupelet.node.config", "drupelet.node.host",
                           "drupelet.node.lattice", "drupelet.node.system", "drupelet.providers"},
    "drupelet.node.tools": {"drupelet.node.errors", "drupelet.node.config", "drupelet.node.runtime",
                            "drupelet.node.host", "drupelet.node.lattice", "drupelet.node.node", "drupelet.node.security",
                            "drupelet.providers"},
    "drupelet.node.cli": {"drupelet.node"},
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """Modules ``module`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
            # `from pkg import module` imports that module; the package's __init__ is not
            # what the code depends on (it runs first, but no circle comes from it)
            if any((ROOT / (name.replace("drupelet.node", "node").replace("drupelet.providers", "providers")
                            .replace(".", "/")) / f"{alias.name}.py").is_file() for alias in node.names):
                out.discard(name)
    return out


def resolve(name: str, known: set[str]) -> str | None:
    """The known module ``name`` is (or is inside)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {t for i in imports_of(m, p) if (t := resolve(i, known)) and t != m} for m, p in mods.items()}


def part_of(module: str) -> str:
    best = ""
    for part in ALLOWED:
        if (module == part or module.startswith(part + ".")) and len(part) > len(best):
            best = part
    return best


def test_no_import_circles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_graph_sees_real_imports() -> None:
    edges = graph()
    assert "drupelet.node.host.host" in edges["drupelet.node.node"]
    assert "drupelet.node.lattice.state" in edges["drupelet.node.lattice.control"]


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("drupelet.node.")))
def test_each_part_imports_only_the_layers_below_it(module: str) -> None:
    part = part_of(module)
    assert part, f"{module} belongs to no known part of the node: add it to ALLOWED"
    allowed = ALLOWED[part]
    bad = sorted(t for t in graph()[module] if part_of(t) != part
                 and not any(t == a or t.startswith(a + ".") or part_of(t) == a for a in allowed))
    if part == "drupelet.node.host":  # the host may read the package version, nothing else of the node's top
        bad = [t for t in bad if t != "drupelet.node"]
    assert not bad, f"{module} ({part}) imports {bad}"


def test_providers_never_import_the_node() -> None:
    mods = modules()
    bad = {m: sorted(i for i in imports_of(m, p) if i.startswith("drupelet.node"))
           for m, p in mods.items() if m.startswith("drupelet.providers")}
    assert not {m: i for m, i in bad.items() if i}


def test_only_the_runtime_imports_wasmtime() -> None:
    mods = modules()
    users = sorted(m for m, p in mods.items() if any(i == "wasmtime" or i.startswith("wasmtime.")
                                                     for i in imports_of(m, p)))
    assert users and all(m.startswith("drupelet.node.runtime") for m in users), users


def test_long_modules_say_why() -> None:
    long = []
    for module, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "past 500 lines" not in doc and "over 500 lines" not in doc:
                long.append(f"{module} ({text.count(chr(10))} lines)")
    assert not long, f"modules over {MAX_LINES} lines whose docstring does not say why: {long}"
