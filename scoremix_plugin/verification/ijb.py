"""IJB-B / IJB-C 1:1 template verification, with the numbers of arcface_torch's ``eval_ijbc.py``.

    from scoremix_plugin.verification.evaluate import load_embedder
    from scoremix_plugin.verification.ijb import evaluate_ijb
    result = evaluate_ijb("/data/IJB_release/IJBC", "IJBC", load_embedder("model.onnx"), modes="all")
    result.modes["F1N1D1"].tar            # TAR at FAR 1e-6 .. 1e-1, the host's rule

The protocol, step by step (each step does the host's arithmetic in the host's dtypes, so scores are
bit-identical and every TAR / AUC equals the host's):

1. align every image: 5 landmarks -> least-squares similarity onto the ArcFace 112x112 template (+8 px
   on x), bilinear warp, BGR -> RGB (``face_align.align_face``, also importable from here); embed the crop
   and its horizontal flip;
2. per mode ``F?N?D?``: F1 adds the flip's features to the image's (F0: the image's only), N0 L2-normalises
   each image (N1 keeps the norm), D1 weights each image by its detector faceness score (float32);
3. template features: images of one media are averaged, a template is the sum over its media, then
   L2-normalised (float64);
4. a pair's score is the cosine of its two template features, scored in chunks (bounded memory);
5. ROC with scikit-learn's default point dropping, TAR at each FAR = the TPR of the point whose FPR is
   nearest (first in descending-FPR order on ties); AUC by the trapezoid rule. Beside it, the strict TAR:
   the highest TAR whose FAR does not exceed the target, flagged when there are fewer than 1/FAR impostors.

Reading the files is ``ijb_meta``; the Markdown table and ROC plot are ``report.format_ijb_table`` /
``report.write_ijb_report``; the command is ``scoremix verify-ijb`` (``cli.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scoremix_plugin.verification.face_align import IMAGE_SIZE, align_face  # noqa: F401 (align_face: public here too)
from scoremix_plugin.verification.ijb_meta import MAX_LISTED, IJBError, IJBMeta, _listing, read_ijb_meta
from scoremix_plugin.verification.protocol import TarAtFar, tar_at_far

IJB_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
MODES: tuple[str, ...] = ("F1N1D1", "F1N1D0", "F1N0D1", "F1N0D0", "F0N1D1", "F0N1D0", "F0N0D1", "F0N0D0")

Embedder = Callable[[np.ndarray], np.ndarray]


# Image features.


def _load_aligned(meta: IJBMeta, i: int) -> np.ndarray | str:
    """Image ``i`` aligned (RGB CHW uint8), or the reason it cannot be."""
    import cv2

    path = meta.image_path(i)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return "not a readable image" if path.is_file() else "file not found"
    try:
        return align_face(img, meta.landmarks[i])[0]
    except ValueError as e:
        return str(e)


def _to_unit(crops: np.ndarray) -> np.ndarray:
    """uint8 [B, 3, H, W] -> float32 in [-1, 1], the host's (x / 255 - 0.5) / 0.5."""
    return (crops.astype(np.float32) / 255.0 - 0.5) / 0.5


def image_features(
    meta: IJBMeta, embedder: Embedder, batch_size: int = 128, progress: bool = True, workers: int | None = None
) -> np.ndarray:
    """Features [N, 2D] float32 of every image in 5pts order: the crop's embedding, then its flip's.

    Missing files are counted before any model work; images that fail to decode or align are collected
    and reported together at the end. Either way an IJBError names them: a template with a missing image
    would otherwise be scored on a partial (or empty) feature.
    """
    if batch_size < 1:
        raise IJBError(f"batch size must be >= 1, got {batch_size}")
    n = meta.num_images
    missing = [i for i in range(n) if not meta.image_path(i).is_file()]
    if missing:
        listed = [f"{meta.image_names[i]} ({meta.where(i)})" for i in missing[:MAX_LISTED]]
        raise IJBError(f"{len(missing)} of {n} images missing under {meta.image_dir}: {_listing(listed, len(missing))}")
    workers = workers or min(8, os.cpu_count() or 1)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"{meta.target} images", unit="batch")
    feats: np.ndarray | None = None
    failed: list[tuple[int, str]] = []
    # cv2 releases the GIL while decoding and warping, so threads overlap the loading with the model.
    with ThreadPoolExecutor(workers) as pool:
        for start in starts:
            idx = range(start, min(start + batch_size, n))
            loaded = list(pool.map(lambda i: _load_aligned(meta, i), idx))
            ok = [k for k, v in enumerate(loaded) if not isinstance(v, str)]
            failed += [(idx[k], v) for k, v in enumerate(loaded) if isinstance(v, str)]
            if not ok:
                continue
            x = _to_unit(np.stack([loaded[k] for k in ok]))
            views = [
                np.asarray(embedder(x), dtype=np.float32),
                np.asarray(embedder(np.ascontiguousarray(x[..., ::-1])), dtype=np.float32),
            ]
            for v in views:
                if v.ndim != 2 or v.shape[0] != x.shape[0]:
                    raise IJBError(f"the embedder returned shape {v.shape} for a batch of {x.shape[0]} images")
            if feats is None:
                feats = np.full((n, 2 * views[0].shape[1]), np.nan, dtype=np.float32)
            feats[[idx[k] for k in ok]] = np.concatenate(views, axis=1)
    if failed:
        listed = [f"{meta.image_names[i]} ({meta.where(i)}): {why}" for i, why in failed[:MAX_LISTED]]
        raise IJBError(f"{len(failed)} of {n} images could not be loaded or aligned: {_listing(listed, len(failed))}")
    assert feats is not None
    return feats


