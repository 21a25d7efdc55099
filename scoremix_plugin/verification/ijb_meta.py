"""The IJB-B / IJB-C release layout: meta files, the image list and precomputed image features.

    ROOT/meta/<t>_face_tid_mid.txt          image tid mid                        (one line per image)
    ROOT/meta/<t>_name_5pts_score.txt       image x1 y1 ... x5 y5 faceness        (same images, same order)
    ROOT/meta/<t>_template_pair_label.txt   tid1 tid2 label                      (1 = same subject)
    ROOT/loose_crop/<image>

with ``<t>`` = ``ijbb`` or ``ijbc``. Every problem is an :class:`IJBError` naming the file and line.
Row ``i`` of an image-feature array belongs to line ``i + 1`` of the 5pts file (the host's order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoremix_plugin.io_utils import check_inside

from scoremix_plugin.errors import ScoreMixError

TARGETS: tuple[str, ...] = ("IJBB", "IJBC")
MAX_LISTED = 10  # problems named in one message; the rest are counted


class IJBError(ScoreMixError, ValueError):
    """Bad IJB input (meta files, pairs, features, images); the message names the file and line."""


def _listing(items: list[str], total: int) -> str:
    more = f" (and {total - len(items)} more)" if total > len(items) else ""
    return "; ".join(items) + more


@dataclass
class IJBMeta:
    """One target's meta data, in file order."""

    root: Path
    target: str
    files: dict[str, Path]  # "tid_mid", "pairs", "5pts"
    image_names: list[str]  # [N]
    templates: np.ndarray  # int64 [N]
    medias: np.ndarray  # int64 [N]
    landmarks: np.ndarray  # float64 [N, 5, 2]
    faceness: np.ndarray  # float32 [N] (parsed like the host: text -> float32)
    pair_templates: np.ndarray  # int64 [P, 2]
    labels: np.ndarray  # bool [P]

    @property
    def num_images(self) -> int:
        return len(self.image_names)

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.image_names[i]

    def where(self, i: int) -> str:
        """``file:line`` of image ``i`` in the 5pts file (for messages)."""
        return f"{self.files['5pts']}:{i + 1}"


