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


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    mod = _module(path).split(".")
    package = mod if path.name == "__init__.py" else mod[:-1]
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
    return {m for m in out if m.startswith("scoremix_plugin.")}


def _unit(module: str, rank: dict[str, int]) -> str | None:
    """The layer unit of a module: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in rank else None


def test_no_import_runs_upward():
    layers = _layers()
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    units = {p.name if p.is_dir() else p.stem for p in PKG.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    shells = {"cli", "__main__", "__init__"}
    missing = sorted(units - set(rank) - shells)
    assert not missing, f"docs/architecture.md's layers do not place {missing}"
    upward = []
    for f in sorted(PKG.rglob("*.py")):
        if f.stem == "cli" or f.parent == PKG and f.stem in shells:
            continue
        src = _unit(_module(f), rank)
        for target in _imports(f):
            dst = _unit(target, rank)
            if src and dst and rank[dst] > rank[src]:
                upward.append(f"{_module(f)} -> {target} ({src} is below {dst})")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(set(upward)))


def test_the_checker_sees_an_upward_import(tmp_path):
    # The rule itself: a verification module importing the recogniser package would be caught.
    rank = {name: i for i, layer in enumerate(_layers()) for name in layer}
    assert rank["verification"] < rank["recognition"] and rank["data"] < rank["recognition"]
    f = PKG / "verification" / "evaluate.py"
    assert all(_unit(t, rank) != "recognition" for t in _imports(f))
