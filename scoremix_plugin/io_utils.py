"""Small file helpers shared by every writer: atomic writes, checksums, safe checkpoint loads.

Every file the project writes goes through a temporary name in the same folder and is renamed
when complete, so an interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def tmp_name(path: str | os.PathLike) -> Path:
    """The temporary sibling a writer uses before renaming to ``path`` (same folder, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success fsync + rename it to ``path``, on error remove it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temporary name (a killed run keeps the previous checkpoint intact)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch_safe(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint as untrusted input: ``weights_only=True`` runs no code from the file."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{p}: cannot be loaded with torch.load(weights_only=True): {e}") from e


def atomic_tempdir(final_dir: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A temporary folder beside ``final_dir`` (same file system, so it can be renamed into place)."""
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{final.name}.tmp-", dir=final.parent)


def pyplot():
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display, also on a headless server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG, written atomically; the figure is closed (pyplot keeps every open one)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` joined by "/" (sha256: the same on every machine, process and run, unlike
    Python's salted ``hash()``); per-item seeds (an image's noise, an epoch's data order) come from here."""
    key = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)