# The protocol on features.


def check_modes(modes: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"``, ``"F1N1D1,F0N0D0"`` or a sequence of mode names -> validated tuple (order kept)."""
    if isinstance(modes, str):
        modes = MODES if modes.strip().lower() == "all" else [m.strip() for m in modes.split(",") if m.strip()]
    out = tuple(str(m).upper() for m in modes)
    bad = [m for m in out if m not in MODES]
    if bad or not out:
        raise IJBError(f"unknown IJB mode(s) {bad or '(none given)'}: choose from {', '.join(MODES)} or 'all'")
    return tuple(dict.fromkeys(out))


def mode_features(img_feats: np.ndarray, faceness: np.ndarray, mode: str) -> np.ndarray:
    """Per-image features [N, D] of one mode, in float32 with the host's operations in its order."""
    flip, keep_norm, weighted = (mode[i] == "1" for i in (1, 3, 5))
    d = img_feats.shape[1] // 2
    f = img_feats[:, :d] + img_feats[:, d:] if flip else img_feats[:, :d].copy()
    # In place from here (same float32 results as the host's new arrays; IJB-C: 470 MB less at the peak).
    if not keep_norm:
        f /= np.sqrt(np.sum(f**2, -1, keepdims=True))
    if weighted:
        f *= faceness[:, np.newaxis]
    return f


def _segment_sums(rows: np.ndarray, index: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of ``rows[index[start:start+count]]`` per segment, adding rows strictly one after another.

    The host sums each template's rows with ``np.sum`` / ``np.mean`` over the leading axis, which adds
    them in order; ``np.add.reduceat`` does not (it differs in the last float32 bit). Step k adds the k-th
    row of every segment that has one, so the work is one pass over the rows, vectorised over segments.
    """
    by_length = np.argsort(-counts, kind="stable")
    lengths = counts[by_length]
    out = rows[index[starts]]  # the first row: 0 + x == x, as the host's running sum starts
    for k in range(1, int(lengths[0]) if lengths.size else 0):
        live = by_length[: np.searchsorted(-lengths, -k, side="left")]  # segments longer than k
        out[live] += rows[index[starts[live] + k]]
    return out


def template_features(feats: np.ndarray, templates: np.ndarray, medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised template features float64 [T, D], sorted template ids [T]).

    Within a template, the images of one media are averaged and the media means summed, in float32 and in
    the host's order (file order inside a media, media ids ascending); the sum is normalised in float64.
    """
    order = np.lexsort((medias, templates))  # stable: file order inside each (template, media)
    t_sorted, m_sorted = templates[order], medias[order]
    media_start = np.flatnonzero(np.r_[True, (t_sorted[1:] != t_sorted[:-1]) | (m_sorted[1:] != m_sorted[:-1])])
    media_count = np.diff(np.r_[media_start, order.size])
    media_mean = _segment_sums(feats, order, media_start, media_count)
    media_mean /= media_count[:, None].astype(np.float32)
    media_template = t_sorted[media_start]
    template_start = np.flatnonzero(np.r_[True, media_template[1:] != media_template[:-1]])
    template_count = np.diff(np.r_[template_start, media_template.size])
    summed = _segment_sums(media_mean, np.arange(media_template.size), template_start, template_count)
    summed = summed.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", summed, summed))
    norms[norms == 0] = 1.0  # a zero template stays zero (scikit-learn's normalize does the same)
    summed /= norms[:, np.newaxis]
    return summed, media_template[template_start]


def pair_rows(unique_templates: np.ndarray, pair_templates: np.ndarray) -> np.ndarray:
    """Rows [P, 2] of each pair's templates in ``unique_templates`` (sorted); IJBError for an unknown one."""
    rows = np.searchsorted(unique_templates, pair_templates)
    np.minimum(rows, unique_templates.size - 1, out=rows)  # in place: IJB-C's rows are 250 MB
    unknown = unique_templates[rows] != pair_templates
    if unknown.any():
        i = int(np.flatnonzero(unknown.any(1))[0])
        raise IJBError(
            f"pair {i} (line {i + 1}) names template {pair_templates[i].tolist()} without features "
            f"({int(unknown.any(1).sum())} such pairs)"
        )
    return rows


def score_pairs(
    template_feats: np.ndarray,
    rows: np.ndarray,
    chunk: int = 256,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "pairs",
) -> np.ndarray:
    """Cosine score float64 [P] of each pair of template rows, in chunks on ``workers`` threads.

    Memory beyond the output: two ``chunk x D`` buffers per thread (IJB-C's 15.6M pairs at once would be
    2 x 64 GB). Small chunks keep the buffers in cache; numpy releases the GIL inside take / multiply / sum.
    """
    p, d = rows.shape[0], template_feats.shape[1]
    scores = np.empty(p, dtype=np.float64)
    workers = max(1, min(workers or min(4, os.cpu_count() or 1), (p + chunk - 1) // chunk))
    spans = [(s, min(s + chunk * 64, p)) for s in range(0, p, chunk * 64)]

    def run(span: tuple[int, int]) -> int:
        a = np.empty((chunk, d), dtype=template_feats.dtype)
        b = np.empty((chunk, d), dtype=template_feats.dtype)
        for s in range(span[0], span[1], chunk):
            n = min(chunk, span[1] - s)
            # mode="clip": rows are known to be in range, and "raise" would buffer the output (several x slower).
            np.take(template_feats, rows[s : s + n, 0], axis=0, out=a[:n], mode="clip")
            np.take(template_feats, rows[s : s + n, 1], axis=0, out=b[:n], mode="clip")
            # Row-wise product then sum over the last axis: numpy's pairwise summation, as the host's.
            np.multiply(a[:n], b[:n], out=a[:n])
            np.sum(a[:n], axis=1, out=scores[s : s + n])
        return span[1] - span[0]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=p, desc=desc, unit="pair", unit_scale=True, leave=False)
    with ThreadPoolExecutor(workers) as pool:
        for done in pool.map(run, spans):
            if bar is not None:
                bar.update(done)
    if bar is not None:
        bar.close()
    return scores


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with scikit-learn ``roc_curve``'s default point dropping (increasing FPR).

    One point per distinct score (highest first); interior points on a straight segment (zero second
    difference in both counts) are dropped; (0, 0) at threshold +inf is prepended.
    """
    # Any sort will do: a tie's points are taken at its end, where the counts do not depend on its order.
    order = np.argsort(scores)[::-1]
    s = scores[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(labels[order], dtype=np.float64)[last_of_tie]
    fps = 1 + last_of_tie - tps
    thresholds = s[last_of_tie]
    if fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def host_tar(fpr: np.ndarray, tpr: np.ndarray, fars: Sequence[float]) -> list[float]:
    """The host's table rule: the TPR of the point whose FPR is nearest each FAR, scanning FPR high to low."""
    fpr_desc, tpr_desc = fpr[::-1], tpr[::-1]
    return [float(tpr_desc[int(np.argmin(np.abs(fpr_desc - far)))]) for far in fars]


def trapezoid_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


# Results.


@dataclass
class IJBModeResult:
    """One mode's numbers; ``roc_fpr`` / ``roc_tpr`` are the host's (point-dropped) curve."""

    mode: str
    tar: list[float]
    tar_strict: list[TarAtFar]
    auc: float
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    scores: np.ndarray | None = None  # [P] pair scores, kept only when asked

    def to_dict(self) -> dict[str, Any]:
        return {
            "tar": list(self.tar),
            "tar_strict": [t.tar for t in self.tar_strict],
            "tar_strict_few_negatives": [t.few_negatives for t in self.tar_strict],
            "auc": self.auc,
        }


@dataclass
class IJBResult:
    """IJB-B or IJB-C numbers for one model or feature set, one entry per mode."""

    target: str
    fars: tuple[float, ...]
    modes: dict[str, IJBModeResult]
    num_images: int
    num_templates: int
    num_pairs: int
    num_genuine: int
    num_impostor: int
    meta: dict[str, Any] = field(default_factory=dict)  # where the numbers came from (root, model, features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "far": list(self.fars),
            "modes": {m: r.to_dict() for m, r in self.modes.items()},
            "num_images": self.num_images,
            "num_templates": self.num_templates,
            "num_pairs": self.num_pairs,
            "num_genuine": self.num_genuine,
            "num_impostor": self.num_impostor,
            "meta": dict(self.meta),
        }


def evaluate_modes(
    img_feats: np.ndarray,
    faceness: np.ndarray,
    templates: np.ndarray,
    medias: np.ndarray,
    pair_templates: np.ndarray,
    labels: np.ndarray,
    modes: str | Sequence[str] = ("F1N1D1",),
    fars: Sequence[float] = IJB_FARS,
    keep_scores: bool = False,
    target: str = "IJBC",
    progress: bool = False,
) -> IJBResult:
    """The protocol on arrays: image features [N, 2D] (image | flip) in the order of ``templates`` / ``medias``."""
    modes = check_modes(modes)
    labels = np.asarray(labels, dtype=bool)
    results: dict[str, IJBModeResult] = {}
    rows = None
    for mode in modes:
        feats = mode_features(img_feats, faceness, mode)
        tfeats, unique_templates = template_features(feats, templates, medias)
        del feats
        bad = np.flatnonzero(~np.isfinite(tfeats).all(1))
        if bad.size:
            raise IJBError(
                f"mode {mode}: template {int(unique_templates[bad[0]])} has a non-finite feature "
                f"({bad.size} templates; an image feature of zero norm cannot be L2-normalised)"
            )
        if rows is None:  # the same templates in every mode
            rows = pair_rows(unique_templates, pair_templates)
        scores = score_pairs(tfeats, rows, progress=progress, desc=f"{target} {mode} pairs")
        del tfeats
        fpr, tpr, _ = roc_points(labels, scores)
        strict = tar_at_far(-scores, labels, fars)  # distances: accept score > threshold
        results[mode] = IJBModeResult(
            mode,
            host_tar(fpr, tpr, fars),
            [strict[float(f)] for f in fars],
            trapezoid_auc(fpr, tpr),
            fpr,
            tpr,
            scores if keep_scores else None,
        )
    num_genuine = int(labels.sum())
    return IJBResult(
        target=target,
        fars=tuple(float(f) for f in fars),
        modes=results,
        num_images=len(templates),
        num_templates=int(np.unique(templates).size),
        num_pairs=int(labels.size),
        num_genuine=num_genuine,
        num_impostor=int(labels.size) - num_genuine,
    )


def evaluate_ijb_features(
    meta: IJBMeta,
    img_feats: np.ndarray,
    modes: str | Sequence[str] = ("F1N1D1",),
    fars: Sequence[float] = IJB_FARS,
    keep_scores: bool = False,
    progress: bool = False,
) -> IJBResult:
    """The protocol on precomputed image features [N, 2D] (rows in 5pts order) of ``meta``'s images."""
    if img_feats.ndim != 2 or img_feats.shape[0] != meta.num_images or img_feats.shape[1] % 2:
        raise IJBError(f"image features must be [{meta.num_images}, 2*D], got shape {img_feats.shape}")
    result = evaluate_modes(
        img_feats,
        meta.faceness,
        meta.templates,
        meta.medias,
        meta.pair_templates,
        meta.labels,
        modes,
        fars,
        keep_scores,
        meta.target,
        progress,
    )
    result.meta["root"] = str(meta.root)
    return result


def evaluate_ijb(
    root: str | os.PathLike,
    target: str,
    embedder: Embedder,
    modes: str | Sequence[str] = ("F1N1D1",),
    *,
    batch_size: int = 128,
    progress: bool = True,
    fars: Sequence[float] = IJB_FARS,
    keep_scores: bool = False,
) -> IJBResult:
    """IJB-B / IJB-C numbers of a model: read ``root``'s meta files, align and embed every image, score."""
    modes = check_modes(modes)
    meta = read_ijb_meta(root, target)
    feats = image_features(meta, embedder, batch_size=batch_size, progress=progress)
    return evaluate_ijb_features(meta, feats, modes, fars, keep_scores, progress)
