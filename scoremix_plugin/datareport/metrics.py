"""Verification statistics of an embedded face set: pairs, EER, FNMR@FMR, d', FDR, per-identity consistency.

Pure numpy on unit-row embeddings (cosine = dot product); nothing here loads a model or a file, so the
dataset report, the quality gate and the benchmarks share one implementation.

Conventions (one place, used by every caller):

- a comparison is ACCEPTED when its cosine is strictly greater than the threshold ``t``;
- the threshold at a false-match rate ``f`` is the ``floor(f * n)``-th largest impostor score (0-based), so
  at most ``f * n`` impostor pairs are accepted. With fewer than ``1 / f`` impostor pairs this is the
  largest impostor score and the result carries ``too_few_pairs = True`` (the rate cannot be measured);
- means and spreads are population moments (ddof = 0): d' = |mu_g - mu_i| / sqrt((s_g^2 + s_i^2) / 2),
  FDR = (mu_g - mu_i)^2 / (s_g^2 + s_i^2);
- EER: where FMR(t) = #(impostor >= t) / n_i and FNMR(t) = #(genuine < t) / n_g cross, linearly
  interpolated between the two candidate thresholds that bracket the crossing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoremix_plugin.errors import InputError

DEFAULT_FMRS = (1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class Pairs:
    """Index pairs into one embedding matrix, and how many such pairs the set holds in all."""

    a: np.ndarray  # [P] int64
    b: np.ndarray  # [P] int64
    total: int  # all pairs of this kind in the set (P == total when nothing was sampled)
    sampled: bool  # True: a seeded uniform sample (with replacement) of the ``total`` pairs


@dataclass(frozen=True)
class Threshold:
    """The cosine at which impostor pairs reach a false-match rate."""

    far: float  # asked
    cosine: float  # accept when cosine > this
    achieved_far: float  # impostor pairs above it / impostor pairs
    impostor_pairs: int
    too_few_pairs: bool  # fewer than 1 / far impostor pairs: the largest impostor score stands in


@dataclass(frozen=True)
class FnmrAtFmr:
    fmr: float
    threshold: float
    fnmr: float
    achieved_fmr: float
    too_few_pairs: bool


@dataclass(frozen=True)
class ScoreStats:
    """Genuine vs impostor separation, each number with the pair counts it rests on."""

    genuine_pairs: int
    impostor_pairs: int
    genuine_total: int  # pairs the set holds (>= genuine_pairs when sampled)
    impostor_total: int
    genuine_mean: float
    genuine_std: float
    impostor_mean: float
    impostor_std: float
    eer: float
    eer_threshold: float
    d_prime: float
    fdr: float
    fnmr_at_fmr: tuple[FnmrAtFmr, ...]


# Pairs.


def genuine_pairs(labels: np.ndarray, cap: int, seed: int = 0) -> Pairs:
    """All within-identity pairs, or a seeded uniform sample of ``cap`` of them when there are more."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    per_class = counts.astype(np.int64) * (counts - 1) // 2
    total = int(per_class.sum())
    if total <= cap:
        a, b = [], []
        for n in np.unique(counts[counts > 1]):  # one triu pattern per class size, not per class
            iu, ju = np.triu_indices(int(n), 1)
            s = starts[counts == n][:, None]
            a.append((s + iu).ravel())
            b.append((s + ju).ravel())
        a = np.concatenate(a) if a else np.zeros(0, np.int64)
        b = np.concatenate(b) if b else np.zeros(0, np.int64)
        return Pairs(order[a], order[b], total, False)
    rng = np.random.default_rng([seed, 1])
    # A class in proportion to its pair count, then two distinct members: uniform over all genuine pairs.
    c = rng.choice(len(counts), size=cap, p=per_class / total)
    n = counts[c]
    i = rng.integers(0, n)
    j = rng.integers(0, n - 1)
    j = j + (j >= i)
    return Pairs(order[starts[c] + i], order[starts[c] + j], total, True)


def impostor_pairs(labels: np.ndarray, cap: int, seed: int = 0) -> Pairs:
    """All pairs of images of different identities, or a seeded uniform sample of ``cap`` of them."""
    labels = np.asarray(labels)
    n = len(labels)
    _, counts = np.unique(labels, return_counts=True)
    total = n * (n - 1) // 2 - int((counts.astype(np.int64) * (counts - 1) // 2).sum())
    if total <= cap:
        # Class by class against every later class: O(pairs), even when one identity holds most images
        # (a triu of all n images would be n^2 / 2 candidates for a handful of impostor pairs).
        order = np.argsort(labels, kind="stable")
        _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        a = [np.repeat(order[s : s + c], n - s - c) for s, c in zip(starts, counts)]
        b = [np.tile(order[s + c :], c) for s, c in zip(starts, counts)]
        return Pairs(np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64), total, False)
    rng = np.random.default_rng([seed, 2])
    a_parts, b_parts, got = [], [], 0
    while got < cap:  # rejection: same-identity draws are rare unless one identity dominates the set
        m = int((cap - got) * 1.2) + 64
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        ok = labels[a] != labels[b]
        a_parts.append(a[ok])
        b_parts.append(b[ok])
        got += int(ok.sum())
    return Pairs(np.concatenate(a_parts)[:cap], np.concatenate(b_parts)[:cap], total, True)


