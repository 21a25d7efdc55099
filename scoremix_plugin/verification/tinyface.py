"""TinyFace closed-set identification (rank-1 / 5 / 20), the protocol of AdaFace's ``validation_lq``.

    from scoremix_plugin.verification.tinyface import read_tinyface, evaluate_tinyface_features, load_features
    layout = read_tinyface("/data/tinyface_root")
    result = evaluate_tinyface_features(layout, load_features("feats.npz", layout))
    result.cmc        # {1: share, 5: ..., 20: ...} of the probes

The release layout (``ROOT`` = the folder AdaFace calls ``tinyface_root``):

    ROOT/tinyface/Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}/*.jpg     (lists the images)
    ROOT/tinyface/Testing_Set/{gallery_match_img_ID_pairs,probe_img_ID_pairs}.mat
    ROOT/<aligned dir>/{Probe,Gallery_Match,Gallery_Distractor}/*                  (the faces embedded)

As the reference: probes, matches and distractors are the image files of the three raw folders; each
is read from the aligned folder under the same name; the identity is the file name's prefix before the
first ``_`` (distractors belong to no identity); gallery = matches + distractors; a probe's score against
an entry is the inner product of their features; CMC at ranks 1, 5, 20 over the probes (a probe counts
at rank r when any of its mates is among the r best-scoring entries). The reference loads the two
``.mat`` files but identifies with the folder listings; here the ``.mat`` lists are read, checked (a
malformed file is an error naming it) and must name files that exist in the folders.

Where this differs from the reference, on purpose:
- each image is looked up by its path (``Probe/7_2.jpg``); the reference keys on the bare file stem, so a
  stem present in two folders would silently share one feature there;
- a probe with no mate in the gallery is an error (the reference drops it from the denominator);
- ties between the best mate and a non-mated entry count in the probe's favour and are counted
  (``identification.search``); the reference breaks them by an unstable argsort.
Open-set DIR at a FAR list is an extra (``identification.open_set_dir``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.errors import InputError, MissingInputError
from scoremix_plugin.verification.identification import NO_IDENTITY, cmc_counts, open_set_dir, search

RANKS: tuple[int, ...] = (1, 5, 20)
OPEN_SET_FARS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
ALIGNED_DIR = "aligned_pad_0.1_pad_high"
FOLDERS: tuple[str, ...] = ("Probe", "Gallery_Match", "Gallery_Distractor")
EXTENSIONS = (".jpg", ".png", ".jpeg")  # the reference's list (case-sensitive, as its filter)
MAT_FILES = {
    "Gallery_Match": ("gallery_match_img_ID_pairs.mat", "gallery_set"),
    "Probe": ("probe_img_ID_pairs.mat", "probe_set"),
}

Embedder = Callable[[np.ndarray], np.ndarray]


@dataclass
class TinyFaceLayout:
    """The images of one TinyFace root: paths relative to the aligned folder, identities, roles."""

    root: Path
    aligned: Path
    probes: list[str]  # "Probe/1_1.jpg", sorted
    matches: list[str]
    distractors: list[str]
    probe_labels: np.ndarray  # int64
    match_labels: np.ndarray

    @property
    def gallery(self) -> list[str]:
        return self.matches + self.distractors

    @property
    def gallery_labels(self) -> np.ndarray:
        return np.concatenate([self.match_labels, np.full(len(self.distractors), NO_IDENTITY, dtype=np.int64)])

    @property
    def all_paths(self) -> list[str]:
        return self.probes + self.gallery


def _list_images(folder: Path) -> list[str]:
    """File names with the reference's extensions anywhere below ``folder`` (relative, sorted)."""
    out = []
    for dirpath, _, names in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / n).as_posix() for n in names if os.path.splitext(n)[1] in EXTENSIONS]
    return sorted(out)


def _label(path: Path, name: str) -> int:
    prefix = os.path.basename(name).split("_")[0]
    try:
        return int(prefix)
    except ValueError:
        raise InputError(
            f"{path / name}: the identity is the file name's integer prefix before '_', got {prefix!r}"
        ) from None


