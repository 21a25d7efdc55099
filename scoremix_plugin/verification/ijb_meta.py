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

from scoremix_plugin.errors import ScoreMixError
from scoremix_plugin.io_utils import check_inside

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
            raise IJBError(f"{path}:{i + 1}: expected 'image x1 y1 ... x5 y5 faceness' (12 fields), got {len(r)}")
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
        raise IJBError(
            f"{files['5pts']} lists {len(names5)} images but {files['tid_mid']} lists {len(names)}: "
            "both must list the same images in the same order"
        )
    differ = [i for i, (a, b) in enumerate(zip(names, names5)) if a != b]
    if differ:
        i = differ[0]
        raise IJBError(
            f"{files['5pts']}:{i + 1}: image {names5[i]!r} but {files['tid_mid']}:{i + 1} has "
            f"{names[i]!r} ({len(differ)} lines differ): both must list the same images in order"
        )
    pairs, labels = read_pairs(files["pairs"])
    known = np.unique(templates)
    unknown = ~np.isin(pairs, known)
    bad = np.flatnonzero(unknown.any(1))
    if bad.size:
        i = int(bad[0])
        tid = int(pairs[i][unknown[i]][0])
        raise IJBError(
            f"{files['pairs']}:{i + 1}: template {tid} is not in {files['tid_mid']} "
            f"({bad.size} pairs name unknown templates); such a pair cannot be scored"
        )
    if labels.all() or not labels.any():
        raise IJBError(
            f"{files['pairs']}: needs both genuine (1) and impostor (0) pairs, "
            f"got {int(labels.sum())} genuine of {labels.size}"
        )
    return IJBMeta(
        root=root,
        target=target,
        files=files,
        image_names=names,
        templates=templates,
        medias=medias,
        landmarks=landmarks,
        faceness=faceness,
        pair_templates=pairs,
        labels=labels,
    )


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
        raise IJBError(
            f"{path}: {arr.shape[0]} rows but {meta.files['5pts']} lists {meta.num_images} images "
            "(one row per image, in that file's order)"
        )
    if arr.shape[1] == 0 or arr.shape[1] % 2:
        raise IJBError(
            f"{path}: width {arr.shape[1]} is not even: each row must be the image's features "
            "followed by its flip's (2*D columns)"
        )
    feats = np.asarray(arr, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(feats).all(1))
    if bad.size:
        raise IJBError(
            f"{path}: row {bad[0]} ({meta.where(int(bad[0]))}, {meta.image_names[bad[0]]}) holds "
            f"NaN or inf ({bad.size} such rows)"
        )
    return feats


# 1:N identification (insightface's recognition/_evaluation_/ijb/ijb_1n.py).
#   ROOT/meta/<t>_1N_gallery_G1.csv, <t>_1N_gallery_G2.csv   (IJB-B: _S1, _S2)
#   ROOT/meta/<t>_1N_probe_mixed.csv
# each with a header line and then TEMPLATE_ID,SUBJECT_ID,... per image (further columns are ignored).


def gallery_names(target: str) -> tuple[str, str]:
    """The two gallery sets' names: G1 / G2 for IJB-C, S1 / S2 for IJB-B (the release's file names)."""
    return ("G1", "G2") if check_target(target) == "IJBC" else ("S1", "S2")


def files_1n(root: str | os.PathLike, target: str) -> dict[str, Path]:
    """{gallery name: csv, ..., "probe": csv}; IJBError naming every missing file."""
    t = check_target(target).lower()
    meta = Path(root) / "meta"
    files = {g: meta / f"{t}_1N_gallery_{g}.csv" for g in gallery_names(target)}
    files["probe"] = meta / f"{t}_1N_probe_mixed.csv"
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise IJBError(f"{check_target(target)} 1:N file(s) missing under {root}: {', '.join(missing)}")
    return files