def pair_scores(emb: np.ndarray, pairs: Pairs, chunk: int = 1 << 15) -> np.ndarray:
    """Cosine of each pair of unit rows, ``chunk`` pairs at a time (two [chunk, D] gathers in memory)."""
    out = np.empty(len(pairs.a), np.float32)
    for s in range(0, len(out), chunk):
        x, y = emb[pairs.a[s : s + chunk]], emb[pairs.b[s : s + chunk]]
        out[s : s + chunk] = np.einsum("ij,ij->i", x, y)
    return out


# Scores.


def threshold_at_far(impostor: np.ndarray, far: float) -> Threshold:
    """The cosine above which at most ``far`` of the impostor scores lie (see the module docstring)."""
    if not 0 < far < 1:
        raise InputError(f"far must be in (0, 1), got {far}")
    imp = np.asarray(impostor, np.float64)
    if len(imp) == 0:
        raise InputError("no impostor pairs: a threshold needs at least two identities")
    k = int(np.floor(far * len(imp)))
    t = float(-np.partition(-imp, k)[k])
    return Threshold(
        far=float(far),
        cosine=t,
        achieved_far=float(np.mean(imp > t)),
        impostor_pairs=len(imp),
        too_few_pairs=len(imp) * far < 1,
    )


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold at the crossing)."""
    g, i = np.sort(np.asarray(genuine, np.float64)), np.sort(np.asarray(impostor, np.float64))
    t = np.unique(np.concatenate([g, i, [np.inf]]))
    fmr = 1.0 - np.searchsorted(i, t, "left") / len(i)
    fnmr = np.searchsorted(g, t, "left") / len(g)
    d = fmr - fnmr  # non-increasing in t: from fmr = 1 (fnmr = 0) to fmr = 0 at +inf
    k = int(np.argmax(d <= 0))
    if k == 0:
        return float((fmr[0] + fnmr[0]) / 2), float(t[0])
    w = d[k - 1] / (d[k - 1] - d[k])
    eer = (1 - w) * (fmr[k - 1] + fnmr[k - 1]) / 2 + w * (fmr[k] + fnmr[k]) / 2
    thr = t[k - 1] + w * (t[k] - t[k - 1]) if np.isfinite(t[k]) else t[k - 1]
    return float(eer), float(thr)


def fnmr_at_fmr(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> FnmrAtFmr:
    th = threshold_at_far(impostor, fmr)
    fnmr = float(np.mean(np.asarray(genuine, np.float64) <= th.cosine))
    return FnmrAtFmr(
        fmr=float(fmr), threshold=th.cosine, fnmr=fnmr, achieved_fmr=th.achieved_far, too_few_pairs=th.too_few_pairs
    )


def separation(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(d', FDR) with population moments."""
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    dm, vs = g.mean() - i.mean(), g.var() + i.var()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(abs(dm) / np.sqrt(vs / 2)), float(dm * dm / vs)


def score_stats(
    genuine: np.ndarray,
    impostor: np.ndarray,
    *,
    genuine_total: int | None = None,
    impostor_total: int | None = None,
    fmrs=DEFAULT_FMRS,
) -> ScoreStats:
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    if len(g) == 0 or len(i) == 0:
        raise InputError(f"need genuine and impostor pairs, got {len(g)} and {len(i)}")
    eer, eer_t = equal_error_rate(g, i)
    d_prime, fdr = separation(g, i)
    return ScoreStats(
        genuine_pairs=len(g),
        impostor_pairs=len(i),
        genuine_total=len(g) if genuine_total is None else int(genuine_total),
        impostor_total=len(i) if impostor_total is None else int(impostor_total),
        genuine_mean=float(g.mean()),
        genuine_std=float(g.std()),
        impostor_mean=float(i.mean()),
        impostor_std=float(i.std()),
        eer=eer,
        eer_threshold=eer_t,
        d_prime=d_prime,
        fdr=fdr,
        fnmr_at_fmr=tuple(fnmr_at_fmr(g, i, f) for f in fmrs),
    )