def meta_files(root: str | os.PathLike, target: str) -> dict[str, Path]:
    """The three meta paths of ``target``; IJBError naming every one that is missing."""
    target = check_target(target)
    meta = Path(root) / "meta"
    t = target.lower()
    files = {
        "tid_mid": meta / f"{t}_face_tid_mid.txt",
        "pairs": meta / f"{t}_template_pair_label.txt",
        "5pts": meta / f"{t}_name_5pts_score.txt",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise IJBError(f"{target} meta file(s) missing under {root}: {', '.join(missing)}")
    return files


def check_target(target: str) -> str:
    t = str(target).upper()
    if t not in TARGETS:
        raise IJBError(f"unknown IJB target {target!r}: expected one of {', '.join(TARGETS)}")
    return t


def _lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise IJBError(f"{path}: not UTF-8 text ({e})") from e
    rows = [line.split() for line in text.splitlines()]
    # A trailing blank line is harmless; one in the middle would shift every later row.
    while rows and not rows[-1]:
        rows.pop()
    for i, r in enumerate(rows):
        if not r:
            raise IJBError(f"{path}:{i + 1}: empty line")
    if not rows:
        raise IJBError(f"{path}: no lines")
    return rows


def read_tid_mid(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image names, template ids, media ids) of ``<t>_face_tid_mid.txt``."""
    names, tids, mids = [], [], []
    for i, r in enumerate(_lines(path)):
        if len(r) != 3:
            raise IJBError(f"{path}:{i + 1}: expected 'image tid mid', got {len(r)} fields: {' '.join(r)!r}")
        try:
            tids.append(int(r[1]))
            mids.append(int(r[2]))
        except ValueError:
            raise IJBError(f"{path}:{i + 1}: template and media ids must be integers: {' '.join(r)!r}") from None
        check_inside(path.parent, r[0], f"{path}:{i + 1}")  # images are read under the IJB root only
        names.append(r[0])
    return names, np.asarray(tids, dtype=np.int64), np.asarray(mids, dtype=np.int64)


def read_5pts(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image names, landmarks float64 [N, 5, 2], faceness float32 [N]) of ``<t>_name_5pts_score.txt``."""
    rows = _lines(path)
    names, coords, scores = [], [], []
    for i, r in enumerate(rows):
        if len(r) != 12:
            raise IJBError(f"{path}:{i + 1}: expected 'image x1 y1 ... x5 y5 faceness' (12 fields), "
                           f"got {len(r)}")
        try:
            coords.append([float(v) for v in r[1:11]])
            float(r[11])
        except ValueError:
            raise IJBError(f"{path}:{i + 1}: landmarks and faceness must be numbers: {' '.join(r)!r}") from None
        names.append(r[0])
        scores.append(r[11])
    # The host turns the score TEXT into float32 directly; doing the same keeps D1 weights bit-identical.
    faceness = np.asarray(scores).astype(np.float32)
    landmarks = np.asarray(coords, dtype=np.float64).reshape(-1, 5, 2)
    bad = np.flatnonzero(~np.isfinite(faceness) | ~np.isfinite(landmarks).reshape(len(rows), -1).all(1))
    if bad.size:
        raise IJBError(f"{path}:{bad[0] + 1}: non-finite landmark or faceness ({bad.size} such lines)")
    return names, landmarks, faceness


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(template pairs int64 [P, 2], labels bool [P]) of ``<t>_template_pair_label.txt``.

    numpy's C text reader: ~7 s for IJB-C's 15.6M lines on one core; its errors carry the row.
    """
    try:
        arr = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except ValueError as e:
        raise IJBError(f"{path}: expected 'tid1 tid2 label' integer lines: {e}") from None
    if arr.shape[0] == 0:
        raise IJBError(f"{path}: no pairs")
    if arr.shape[1] != 3:
        raise IJBError(f"{path}:1: expected 3 fields 'tid1 tid2 label', got {arr.shape[1]}")
    bad = np.flatnonzero((arr[:, 2] != 0) & (arr[:, 2] != 1))
    if bad.size:
        raise IJBError(f"{path}:{bad[0] + 1}: label must be 0 or 1, got {arr[bad[0], 2]} ({bad.size} such lines)")
    return np.ascontiguousarray(arr[:, :2]), arr[:, 2].astype(bool)


def read_ijb_meta(root: str | os.PathLike, target: str) -> IJBMeta:
    """Read and cross-check the three meta files of ``target`` under ``root``."""
    target = check_target(target)
    root = Path(root)
    files = meta_files(root, target)
    names, templates, medias = read_tid_mid(files["tid_mid"])
    names5, landmarks, faceness = read_5pts(files["5pts"])
    if len(names5) != len(names):
        raise IJBError(f"{files['5pts']} lists {len(names5)} images but {files['tid_mid']} lists {len(names)}: "
                       "both must list the same images in the same order")
    differ = [i for i, (a, b) in enumerate(zip(names, names5)) if a != b]
    if differ:
        i = differ[0]
        raise IJBError(f"{files['5pts']}:{i + 1}: image {names5[i]!r} but {files['tid_mid']}:{i + 1} has "
                       f"{names[i]!r} ({len(differ)} lines differ): both must list the same images in order")
    pairs, labels = read_pairs(files["pairs"])
    known = np.unique(templates)
    unknown = ~np.isin(pairs, known)
    bad = np.flatnonzero(unknown.any(1))
    if bad.size:
        i = int(bad[0])
        tid = int(pairs[i][unknown[i]][0])
        raise IJBError(f"{files['pairs']}:{i + 1}: template {tid} is not in {files['tid_mid']} "
                       f"({bad.size} pairs name unknown templates); such a pair cannot be scored")
    if labels.all() or not labels.any():
        raise IJBError(f"{files['pairs']}: needs both genuine (1) and impostor (0) pairs, "
                       f"got {int(labels.sum())} genuine of {labels.size}")
    return IJBMeta(root=root, target=target, files=files, image_names=names, templates=templates, medias=medias,
                   landmarks=landmarks, faceness=faceness, pair_templates=pairs, labels=labels)


def load_features(path: str | os.PathLike, meta: IJBMeta) -> np.ndarray:
    """Precomputed image features ``.npy`` [N, 2D] float (image | flip per row, rows in 5pts order) -> float32."""
    path = Path(path)
    if not path.is_file():
        raise IJBError(f"features file not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise IJBError(f"{path}: not a numpy .npy array file without pickles: {e}") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        raise IJBError(f"{path}: expected a 2-D array [images, 2*D], got shape {getattr(arr, 'shape', None)}")
    if arr.dtype.kind not in "fiu":
        raise IJBError(f"{path}: expected numbers, got dtype {arr.dtype}")
    if arr.shape[0] != meta.num_images:
        raise IJBError(f"{path}: {arr.shape[0]} rows but {meta.files['5pts']} lists {meta.num_images} images "
                       "(one row per image, in that file's order)")
    if arr.shape[1] == 0 or arr.shape[1] % 2:
        raise IJBError(f"{path}: width {arr.shape[1]} is not even: each row must be the image's features "
                       "followed by its flip's (2*D columns)")
    feats = np.asarray(arr, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(feats).all(1))
    if bad.size:
        raise IJBError(f"{path}: row {bad[0]} ({meta.where(int(bad[0]))}, {meta.image_names[bad[0]]}) holds "
                       f"NaN or inf ({bad.size} such rows)")
    return feats