def read_template_subjects(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(templates, subject ids) int64 [T] of a 1:N csv: one per template (first row's subject, as the reference),
    templates ascending; IJBError when a template names two subjects."""
    rows = _lines(path)[1:]  # the header
    if not rows:
        raise IJBError(f"{path}: no rows after the header")
    tids, sids = [], []
    for i, r in enumerate(rows):
        fields = r[0].split(",") if len(r) == 1 else " ".join(r).split(",")
        try:
            tids.append(int(fields[0]))
            sids.append(int(fields[1]))
        except (ValueError, IndexError):
            raise IJBError(f"{path}:{i + 2}: expected 'TEMPLATE_ID,SUBJECT_ID,...' with integer ids") from None
    tids_a, sids_a = np.asarray(tids, dtype=np.int64), np.asarray(sids, dtype=np.int64)
    templates, first = np.unique(tids_a, return_index=True)
    subjects = sids_a[first]
    conflict = np.flatnonzero(sids_a != subjects[np.searchsorted(templates, tids_a)])
    if conflict.size:
        i = int(conflict[0])
        first_subject = int(subjects[np.searchsorted(templates, tids_a[i])])
        raise IJBError(
            f"{path}:{i + 2}: template {tids[i]} names subject {sids[i]}, its first row subject "
            f"{first_subject} ({conflict.size} such rows)"
        )
    return templates, subjects


def read_ijb_1n_meta(root: str | os.PathLike, target: str) -> tuple[IJBMeta, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(image meta without pairs, {"G1"/"S1": (templates, subjects), "G2"/"S2": ..., "probe": ...}).

    Checks the reference's assumptions up front: every listed template has images in the tid_mid file,
    no subject has a template in both galleries or two in one, and every probe subject is enrolled.
    """
    target = check_target(target)
    root = Path(root)
    files = files_1n(root, target)
    img_files = {
        "tid_mid": root / "meta" / f"{target.lower()}_face_tid_mid.txt",
        "5pts": root / "meta" / f"{target.lower()}_name_5pts_score.txt",
    }
    missing = [str(p) for p in img_files.values() if not p.is_file()]
    if missing:
        raise IJBError(f"{target} meta file(s) missing under {root}: {', '.join(missing)}")
    names, templates, medias = read_tid_mid(img_files["tid_mid"])
    names5, landmarks, faceness = read_5pts(img_files["5pts"])
    if names5 != names:
        raise IJBError(f"{img_files['5pts']} and {img_files['tid_mid']} must list the same images in the same order")
    meta = IJBMeta(
        root=root,
        target=target,
        files={**img_files, **files},
        image_names=names,
        templates=templates,
        medias=medias,
        landmarks=landmarks,
        faceness=faceness,
        pair_templates=np.zeros((0, 2), dtype=np.int64),
        labels=np.zeros(0, dtype=bool),
    )
    sets = {k: read_template_subjects(p) for k, p in files.items()}
    known = np.unique(templates)
    for k, (t, _) in sets.items():
        unknown = t[~np.isin(t, known)]
        if unknown.size:
            raise IJBError(
                f"{files[k]}: template {int(unknown[0])} has no images in {img_files['tid_mid']} "
                f"({unknown.size} such templates)"
            )
    g_subjects = np.concatenate([sets[g][1] for g in gallery_names(target)])
    uniq, counts = np.unique(g_subjects, return_counts=True)
    if (counts > 1).any():
        raise IJBError(
            f"{files[gallery_names(target)[0]]} / {files[gallery_names(target)[1]]}: subject "
            f"{int(uniq[counts > 1][0])} has {int(counts[counts > 1][0])} gallery templates; "
            "1:N needs exactly one per subject"
        )
    lost = np.flatnonzero(~np.isin(sets["probe"][1], uniq))
    if lost.size:
        raise IJBError(
            f"{files['probe']}: probe template {int(sets['probe'][0][lost[0]])} (subject "
            f"{int(sets['probe'][1][lost[0]])}) has no gallery template ({lost.size} such probes)"
        )
    return meta, sets