# Identities.


def identity_stats(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique labels, unit centres [L, D], intra-identity mean pairwise cosine [L]) of unit embeddings.

    The mean pairwise cosine of n unit rows is ``(|sum|^2 - n) / (n (n - 1))``: no n x n Gram matrix.
    """
    uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), emb.shape[1]), np.float64)
    np.add.at(sums, inv, emb.astype(np.float64))
    sq = np.sum(sums * sums, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        intra = np.where(counts > 1, (sq - counts) / (counts * (counts - 1.0)), np.nan)
    centres = sums / np.maximum(np.sqrt(sq), 1e-12)[:, None]
    return uniq, centres.astype(np.float32), intra


def identity_means(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique labels, MEAN embedding [L, D] of each identity's unit rows: norm <= 1, not renormalised).

    ``means[a] @ means[b]`` is the mean cosine over all image pairs across identities a and b, and
    ``means[a] @ x`` the mean cosine of a's images with x: scores on the scale of single image pairs, so a
    threshold set on image pairs keeps its meaning (a renormalised centre scores higher than any of its
    images would, and would leak at a higher rate than the FAR says).
    """
    uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), emb.shape[1]), np.float64)
    np.add.at(sums, inv, emb.astype(np.float64))
    return uniq, (sums / counts[:, None]).astype(np.float32)


def identity_accept_rate(emb: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(unique labels, share of each identity's own pairs with cosine > threshold); NaN for one-image identities."""
    order = np.argsort(labels, kind="stable")
    uniq, starts, counts = np.unique(np.asarray(labels)[order], return_index=True, return_counts=True)
    rate = np.full(len(uniq), np.nan)
    for c in np.flatnonzero(counts > 1):
        x = emb[order[starts[c] : starts[c] + counts[c]]]
        g = (x @ x.T)[np.triu_indices(counts[c], 1)]
        rate[c] = float(np.mean(g > threshold))
    return uniq, rate


def topk_similar(
    a: np.ndarray,
    b: np.ndarray,
    k: int,
    *,
    threshold: float | None = None,
    exclude_self: bool = False,
    rows: int = 1024,
    cols: int = 16384,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``a``: its ``k`` most similar rows of ``b`` (indices [A, k], cosines [A, k], best first)
    and how many rows of ``b`` lie above ``threshold`` ([A], zeros without one).

    Blocks of ``rows x cols`` similarities (64 MB at the defaults), so 10^4 x 10^5 never forms the full
    matrix. ``exclude_self``: ``a`` is ``b`` and row i never matches itself. Fewer than k columns: -1 / -inf.
    """
    na, nb = a.shape[0], b.shape[0]
    idx = np.full((na, k), -1, np.int64)
    val = np.full((na, k), -np.inf, np.float32)
    count = np.zeros(na, np.int64)
    for r0 in range(0, na, rows):
        r1 = min(r0 + rows, na)
        best_v, best_i = val[r0:r1], idx[r0:r1]
        for c0 in range(0, nb, cols):
            c1 = min(c0 + cols, nb)
            sim = a[r0:r1] @ b[c0:c1].T
            if exclude_self and c0 < r1 and r0 < c1:
                rr = np.arange(max(r0, c0), min(r1, c1))
                sim[rr - r0, rr - c0] = -np.inf
            if threshold is not None:
                count[r0:r1] += np.count_nonzero(sim > threshold, axis=1)
            kk = min(k, c1 - c0)
            if kk == 1:  # the common case (nearest only): argmax is a fraction of argpartition's cost
                part = np.argmax(sim, axis=1)[:, None]
            elif kk < c1 - c0:
                part = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
            else:
                part = np.tile(np.arange(c1 - c0), (r1 - r0, 1))
            cand_v = np.concatenate([best_v, np.take_along_axis(sim, part, 1)], axis=1)
            cand_i = np.concatenate([best_i, part + c0], axis=1)
            top = np.argsort(-cand_v, axis=1, kind="stable")[:, :k]
            best_v, best_i = np.take_along_axis(cand_v, top, 1), np.take_along_axis(cand_i, top, 1)
        val[r0:r1], idx[r0:r1] = best_v, best_i
    return idx, val, count


def distribution(values: np.ndarray) -> dict[str, float] | None:
    """Summary of a 1-d distribution (finite values only): n, mean, std, min, p05, median, p95, max."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None
    p = np.percentile(v, [5, 50, 95])
    return {
        "n": int(len(v)),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "p05": float(p[0]),
        "median": float(p[1]),
        "p95": float(p[2]),
        "max": float(v.max()),
    }
