"""The import graph follows the layer order written in docs/architecture.md (nothing imports upward).

Every ``import`` in the package counts, including those inside functions (they run upward all the same).
A subcommand's ``cli.py`` is the thin shell over its layer and may import any layer, as may the top-level
``cli.py`` / ``__main__.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "scoremix_plugin"


def _layers() -> list[list[str]]:
    """The ``Layers`` block of docs/architecture.md: one line per layer, lowest first, names before ``--``."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no <!-- layers --> block"
    return [line.split("--")[0].split() for line in block.group(1).splitlines() if line.strip()]


def _module(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = REPO) -> set[str]:
    mod = _module(path, root).split(".")
    package = mod if path.name == "__init__.py" else mod[:-1]
    top = f"{mod[0]}."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                out |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
            elif node.module:
                out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith(top)}


def _unit(module: str, rank: dict[str, int]) -> str | None:
    """The layer unit of a module: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in rank else None


def upward_imports(pkg: Path, layers: list[list[str]]) -> list[str]:
    """Every import in package ``pkg`` (a folder) that runs from a lower layer to a higher one."""
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    shells = {"cli", "__main__", "__init__"}
    upward = []
    for f in sorted(pkg.rglob("*.py")):
        if f.stem == "cli" or f.parent == pkg and f.stem in shells:
            continue
        src = _unit(_module(f, pkg.parent), rank)
        for target in _imports(f, pkg.parent):
            dst = _unit(target, rank)
            if src and dst and rank[dst] > rank[src]:
                upward.append(f"{_module(f, pkg.parent)} -> {target} ({src} is below {dst})")
    return sorted(set(upward))


def test_no_import_runs_upward():
    layers = _layers()
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    units = {
        p.name if p.is_dir() else p.stem
        for p in PKG.iterdir()
        if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"
    }
    missing = sorted(units - set(rank) - {"cli", "__main__", "__init__"})
    assert not missing, f"docs/architecture.md's layers do not place {missing}"
    upward = upward_imports(PKG, layers)
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_datareport_is_the_layer_above_synthesis():
    # One quality report: the dataset report reads generation runs, nothing in synthesis reads it.
    rank = {name: i for i, layer in enumerate(_layers()) for name in layer}
    assert rank["datareport"] > rank["synthesis"]


def test_the_checker_sees_an_upward_import(tmp_path):
    # A temporary package with two layers: the lower one imports the upper one (at module level and inside a
    # function, absolute and relative); the checker must name each, and find nothing once they are gone.
    pkg = tmp_path / "toypkg"
    for sub in ("low", "high"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "high" / "mod.py").write_text("from toypkg.low import base\n")
    (pkg / "low" / "base.py").write_text("X = 1\n")
    layers = [["low"], ["high"]]
    assert upward_imports(pkg, layers) == []
    (pkg / "low" / "bad.py").write_text("import toypkg.high.mod\n\n\ndef f():\n    from ..high import mod\n")
    found = upward_imports(pkg, layers)
    assert found == [
        "toypkg.low.bad -> toypkg.high (low is below high)",
        "toypkg.low.bad -> toypkg.high.mod (low is below high)",
    ], found
    (pkg / "low" / "cli.py").write_text("import toypkg.high.mod\n")  # a shell may import any layer
    assert upward_imports(pkg, layers) == found
