"""One-way imports between the packages under sw/, read from the source with ``ast`` (nothing is imported or run):

- ``pqmodel`` (the model-file format, the builder, the PQ layers, the data sets) imports neither ``pqcompile`` nor
  ``pqtrain``;
- ``pqcompile`` imports ``pqmodel``, never ``pqtrain``;
- ``pqtrain`` may import both;
- the compiler's front end (``graph``, ``quantize``, ``ir``, ``errors``, ``kernels``, ``fgraph``) does not import
  ``pqcompile.backend``, neither itself nor through the ``pqcompile`` modules it imports.

Every import statement counts: module level, inside functions (lazy imports) and under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SW = Path(__file__).resolve().parents[1] / "sw"
PACKAGES = ("pqmodel", "pqcompile", "pqtrain")
FRONT_END = tuple(f"pqcompile.{m}" for m in ("graph", "quantize", "ir", "errors", "kernels", "fgraph"))


def module_name(path: Path, root: Path = SW) -> str:
    """``sw/pqcompile/ops/pq.py`` -> ``pqcompile.ops.pq``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """The absolute names of the modules that the import statements of ``module``'s source name, wherever they
    stand (module level or inside a function or class). ``from X import y`` gives X and X.y (y may be a module);
    a relative import is resolved against ``module``'s package."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _sources(root: Path = SW) -> dict[str, tuple[Path, set[str]]]:
    """module name -> (file, the modules it imports) for every .py file of the three packages under ``root``."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            name = module_name(path, root)
            out[name] = (path, imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py"))
    return out


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offenders(sources: dict[str, tuple[Path, set[str]]], importer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{path.relative_to(SW.parent)} imports {imp}"
                  for name, (path, imps) in sources.items() if _in(name, importer)
                  for imp in imps if any(_in(imp, f) for f in forbidden))


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[Path, set[str]]]:
    found = _sources()
    for pkg in PACKAGES:
        assert pkg in found, f"sw/{pkg}/__init__.py not found"
    assert set(FRONT_END) <= set(found), sorted(set(FRONT_END) - set(found))
    return found


def test_pqmodel_imports_neither_pqcompile_nor_pqtrain(sources: dict[str, tuple[Path, set[str]]]) -> None:
    assert _offenders(sources, "pqmodel", ("pqcompile", "pqtrain")) == []


def test_pqcompile_does_not_import_pqtrain(sources: dict[str, tuple[Path, set[str]]]) -> None:
    assert _offenders(sources, "pqcompile", ("pqtrain",)) == []


def test_front_end_does_not_import_the_back_end(sources: dict[str, tuple[Path, set[str]]]) -> None:
    """Directly, and through every pqcompile module the front end imports (however deep)."""
    direct = [f"{sources[m][0].relative_to(SW.parent)} imports {imp}" for m in FRONT_END
              for imp in sorted(sources[m][1]) if _in(imp, "pqcompile.backend")]
    assert direct == []
    # the pqcompile modules reachable from the front end, with the chain that reaches each
    chain = {m: [m] for m in FRONT_END}
    todo = list(FRONT_END)
    while todo:
        m = todo.pop()
        for imp in sorted(sources[m][1]):
            if imp in sources and _in(imp, "pqcompile") and imp not in chain:
                chain[imp] = [*chain[m], imp]
                todo.append(imp)
    assert "pqcompile.backend" not in chain, " -> ".join(chain.get("pqcompile.backend", []))


def test_the_checker_sees_every_kind_of_import() -> None:
    """The parser itself: absolute, relative (one and two levels, from a package and a module), lazy (inside a
    function) and guarded imports are all found."""
    src = (
        "import pqtrain.model\n"
        "from . import backend\n"
        "from ..pqtrain import zoo\n"
        "from .ops.pq import FPQ\n"
        "def f():\n"
        "    from pqtrain.cli import main\n"
        "    import numpy as np\n"
        "if False:\n"
        "    from .backend import CompileError\n"
    )
    got = imported_modules(src, "pqcompile.graph")
    assert {"pqtrain.model", "pqcompile", "pqcompile.backend", "pqtrain", "pqtrain.zoo", "pqcompile.ops.pq",
            "pqcompile.ops.pq.FPQ", "pqtrain.cli", "pqtrain.cli.main", "numpy"} <= got
    assert "pqcompile.plan" in imported_modules("from ..plan import OpPlan\n", "pqcompile.ops.add")
    assert "pqcompile.ops.base" in imported_modules("from .base import OpHandler\n", "pqcompile.ops", True)
    fake = {"pqcompile.graph": (SW / "pqcompile" / "graph.py", got)}
    assert _offenders(fake, "pqcompile", ("pqtrain",)) == [
        "sw/pqcompile/graph.py imports pqtrain", "sw/pqcompile/graph.py imports pqtrain.cli",
        "sw/pqcompile/graph.py imports pqtrain.cli.main", "sw/pqcompile/graph.py imports pqtrain.model",
        "sw/pqcompile/graph.py imports pqtrain.zoo"]
