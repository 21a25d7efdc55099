"""Centres files: one unit vector per class.

Written by ``scoremix embed`` (space "embedding" or "head") and ``scoremix export-conditions``
(space "condition"); read by ``scoremix select`` and ``scoremix align``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoremix_plugin.errors import InputError, MissingInputError
from scoremix_plugin.io_utils import atomic_path

SPACES = ("embedding", "head", "condition")


@dataclass(frozen=True)
class Centres:
    labels: np.ndarray  # [C] int64
    centres: np.ndarray  # [C, D] float32, unit rows
    counts: np.ndarray  # [C] int64, images per class (0 where not applicable)
    space: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def normalise_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)).astype(np.float32)


def save_centres(path: str | os.PathLike, labels, centres, counts=None, *, space: str) -> Centres:
    """Normalise rows and write the ``.npz`` atomically. Returns what was written."""
    if space not in SPACES:
        raise InputError(f"centres space must be one of {SPACES}, got {space!r}")
    labels = np.asarray(labels, dtype=np.int64)
    if not np.all(np.isfinite(np.asarray(centres, dtype=np.float64))):
        raise InputError(f"{path}: refusing to write non-finite centres (NaN/inf): their source is unusable")
    centres = normalise_rows(centres)
    counts = np.zeros_like(labels) if counts is None else np.asarray(counts, dtype=np.int64)
    if centres.ndim != 2 or centres.shape[0] != labels.shape[0] or counts.shape != labels.shape:
        raise InputError(
            f"centres shapes disagree: labels {labels.shape}, centres {centres.shape}, counts {counts.shape}"
        )
    if len(np.unique(labels)) != len(labels):
        raise InputError("centres labels must be unique")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # np.savez on a file object: it would append .npz to a str name
            np.savez(f, labels=labels, centres=centres, counts=counts, space=np.array(space))
    return Centres(labels, centres, counts, space)


def load_centres(path: str | os.PathLike) -> Centres:
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"centres file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
    ) as e:  # a pickle (refused: it could run code), or not numpy at all
        raise InputError(f"{p}: not a centres .npz file (numpy cannot read it without unpickling)") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"{p}: a single array (.npy), not a centres .npz file")
    with z:
        missing = [k for k in ("labels", "centres", "counts", "space") if k not in z.files]
        if missing:
            raise InputError(f"{p}: not a centres file, missing arrays {missing}")
        labels = z["labels"].astype(np.int64)
        centres = z["centres"].astype(np.float32)
        counts = z["counts"].astype(np.int64)
        space = str(z["space"])
    if centres.ndim != 2 or centres.shape[0] != labels.shape[0] or counts.shape != labels.shape:
        raise InputError(f"{p}: shapes disagree: labels {labels.shape}, centres {centres.shape}, counts {counts.shape}")
    if space not in SPACES:
        raise InputError(f"{p}: unknown space {space!r}; expected one of {SPACES}")
    norms = np.linalg.norm(centres, axis=1)
    if not np.all(np.isfinite(centres)) or np.any(np.abs(norms - 1) > 1e-3):
        raise InputError(
            f"{p}: centres rows must be finite unit vectors (row norms {norms.min():.4f}..{norms.max():.4f})"
        )
    return Centres(labels, centres, counts, space)
