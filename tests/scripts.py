"""Experiments and recipe helpers are scripts, not package modules: tests load them from their files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(path: str | Path) -> ModuleType:
    """The script at ``path`` (relative to the repository root) as a module, its top level run once."""
    path = REPO / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