def read_mat_names(path: Path, key: str) -> list[str]:
    """The N x 1 cell array of file names ``key`` in a TinyFace ``.mat`` file; InputError naming the file."""
    import scipy.io

    if not path.is_file():
        raise MissingInputError(f"TinyFace protocol file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises ValueError, TypeError, struct.error, ... on bad bytes
        raise InputError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None
    if key not in mat:
        raise InputError(f"{path}: no variable {key!r} (has {sorted(k for k in mat if not k.startswith('__'))})")
    cells = mat[key]
    if not isinstance(cells, np.ndarray) or cells.dtype != object or cells.ndim != 2 or cells.shape[1] != 1:
        raise InputError(
            f"{path}: {key!r} must be an N x 1 cell array of file names, got "
            f"{getattr(cells, 'dtype', type(cells).__name__)} {getattr(cells, 'shape', '')}"
        )
    names = []
    for i, c in enumerate(cells[:, 0]):
        if not (isinstance(c, np.ndarray) and c.dtype.kind == "U" and c.size == 1):
            raise InputError(f"{path}: {key}[{i}] is not a file name (got {getattr(c, 'dtype', type(c).__name__)})")
        names.append(str(c.item()))
    if not names:
        raise InputError(f"{path}: {key!r} is empty")
    return names


def read_tinyface(root: str | os.PathLike, aligned_dir: str = ALIGNED_DIR) -> TinyFaceLayout:
    """Read and check a TinyFace root (see the module docstring); every problem names its file or folder."""
    root = Path(root)
    testing = root / "tinyface" / "Testing_Set"
    aligned = root / aligned_dir
    for d in [testing / f for f in FOLDERS] + [aligned / f for f in FOLDERS]:
        if not d.is_dir():
            raise MissingInputError(f"TinyFace folder not found: {d}")
    lists = {f: _list_images(testing / f) for f in FOLDERS}
    for f in FOLDERS:
        if not lists[f]:
            raise InputError(f"{testing / f}: no images ({', '.join(EXTENSIONS)}); the protocol needs every folder")
    for folder, (name, key) in MAT_FILES.items():
        listed = read_mat_names(testing / name, key)
        have = set(lists[folder])
        absent = [n for n in listed if n not in have]
        if absent:
            raise InputError(
                f"{testing / name}: {len(absent)} of its {len(listed)} {key} names are not in "
                f"{testing / folder} (first: {absent[0]!r})"
            )
    missing = [f"{f}/{n}" for f in FOLDERS for n in lists[f] if not (aligned / f / n).is_file()]
    if missing:
        raise MissingInputError(f"{len(missing)} images have no aligned copy under {aligned} (first: {missing[0]})")
    probe_labels = np.array([_label(testing / "Probe", n) for n in lists["Probe"]], dtype=np.int64)
    match_labels = np.array([_label(testing / "Gallery_Match", n) for n in lists["Gallery_Match"]], dtype=np.int64)
    unmated = np.flatnonzero(~np.isin(probe_labels, match_labels))
    if unmated.size:
        i = int(unmated[0])
        raise InputError(
            f"{testing / 'Probe' / lists['Probe'][i]}: identity {int(probe_labels[i])} has no image in "
            f"{testing / 'Gallery_Match'} ({unmated.size} such probes): closed-set identification "
            "needs a mate for every probe"
        )
    return TinyFaceLayout(
        root=root,
        aligned=aligned,
        probes=[f"Probe/{n}" for n in lists["Probe"]],
        matches=[f"Gallery_Match/{n}" for n in lists["Gallery_Match"]],
        distractors=[f"Gallery_Distractor/{n}" for n in lists["Gallery_Distractor"]],
        probe_labels=probe_labels,
        match_labels=match_labels,
    )


def load_features(path: str | os.PathLike, layout: TinyFaceLayout) -> np.ndarray:
    """Features [len(layout.all_paths), D] float32 from an ``.npz`` with ``paths`` (relative to the aligned
    folder) and ``features`` [N, D]; the file may hold more images than the protocol uses."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"features file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            lacking = {"paths", "features"} - set(z.files)
            if lacking:
                raise InputError(f"{path}: lacks array(s) {sorted(lacking)} (needs 'paths' [N] and 'features' [N, D])")
            paths, feats = z["paths"], z["features"]
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a numpy .npz without pickles: {e}") from None
    if paths.ndim != 1 or paths.dtype.kind != "U":
        raise InputError(f"{path}: 'paths' must be a 1-D string array, got {paths.dtype} {paths.shape}")
    if feats.ndim != 2 or feats.shape[0] != paths.size or feats.dtype.kind not in "fiu":
        raise InputError(f"{path}: 'features' must be numbers [{paths.size}, D], got {feats.dtype} {feats.shape}")
    index = {str(p).replace(os.sep, "/"): i for i, p in enumerate(paths)}
    if len(index) != paths.size:
        raise InputError(f"{path}: 'paths' lists some image twice")
    wanted = layout.all_paths
    absent = [p for p in wanted if p not in index]
    if absent:
        raise InputError(
            f"{path}: no features for {len(absent)} of the {len(wanted)} protocol images "
            f"(first: {absent[0]}; paths are relative to {layout.aligned})"
        )
    out = np.asarray(feats[[index[p] for p in wanted]], dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(out).all(1))
    if bad.size:
        raise InputError(f"{path}: features of {wanted[bad[0]]} hold NaN or inf ({bad.size} such rows)")
    return out


def _read_rgb(path: Path) -> np.ndarray | str:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return "not a readable image"
    if img.shape[:2] != (112, 112):  # the recognisers take 112 x 112
        img = cv2.resize(img, (112, 112), interpolation=cv2.INTER_LINEAR)
    return img[:, :, ::-1]


def image_features(
    layout: TinyFaceLayout, embedder: Embedder, batch_size: int = 256, progress: bool = True, workers: int | None = None
) -> np.ndarray:
    """Flip-added, L2-normalised features float32 of every protocol image (the ``.bin`` sets' embedding)."""
    from scoremix_plugin.verification.evaluate import embed_images

    paths = layout.all_paths
    feats: np.ndarray | None = None
    starts = range(0, len(paths), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="TinyFace images", unit="batch")
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:  # cv2 decodes without the GIL
        for s in starts:
            batch = paths[s : s + batch_size]
            imgs = list(pool.map(lambda p: _read_rgb(layout.aligned / p), batch))
            bad = [(p, v) for p, v in zip(batch, imgs) if isinstance(v, str)]
            if bad:
                raise InputError(f"{layout.aligned / bad[0][0]}: {bad[0][1]} ({len(bad)} in this batch)")
            emb, _ = embed_images(embedder, np.stack(imgs), batch_size=batch_size)
            if feats is None:
                feats = np.empty((len(paths), emb.shape[1]), dtype=np.float32)
            feats[s : s + len(batch)] = emb
    assert feats is not None
    return feats


@dataclass
class TinyFaceResult:
    ranks: tuple[int, ...]
    cmc_count: list[int]
    num_probes: int
    num_matches: int
    num_distractors: int
    tied_probes: int  # probes whose best mate ties with a non-mated entry (see identification.search)
    open_set: list[dict[str, float]]
    cmc_curve: np.ndarray  # [max rank] share found within rank 1 .. R (for the plot)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cmc(self) -> dict[int, float]:
        return {r: c / self.num_probes for r, c in zip(self.ranks, self.cmc_count)}

    @property
    def rank1(self) -> float:
        return self.cmc_count[self.ranks.index(1)] / self.num_probes if 1 in self.ranks else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranks": list(self.ranks),
            "cmc": [self.cmc[r] for r in self.ranks],
            "cmc_count": list(self.cmc_count),
            "num_probes": self.num_probes,
            "num_gallery": self.num_matches + self.num_distractors,
            "num_matches": self.num_matches,
            "num_distractors": self.num_distractors,
            "tied_probes": self.tied_probes,
            "open_set": list(self.open_set),
            "meta": dict(self.meta),
        }


def evaluate_tinyface_features(
    layout: TinyFaceLayout,
    feats: np.ndarray,
    ranks: Sequence[int] = RANKS,
    fars: Sequence[float] = OPEN_SET_FARS,
    progress: bool = False,
    curve_ranks: int = 50,
) -> TinyFaceResult:
    """The protocol on features [len(layout.all_paths), D] (rows in ``layout.all_paths`` order)."""
    ranks = tuple(int(r) for r in ranks)
    if not ranks or min(ranks) < 1:
        raise InputError(f"ranks must be positive, got {ranks}")
    n_p = len(layout.probes)
    if feats.shape[0] != len(layout.all_paths):
        raise InputError(f"features have {feats.shape[0]} rows, the protocol has {len(layout.all_paths)} images")
    stats = search(feats[:n_p], layout.probe_labels, feats[n_p:], layout.gallery_labels, progress=progress)
    curve = np.array(cmc_counts(stats.rank, range(1, curve_ranks + 1))) / n_p
    return TinyFaceResult(
        ranks=ranks,
        cmc_count=cmc_counts(stats.rank, ranks),
        num_probes=n_p,
        num_matches=len(layout.matches),
        num_distractors=len(layout.distractors),
        tied_probes=int(np.count_nonzero(stats.tied)),
        open_set=open_set_dir(stats, fars),
        cmc_curve=curve,
        meta={"root": str(layout.root), "aligned": str(layout.aligned)},
    )


def evaluate_tinyface(
    root: str | os.PathLike,
    embedder: Embedder,
    *,
    aligned_dir: str = ALIGNED_DIR,
    batch_size: int = 256,
    progress: bool = True,
    ranks: Sequence[int] = RANKS,
    fars: Sequence[float] = OPEN_SET_FARS,
) -> TinyFaceResult:
    """TinyFace numbers of a model: read the root, embed every protocol image (flip-added), search."""
    layout = read_tinyface(root, aligned_dir)
    feats = image_features(layout, embedder, batch_size=batch_size, progress=progress)
    return evaluate_tinyface_features(layout, feats, ranks, fars, progress)
