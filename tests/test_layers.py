"""The package layers stay one-way (README, "Architecture").

Imports are read with `ast` from the source, function-level (lazy) imports
included, so a cycle cannot hide behind an import inside a function:

    data_prep  (corpora -> prepared data)            floor 0
    mtmeta     (model, training, adaptation, comparison)  floor 1
    evaluation (reports from the comparison's rows)  floor 2
    mtmeta.cli (the command line: runs and reports)  floor 3
    (ground, floor -1: mtmeta's leaf modules, below data_prep)
    benchmarks (scripts; nothing imports them)       floor 4

An import may only go to the same floor or below. `data_prep` may import
from `mtmeta` only leaf modules: ones that import nothing of the project
but other such leaves (mtmeta/errors.py, mtmeta/safe_io.py).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_prep", "mtmeta", "evaluation", "benchmarks")
TOP = {"mtmeta.cli": 3}
FLOOR = {"data_prep": 0, "mtmeta": 1, "evaluation": 2, "benchmarks": 4}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Project modules each module imports (anywhere in its body). Importing
    a.b.c also runs the packages a and a.b, so those count too."""
    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                prefix = ".".join(base + ([node.module] if node.module else []))
                names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]
            for name in names:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in mods and target != mod and parts[0] in PACKAGES:
                        found.add(target)
        # a module's own parent packages run before it: not an import of its own
        edges[mod] = {t for t in found if not mod.startswith(t + ".")}
    return edges


MODS = _modules()
EDGES = _imports(MODS)


def _leaves() -> set[str]:
    """mtmeta modules importing nothing of the project but other leaves."""
    leaves: set[str] = set()
    changed = True
    while changed:
        changed = False
        for mod, targets in EDGES.items():
            if mod.startswith("mtmeta.") and mod not in leaves and targets <= leaves | {"mtmeta"}:
                leaves.add(mod)
                changed = True
    return leaves


LEAVES = _leaves()


def _floor(mod: str) -> int:
    if mod in LEAVES or mod == "mtmeta":  # the ground: errors, safe I/O, the empty package
        return -1
    return TOP.get(mod, FLOOR[mod.split(".")[0]])


def test_the_import_reader_sees_lazy_and_relative_imports() -> None:
    # mtmeta/cli.py imports its commands inside functions, relatively
    assert {"mtmeta.training", "mtmeta.adaptation", "evaluation.compare_report"} <= EDGES["mtmeta.cli"]
    assert "mtmeta.errors" in EDGES["data_prep.vocab"]


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(EDGES[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for mod in sorted(EDGES):
        if mod not in index:
            visit(mod)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_only_go_down_the_layers() -> None:
    upward = sorted(
        f"{mod} -> {target}" for mod, targets in EDGES.items() for target in targets if _floor(target) > _floor(mod)
    )
    assert not upward, "imports going up a layer:\n" + "\n".join(upward)


def test_data_prep_imports_only_leaf_modules_of_mtmeta() -> None:
    leaves = LEAVES
    assert "mtmeta.errors" in leaves and "mtmeta.config" not in leaves
    bad = sorted(
        f"{mod} -> {target}"
        for mod, targets in EDGES.items()
        if mod.startswith("data_prep")
        for target in targets
        if target.startswith("mtmeta") and target != "mtmeta" and target not in leaves
    )
    assert not bad, "data_prep reaches into mtmeta beyond its leaf modules:\n" + "\n".join(bad)


def test_nothing_imports_the_benchmarks() -> None:
    users = sorted(f"{m} -> {t}" for m, ts in EDGES.items() if not m.startswith("benchmarks") for t in ts if t.startswith("benchmarks"))
    assert not users
    tests = [p.name for p in (ROOT / "tests").glob("*.py") if "benchmarks" in p.read_text(encoding="utf-8").replace("tests/test_layers.py", "")]
    assert tests == ["test_layers.py"]
