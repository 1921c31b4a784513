"""The arrows of the house plan, read from the sources: every import statement of every module,
those inside functions (lazy imports) included.

- nothing imports the command line (``multispike.cli``) but the program's entry point;
- the workflows, the analysis and deploy take objects, not command-line strings: no
  ``argparse``;
- the analysis does not import the training engine (the workflows hand the sweeps their
  training function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import multispike

SRC = Path(multispike.__file__).resolve().parent
#: ``python -m multispike`` runs the command line: the one module above it
ENTRY_POINTS = {"multispike.__main__"}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, src: Path = SRC) -> set[str]:
    """Every module ``path`` imports anywhere in its body (relative imports resolved; for
    ``from X import Y`` both ``X`` and ``X.Y``, since Y may be a submodule; also
    ``import_module("X")`` and ``__import__("X")``)."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__")):
            found.add(node.args[0].value)
    return found


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(packages: tuple[str, ...], forbidden: str) -> list[str]:
    return [f"{name} imports {target}" for name, path in MODULES.items()
            if any(_under(name, p) for p in packages)
            for target in sorted(imports(path)) if _under(target, forbidden)]


def test_the_scan_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "multispike" / "analysis"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from ..engine import train\n    import argparse\n"
                              "    importlib.import_module('multispike.cli')\n")
    assert imports(pkg / "x.py", tmp_path / "multispike") == {
        "multispike.engine", "multispike.engine.train", "argparse", "multispike.cli"}


def test_the_scan_finds_the_modules():
    assert {"multispike.cli", "multispike.analysis.sweeps",
            "multispike.workflows.deploy_checkpoint", "multispike.__main__"} <= set(MODULES)


def test_nothing_imports_the_command_line():
    found = [f"{name} imports {target}" for name, path in MODULES.items()
             if not _under(name, "multispike.cli") and name not in ENTRY_POINTS
             for target in sorted(imports(path)) if _under(target, "multispike.cli")]
    assert not found, found
    assert "multispike.cli" in imports(MODULES["multispike.__main__"])  # the entry point does


@pytest.mark.parametrize("layer", ["multispike.workflows", "multispike.analysis",
                                   "multispike.deploy"])
def test_analysis_and_deploy_take_objects_not_argparse(layer):
    found = offenders((layer,), "argparse")
    assert not found, found


def test_the_analysis_does_not_import_the_engine():
    found = offenders(("multispike.analysis",), "multispike.engine")
    assert not found, found


#: the layers of the house plan, top first: a module imports its own package and the layers
#: below it, never one above or beside it (``data`` is read by the engine and the analysis only)
LAYERS = (
    ("multispike.__main__",),
    ("multispike.cli",),
    ("multispike.workflows",),
    ("multispike.engine",),
    ("multispike.analysis",),
    ("multispike.data",),
    ("multispike.deploy",),
    ("multispike.models",),
    ("multispike.layers",),
    ("multispike.monitor",),
    ("multispike.neurons",),
    ("multispike.kernels",),
    ("multispike.functional",),
    ("multispike",),  # the package's own __init__: re-exports of the errors
    # shared by every layer: errors, one-line checks, weights integrity, CPU load
    ("multispike.errors", "multispike.checks", "multispike.integrity", "multispike.cpuload"),
)
#: layers that may not import ``multispike.data`` although it sits above them in LAYERS
NO_DATA = ("multispike.deploy",)


def layer_of(module: str) -> int:
    for rank, packages in enumerate(LAYERS):
        if any(_under(module, p) for p in packages if p != "multispike") or module in packages:
            return rank
    raise AssertionError(f"{module} is in no layer of the house plan; add it to LAYERS")


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_import_points_down_the_house_plan():
    found = []
    for name, path in MODULES.items():
        rank = layer_of(name)
        for target in sorted(imports(path)):
            if not _under(target, "multispike") or target not in MODULES and \
                    target.rpartition(".")[0] in MODULES:
                continue  # outside multispike, or `from X import name` of a non-module name
            other = layer_of(target)
            same_package = package_of(target) == package_of(name)
            bottom = other == len(LAYERS) - 1
            if other < rank or (other == rank and not same_package and not bottom) or (
                    _under(target, "multispike.data") and package_of(name) in NO_DATA):
                found.append(f"{name} imports {target}")
    assert not found, found


def test_every_module_has_a_layer_and_the_order_is_the_plan():
    ranks = {name: layer_of(name) for name in MODULES}
    assert ranks["multispike.cli.train"] < ranks["multispike.workflows.measure"] \
        < ranks["multispike.engine.train"] \
        < ranks["multispike.analysis.stats"] < ranks["multispike.deploy.fold"] \
        < ranks["multispike.models.vgg"] < ranks["multispike.layers"] \
        < ranks["multispike.neurons"] < ranks["multispike.kernels.cpu"] \
        < ranks["multispike.functional.firing"] < ranks["multispike.checks"]


def _module_edges() -> dict[str, set[str]]:
    """Module → the multispike modules it imports (a package's ``__init__`` counts as a module;
    the import of a module's own parent package, which Python runs first anyway, does not)."""
    return {name: {t for t in imports(path)
                   if t in MODULES and t != name and not name.startswith(t + ".")}
            for name, path in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_lazy_imports_included():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not cycles(_module_edges())


def test_no_module_reads_names_from_its_own_package_init():
    """``from multispike.kernels import x`` inside ``multispike.kernels.cpu`` would close a
    circle through the package's ``__init__`` (which imports its submodules)."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                parent = node.module
                if parent in MODULES and name.startswith(parent + ".") \
                        and MODULES[parent].name == "__init__.py":
                    found += [f"{name}: from {parent} import {a.name}" for a in node.names
                              if f"{parent}.{a.name}" not in MODULES]
    assert not found, found


#: the house plan's "never" arrows (../shared/DESIGN.md), each stated on its own: the straight
#: order of LAYERS alone would allow some of them (analysis sits above deploy there)
NEVER = [
    ("multispike.engine", "multispike.kernels"),  # the engine talks to models and neurons
    ("multispike.analysis", "multispike.deploy"),
    ("multispike.analysis", "multispike.engine"),
    ("multispike.deploy", "multispike.engine"),
    ("multispike.data", "multispike.models"),
    ("multispike.data", "multispike.neurons"),
]


@pytest.mark.parametrize("source,target", NEVER)
def test_the_plan_s_never_arrows(source, target):
    found = offenders((source,), target)
    assert not found, found


BENCH = SRC.parents[1] / "bench"


def test_the_benchmarks_draw_no_circle_and_stay_above_the_package():
    """bench/ is the top of the house: its scripts import one another without a circle (they
    share helpers through bench/common.py), and nothing in the package imports them."""
    names = {p.stem for p in BENCH.glob("*.py")}
    edges = {p.stem: {t for t in imports(p, BENCH) if t in names and t != p.stem}
             for p in BENCH.glob("*.py")}
    assert not cycles(edges), cycles(edges)
    found = [f"{name} imports {t}" for name, path in MODULES.items()
             for t in imports(path) if t.split(".")[0] in names]
    assert not found, found
