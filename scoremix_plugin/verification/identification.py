"""Closed- and open-set identification (1:N search) on features, in chunks with bounded memory.

    from scoremix_plugin.verification.identification import search, cmc_counts
    stats = search(probe_feats, probe_labels, gallery_feats, gallery_labels, keep_top=2000)
    cmc_counts(stats.rank, (1, 5, 20))     # probes whose first mate is within rank r

TinyFace (3,728 probes x 157,871 gallery images) as one score matrix is 2.35 GB in float32, and the
reference implementations add an argsort of it (int64, 4.7 GB). Here the probes go through in chunks; of
each chunk's scores only what the metrics need is kept:

- ``best_mate``: a probe's highest score over the gallery entries of its own identity;
- ``rank``: 1 + the number of non-mated entries scoring strictly above ``best_mate``. A probe is found
  at rank r when any of its mates is among the r best entries; with several mates the best one decides.
  Equal scores are counted in the probe's favour (``tied`` says how many non-mated entries tie with
  ``best_mate``: the references break such ties by the order of an unstable sort, so they are undefined
  there; with real-valued features they essentially never occur, and the count makes it visible if they do);
- ``best_nonmate``: a probe's highest non-mated score (its search result were its mates not enrolled);
- ``top_nonmate``: the ``keep_top`` highest non-mated scores over ALL probes (a running top-k), which is
  what insightface's IJB 1:N TPIR rule thresholds on.

The score of a probe and a gallery entry is their inner product in the features' dtype (``probe @ gallery.T``,
as both references compute it). BLAS blocks a chunk of rows differently from the whole matrix, so float32
scores can differ from the one-matrix scores in the last bit (float64 too, by ~1e-15, for one-row chunks); a
count changes only where two scores lie within that rounding of each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scoremix_plugin.errors import InputError

# Label of gallery entries that belong to no probe identity (TinyFace's distractors): no probe carries it.
NO_IDENTITY = np.iinfo(np.int64).min
CHUNK_BYTES = 64 << 20  # one chunk's score matrix; the working set is about 3x this (scores, mask, compare)


@dataclass
class SearchStats:
    """Per-probe search results (see the module docstring) and the global top non-mated scores."""

    best_mate: np.ndarray  # [P] float64
    rank: np.ndarray  # [P] int64, >= 1
    tied: np.ndarray  # [P] int64
    best_nonmate: np.ndarray  # [P] float64 (-inf when the gallery holds only mates)
    top_nonmate: np.ndarray  # [K] float64, descending
    num_nonmate: int  # non-mated (probe, gallery entry) pairs in total


def _chunk_rows(gallery_size: int, itemsize: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // max(1, gallery_size * itemsize))


def search(
    probe_feats: np.ndarray,
    probe_labels: np.ndarray,
    gallery_feats: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    keep_top: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> SearchStats:
    """Score every probe against the gallery chunk by chunk; every probe must have a mate (InputError otherwise)."""
    probe_labels = np.asarray(probe_labels, dtype=np.int64)
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    if probe_feats.ndim != 2 or gallery_feats.ndim != 2 or probe_feats.shape[1] != gallery_feats.shape[1]:
        raise InputError(
            f"probe features {probe_feats.shape} and gallery features {gallery_feats.shape} must be "
            "2-D with the same width"
        )
    if probe_feats.shape[0] != probe_labels.size or gallery_feats.shape[0] != gallery_labels.size:
        raise InputError("one label per probe and per gallery entry is needed")
    if gallery_labels.size == 0 or probe_labels.size == 0:
        raise InputError(f"empty search: {probe_labels.size} probes, {gallery_labels.size} gallery entries")
    p, g = probe_labels.size, gallery_labels.size
    rows = _chunk_rows(g, probe_feats.dtype.itemsize, chunk_bytes)
    best_mate = np.empty(p, dtype=np.float64)
    best_nonmate = np.empty(p, dtype=np.float64)
    rank = np.empty(p, dtype=np.int64)
    tied = np.empty(p, dtype=np.int64)
    top = np.empty(0, dtype=np.float64)
    num_nonmate = 0
    starts = range(0, p, rows)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="search", unit="chunk", leave=False)
    for s in starts:
        e = min(s + rows, p)
        scores = probe_feats[s:e] @ gallery_feats.T
        mated = probe_labels[s:e, None] == gallery_labels[None, :]
        has = mated.any(1)
        if not has.all():
            raise InputError(
                f"probe {s + int(np.flatnonzero(~has)[0])} (identity "
                f"{int(probe_labels[s + int(np.flatnonzero(~has)[0])])}) has no mate in the gallery"
            )
        best = np.where(mated, scores, -np.inf).max(1)
        scores[mated] = -np.inf  # from here: non-mated scores only
        best_mate[s:e] = best
        best_nonmate[s:e] = scores.max(1)
        col = best.astype(scores.dtype)[:, None]  # exact: best is one of the scores
        rank[s:e] = 1 + np.count_nonzero(scores > col, axis=1)
        tied[s:e] = np.count_nonzero(scores == col, axis=1)
        num_nonmate += int(scores.size - np.count_nonzero(mated))
        if keep_top:
            flat = scores.ravel()
            k = min(keep_top, flat.size)
            part = np.partition(flat, flat.size - k)[flat.size - k :].astype(np.float64)
            top = np.concatenate([top, part])
            if top.size > keep_top:
                top = np.partition(top, top.size - keep_top)[top.size - keep_top :]
    top = np.sort(top)[::-1]
    top = top[np.isfinite(top)]  # -inf entries are mates (a chunk with fewer non-mates than keep_top)
    return SearchStats(best_mate, rank, tied, best_nonmate, top, num_nonmate)


def cmc_counts(rank: np.ndarray, ranks: Sequence[int]) -> list[int]:
    """Probes found within each rank (the cumulative match characteristic as counts)."""
    return [int(np.count_nonzero(rank <= r)) for r in ranks]


def open_set_thresholds(best_nonmate: np.ndarray, fars: Sequence[float], epsilon: float = 1e-5) -> list[float]:
    """Score thresholds for false-alarm rates, by the rule of AdaFace's ``find_thresholds_by_FAR``.

    The non-mated search scores sorted high to low; ``n = round(len * FAR)`` (numpy's half-to-even) false
    alarms: the threshold is the n-th highest score (accepting ``>=``), or the highest + ``epsilon`` when n = 0.
    """
    neg = np.sort(np.asarray(best_nonmate, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise InputError("open-set identification needs at least one non-mated search")
    counts = np.round(neg.size * np.asarray(fars, dtype=np.float64)).astype(np.int64)
    return [float(neg[0] + epsilon) if n == 0 else float(neg[min(n, neg.size) - 1]) for n in counts]


def open_set_dir(stats: SearchStats, fars: Sequence[float], rank: int = 1) -> list[dict[str, float]]:
    """DIR (detection and identification rate) at rank ``rank`` for each FAR, with the FPIR reached.

    A probe's non-mated search is itself with its mates removed from the gallery (``best_nonmate``);
    DIR = share of probes found within ``rank`` whose best mated score also reaches the threshold.
    """
    out = []
    for far, th in zip(fars, open_set_thresholds(stats.best_nonmate, fars)):
        hit = (stats.rank <= rank) & (stats.best_mate >= th)
        out.append(
            {
                "far": float(far),
                "threshold": th,
                "dir": float(np.mean(hit)),
                "dir_count": int(np.count_nonzero(hit)),
                "fpir": float(np.mean(stats.best_nonmate >= th)),
            }
        )
    return out


def tpir_at_fpir(stats: SearchStats, fars: Sequence[float]) -> list[dict[str, float]]:
    """insightface ``ijb_1n.py``'s rule: threshold = the ``ceil(P * FAR)``-th highest non-mated score over all
    probes; TPIR = share of probes whose mated score is strictly above it. ``stats`` needs ``keep_top`` >= that."""
    p = stats.rank.size
    out = []
    for far in fars:
        k = int(np.ceil(p * far))
        if k < 1 or k > stats.top_nonmate.size:
            raise InputError(
                f"FPIR {far:g} needs the {k}-th highest non-mated score; "
                f"{stats.top_nonmate.size} were kept ({stats.num_nonmate} exist)"
            )
        th = float(stats.top_nonmate[k - 1])
        hits = int(np.count_nonzero(stats.best_mate > th))
        out.append({"fpir": float(far), "threshold": th, "tpir": hits / p, "tpir_count": hits})
    return out
