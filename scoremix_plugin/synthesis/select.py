"""Class selection: which real classes are mixed into each new synthetic identity.

The rule, for pairs:

- ``far``: every unordered pair (a, b) of classes ranked by cosine distance ``1 - <c_a, c_b>``, largest
  first, ties broken by (a, b) ascending; walked greedily, a pair is taken when neither class has already
  been used ``max_uses`` times (a pair is never taken twice), until ``num_identities`` are chosen.
- ``near``: the same with the smallest distances first.
- ``random``: at each step a pair drawn uniformly (seeded) among the pairs still allowed by the cap.

The exact greedy over all C(C-1)/2 pairs is computed without a C x C matrix: each class keeps its top
``m`` partners (matmul in row blocks, each block visited once thanks to symmetry), the union of those
lists is ranked and walked greedily, and a certificate checks that no pair outside the lists could have
been taken (see :func:`_greedy_certified`). When the check fails the lists of the offending classes are
lengthened and the walk redone, so the answer always equals the brute-force greedy.

Distances written to the CSV (and used for ranking) are computed per pair in float64 from the float32
centres, so the chunked and brute-force paths rank on exactly the same numbers.

K-tuples (``k > 2``, the paper's triplet ablation): the ``num_identities`` seed pairs are chosen by the pair
rule above; then, in ``new_label`` order, each tuple grows one class at a time by the class still under
the cap whose mean cosine distance to the members so far is largest (``far``) / smallest (``near``), or a
uniformly drawn one (``random``); ties go to the lowest label. The ``distance`` column of a K-tuple is the
mean pairwise cosine distance of its members.

Why one long module: the chunked greedy selection, its certificate and the brute-force reference it is
tested against must rank on exactly the same numbers; they share the helpers here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoremix_plugin.errors import InputError, MissingInputError, ScoreMixError
from scoremix_plugin.io_utils import sha256_file, write_json_atomic, write_text_atomic

STRATEGIES = ("far", "near", "random")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Float32 block matmuls disagree with the float64 per-pair distance by ~1e-6 for unit vectors; the
# certificate treats anything within this margin of a list's last entry as possibly outside the list.
_EPS = 5e-5
# Classes whose lists prove too short are first given all pairs among themselves (cheap while few).
_CLIQUE_MAX = 3000


class SelectionError(ScoreMixError, ValueError):
    """The requested selection cannot be made (e.g. more identities than the cap allows)."""


@dataclass(frozen=True)
class Selection:
    """Chosen identities: row n is new label n."""

    classes: np.ndarray  # [N, K] int64, real class labels (as in the centres file)
    weights: np.ndarray  # [N, K] float64, convex
    distance: np.ndarray  # [N] float64 (pairs: cosine distance; K > 2: mean pairwise)

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    @property
    def k(self) -> int:
        return int(self.classes.shape[1])


# ----------------------------------------------------------------------------------------------
# Exact per-pair distances.


def pair_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Cosine distance ``1 - <x[a], x[b]>`` in float64 for index arrays ``a``, ``b`` (the canonical value)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    out = np.empty(a.shape[0], dtype=np.float64)
    for s in range(0, a.shape[0], chunk):
        xa = x[a[s : s + chunk]].astype(np.float64)
        xb = x[b[s : s + chunk]].astype(np.float64)
        out[s : s + chunk] = 1.0 - np.einsum("ij,ij->i", xa, xb)
    return out


def _mean_pairwise(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    k = idx.shape[1]
    total = np.zeros(idx.shape[0], dtype=np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            total += pair_distance(x, idx[:, i], idx[:, j])
    return total / (k * (k - 1) / 2)


def max_pairs(num_classes: int, max_uses: int) -> int:
    """Most pairs a simple graph on ``num_classes`` vertices with degree <= ``max_uses`` can have."""
    return num_classes * min(max_uses, num_classes - 1) // 2


# ----------------------------------------------------------------------------------------------
# Top-m partner lists in blocks.


def _torch_device(device: str | None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _top_partners(x, rows, m: int, sign: float, chunk: int, device, progress: bool):
    """Top-``m`` partners of each class in ``rows`` by ``sign * -cos`` (far: sign 1), self excluded.

    ``rows`` None means every class; then each block of the upper triangle is computed once and serves
    both its rows and its columns. Returns (scores [R, m] float32, partners [R, m] int64) as numpy, where
    a score is ``sign * distance`` up to float32 rounding.
    """
    import torch
    from tqdm import tqdm

    C = x.shape[0]
    m = min(m, C - 1)
    xt = torch.from_numpy(x).to(device)
    all_rows = rows is None
    R = C if all_rows else len(rows)
    best_s = torch.full((R, m), -math.inf, dtype=torch.float32, device=device)
    best_i = torch.full((R, m), -1, dtype=torch.int64, device=device)

    def merge(r0, r1, scores, cols):
        # cat the running best with this block's best and keep the top m (scores [r, n], cols [r, n]).
        kk = min(m, scores.shape[1])
        s, j = torch.topk(scores, kk, dim=1)
        c = torch.gather(cols, 1, j) if cols.dim() == 2 else cols[j]
        s2 = torch.cat([best_s[r0:r1], s], dim=1)
        c2 = torch.cat([best_i[r0:r1], c], dim=1)
        s3, j3 = torch.topk(s2, m, dim=1)
        best_s[r0:r1] = s3
        best_i[r0:r1] = torch.gather(c2, 1, j3)

    with torch.no_grad():
        if all_rows:
            starts = list(range(0, C, chunk))
            bar = tqdm(
                total=len(starts) * (len(starts) + 1) // 2, desc="top partners", unit="block", disable=not progress
            )
            for bi, r0 in enumerate(starts):
                r1 = min(r0 + chunk, C)
                # score = sign * distance + const: far ranks by -cos, near by +cos. Negating the small row
                # block (not the product) keeps the block product the only full pass over memory.
                xr = -sign * xt[r0:r1]
                for c0 in starts[bi:]:
                    c1 = min(c0 + chunk, C)
                    s = xr @ xt[c0:c1].T
                    if c0 == r0:
                        s.fill_diagonal_(-math.inf)
                    merge(r0, r1, s, torch.arange(c0, c1, device=device))
                    if c0 != r0:
                        # The columns' view: top-k along contiguous rows is ~1.5x faster than on s.T.
                        merge(c0, c1, s.T.contiguous(), torch.arange(r0, r1, device=device))
                    bar.update(1)
            bar.close()
        else:
            rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
            for r0 in range(0, R, chunk):
                r1 = min(r0 + chunk, R)
                xr = -sign * xt[rows_t[r0:r1]]
                for c0 in range(0, C, chunk):
                    c1 = min(c0 + chunk, C)
                    s = xr @ xt[c0:c1].T
                    cols = torch.arange(c0, c1, device=device)
                    self_hit = rows_t[r0:r1, None] == cols[None, :]
                    s = s.masked_fill(self_hit, -math.inf)
                    merge(r0, r1, s, cols)
    # Convert the float32 "-sign*cos" scores to "sign*distance" up to a constant: sign*(1-cos) = sign - sign*cos.
    return (best_s + sign).cpu().numpy(), best_i.cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Greedy walk over candidate pairs.


def _greedy(a: np.ndarray, b: np.ndarray, score: np.ndarray, C: int, n: int, max_uses: int):
    """Walk candidates in rank order (score desc, then a, b asc); return picks and when each class filled.

    Returns (picked indices into the candidate arrays, stop score, saturation score per class).
    """
    order = np.lexsort((b, a, -score))
    sat = np.full(C, -math.inf)  # score of the pick that filled the class
    picked: list[int] = []
    uses = [0] * C
    # Python ints in slices: millions of candidates as lists at once would cost gigabytes.
    for s0 in range(0, len(order), 1 << 18):
        oo = order[s0 : s0 + (1 << 18)]
        for i, j, s, o in zip(a[oo].tolist(), b[oo].tolist(), score[oo].tolist(), oo.tolist()):
            if uses[i] < max_uses and uses[j] < max_uses:
                uses[i] += 1
                uses[j] += 1
                if uses[i] == max_uses:
                    sat[i] = s
                if uses[j] == max_uses:
                    sat[j] = s
                picked.append(o)
                if len(picked) == n:
                    return np.asarray(picked, dtype=np.int64), s, sat
    return np.asarray(picked, dtype=np.int64), -math.inf, sat


def _encode(a: np.ndarray, b: np.ndarray, C: int) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64) * C + hi.astype(np.int64)


def _greedy_certified(x: np.ndarray, n: int, max_uses: int, sign: float, *, m: int, chunk: int, device, progress: bool):
    """Exact greedy pairs (index space) via top-m lists plus a certificate.

    Certificate: a pair (a, b) outside the candidate set comes, in the global ranking, after every entry of
    a's list (score <= t_a = a's last listed score + eps) and after b's. It would be taken only if neither
    class were full when the walk reached it; so both a and b must be "open": not filled by a pick scoring
    above t, with the walk not stopped above t. If at most one class is open, or all pairs among the open
    classes are candidates (a "clique" added for them), no outside pair can change the walk.
    """
    C = x.shape[0]
    scores, partners = _top_partners(x, None, m, sign, chunk, device, progress)
    m_row = np.full(C, scores.shape[1], dtype=np.int64)
    extra_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    clique = np.zeros(0, dtype=np.int64)
    rounds = 0
    while True:
        rounds += 1
        # Candidate pairs: every class's list, the longer lists of re-done classes, the clique.
        parts_a = [np.repeat(np.arange(C, dtype=np.int64), scores.shape[1])]
        parts_b = [partners.reshape(-1)]
        thresh = scores[:, -1].astype(np.float64) + _EPS
        for r, (_, pr) in extra_rows.items():
            parts_a.append(np.full(pr.shape[0], r, dtype=np.int64))
            parts_b.append(pr)
        for r, (sr, _) in extra_rows.items():
            thresh[r] = float(sr[-1]) + _EPS
        thresh[m_row >= C - 1] = -math.inf  # a complete list has no outside pairs
        if len(clique) > 1:
            ii, jj = np.triu_indices(len(clique), 1)
            parts_a.append(clique[ii])
            parts_b.append(clique[jj])
        pa = np.concatenate(parts_a)
        pb = np.concatenate(parts_b)
        keep = pb >= 0
        codes = np.unique(_encode(pa[keep], pb[keep], C))
        ca, cb = codes // C, codes % C
        cs = sign * pair_distance(x, ca, cb)
        picked, stop, sat = _greedy(ca, cb, cs, C, n, max_uses)
        open_ = (sat <= thresh) & (stop <= thresh)
        open_idx = np.flatnonzero(open_)
        if len(open_idx) <= 1 or np.isin(open_idx, clique).all():
            return ca[picked], cb[picked], sign * cs[picked], rounds
        union = np.union1d(clique, open_idx)
        if len(union) <= _CLIQUE_MAX:
            clique = union
            continue
        # Too many open classes for a clique: lengthen their lists fourfold.
        grow = open_idx[~np.isin(open_idx, clique)]
        new_m = np.minimum(m_row[grow] * 4, C - 1)
        for mm in np.unique(new_m):
            rows = grow[new_m == mm]
            s2, p2 = _top_partners(x, rows, int(mm), sign, chunk, device, False)
            for r, sr, pr in zip(rows.tolist(), s2, p2):
                extra_rows[r] = (sr, pr)
            m_row[rows] = mm


# ----------------------------------------------------------------------------------------------
# Public API.


def select_pairs_bruteforce(x: np.ndarray, n: int, strategy: str, max_uses: int = 1) -> np.ndarray:
    """Reference greedy over the full ranked pair list (small C only; used by tests). Returns [n, 2] indices."""
    C = x.shape[0]
    ii, jj = np.triu_indices(C, 1)
    sign = 1.0 if strategy == "far" else -1.0
    s = sign * pair_distance(x, ii, jj)
    picked, _, _ = _greedy(ii, jj, s, C, n, max_uses)
    if len(picked) < n:
        raise SelectionError(f"only {len(picked)} of {n} pairs could be chosen")
    return np.stack([ii[picked], jj[picked]], axis=1)


def _random_pairs(C: int, n: int, max_uses: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform among the allowed pairs at each step.

    Drawing two distinct classes uniformly from a superset of the open (not yet full) classes and
    rejecting full classes and used pairs is exactly uniform over the allowed pairs; the superset is
    refreshed when rejections pile up, and the last few open classes are handled with an explicit list.
    """
    uses = np.zeros(C, dtype=np.int64)
    used: set[int] = set()
    out: list[tuple[int, int]] = []
    pool = np.arange(C)
    misses = 0
    while len(out) < n:
        if misses >= 64:
            pool, misses = np.flatnonzero(uses < max_uses), 0
            if len(pool) <= 512:
                break
        i = int(rng.integers(len(pool)))
        j = int(rng.integers(len(pool) - 1))
        j += j >= i
        a, b = sorted((int(pool[i]), int(pool[j])))
        if uses[a] >= max_uses or uses[b] >= max_uses or a * C + b in used:
            misses += 1
            continue
        misses = 0
        uses[a] += 1
        uses[b] += 1
        used.add(a * C + b)
        out.append((a, b))
    used_codes = np.fromiter(used, dtype=np.int64, count=len(used))
    while len(out) < n:
        pool = np.flatnonzero(uses < max_uses)
        ii, jj = np.triu_indices(len(pool), 1)
        pa, pb = pool[ii], pool[jj]
        ok = ~np.isin(pa * C + pb, used_codes)
        pa, pb = pa[ok], pb[ok]
        if len(pa) == 0:
            break
        t = int(rng.integers(len(pa)))
        a, b = int(pa[t]), int(pb[t])
        uses[a] += 1
        uses[b] += 1
        used_codes = np.append(used_codes, a * C + b)
        out.append((a, b))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _extend_tuples(
    x: np.ndarray, pairs: np.ndarray, k: int, strategy: str, max_uses: int, rng: np.random.Generator, chunk: int = 64
) -> np.ndarray:
    C = x.shape[0]
    uses = np.bincount(pairs.reshape(-1), minlength=C).astype(np.int64)
    tuples = [list(p) for p in pairs.tolist()]
    for _ in range(k - 2):
        for s in range(0, len(tuples), chunk):
            block = tuples[s : s + chunk]
            if strategy != "random":
                means = np.stack([x[t].mean(axis=0) for t in block]).astype(np.float32)
                # mean distance to the members = 1 - <x, mean of members>: one matmul per block.
                score = 1.0 - (x @ means.T).astype(np.float64)
            for bi, t in enumerate(block):
                allowed = uses < max_uses
                allowed[t] = False
                cand = np.flatnonzero(allowed)
                if len(cand) == 0:
                    raise SelectionError(
                        f"cannot grow identity {s + bi} to {k} classes: every class is used {max_uses} time(s)"
                    )
                if strategy == "random":
                    pick = int(cand[rng.integers(len(cand))])
                else:
                    col = score[:, bi]
                    v = col[cand] if strategy == "far" else -col[cand]
                    pick = int(cand[np.argmax(v)])  # argmax takes the first maximum: lowest label on ties
                t.append(pick)
                uses[pick] += 1
    return np.asarray(tuples, dtype=np.int64)


def select(
    centres: np.ndarray,
    num_identities: int,
    strategy: str = "far",
    *,
    max_uses: int = 1,
    k: int = 2,
    seed: int = 0,
    chunk_size: int = 4096,
    margin: int = 8,
    device: str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``num_identities`` class tuples from unit-row ``centres`` [C, D].

    Returns (indices [N, k] into the rows, distance [N] float64). Raises :class:`SelectionError` when
    fewer than ``num_identities`` tuples can be chosen under ``max_uses``.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if k < 2:
        raise InputError(f"k must be >= 2, got {k}")
    if max_uses < 1:
        raise InputError(f"max_uses must be >= 1, got {max_uses}")
    x = np.ascontiguousarray(centres, dtype=np.float32)
    C = x.shape[0]
    n = int(num_identities)
    if n < 1:
        raise InputError(f"num_identities must be >= 1, got {n}")
    limit = max_pairs(C, max_uses)
    if k == 2 and n > limit:
        raise SelectionError(
            f"--num-identities {n}: {n} pairs are impossible with {C} classes and --max-uses {max_uses}: "
            f"at most {limit} pairs exist "
            f"(each class in at most {max_uses} pair(s), no pair twice)"
        )
    if n * k > C * max_uses:
        raise SelectionError(
            f"--num-identities {n}: {n} tuples of {k} classes need {n * k} class uses, more than {C} classes x "
            f"--max-uses {max_uses}"
        )
    rng = np.random.default_rng(seed)
    if strategy == "random":
        pairs = _random_pairs(C, n, max_uses, rng)
    else:
        sign = 1.0 if strategy == "far" else -1.0
        a, b, _, _ = _greedy_certified(
            x, n, max_uses, sign, m=max_uses + margin, chunk=chunk_size, device=_torch_device(device), progress=progress
        )
        pairs = np.stack([a, b], axis=1)
    if len(pairs) < n:
        raise SelectionError(
            f"only {len(pairs)} of {n} pairs could be chosen greedily with {C} classes and --max-uses {max_uses}"
        )
    if k == 2:
        return pairs, pair_distance(x, pairs[:, 0], pairs[:, 1])
    tuples = _extend_tuples(x, pairs, k, strategy, max_uses, rng)
    return tuples, _mean_pairwise(x, tuples)


# ----------------------------------------------------------------------------------------------
# The pairs file.


def pairs_header(k: int) -> list[str]:
    letters = LETTERS[:k]
    return ["new_label"] + [f"class_{c}" for c in letters] + [f"weight_{c}" for c in letters] + ["distance"]


def write_pairs(path: str | os.PathLike, sel: Selection, meta: dict | None = None) -> None:
    """Write the CSV atomically; ``meta`` (strategy, space, ...) goes to ``<path>.json`` beside it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(pairs_header(sel.k))
    for n in range(len(sel)):
        w.writerow(
            [n]
            + [int(c) for c in sel.classes[n]]
            + [repr(float(v)) for v in sel.weights[n]]
            + [f"{float(sel.distance[n]):.9f}"]
        )
    write_text_atomic(path, buf.getvalue())
    if meta is not None:
        write_json_atomic(meta_path(path), {**meta, "pairs_sha256": sha256_file(path)})


def meta_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def read_pairs(path: str | os.PathLike) -> Selection:
    """Read and validate a pairs file: header, contiguous new labels from 0, distinct classes, convex weights."""
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"pairs file not found: {p}")
    with open(p, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise InputError(f"{p}: empty pairs file (expected header {','.join(pairs_header(2))})")
    header = rows[0]
    k = (len(header) - 2) // 2
    if k < 2 or header != pairs_header(k):
        raise InputError(
            f"{p}: bad header {','.join(header)!r}; expected {','.join(pairs_header(2))} "
            "(K-tuples add class_c, weight_c, ...)"
        )
    classes, weights, dist = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{p}:{line}: {len(row)} fields, header has {len(header)}")
        try:
            nl = int(row[0])
            cl = [int(v) for v in row[1 : 1 + k]]
            wt = [float(v) for v in row[1 + k : 1 + 2 * k]]
            d = float(row[-1])
        except ValueError as e:
            raise InputError(f"{p}:{line}: {e}") from e
        if nl != line - 2:
            raise InputError(f"{p}:{line}: new_label {nl}, expected {line - 2} (labels must run 0, 1, 2, ... in order)")
        if min(cl) < 0 or len(set(cl)) != k:
            raise InputError(f"{p}:{line}: classes {cl} must be distinct non-negative labels")
        if min(wt) < 0 or abs(sum(wt) - 1.0) > 1e-6 or not all(math.isfinite(v) for v in wt):
            raise InputError(f"{p}:{line}: weights {wt} must be >= 0 and sum to 1 (convex mix)")
        classes.append(cl)
        weights.append(wt)
        dist.append(d)
    if not classes:
        raise InputError(f"{p}: no identities after the header")
    return Selection(np.asarray(classes, dtype=np.int64), np.asarray(weights, dtype=np.float64), np.asarray(dist))


def read_pairs_meta(path: str | os.PathLike) -> dict:
    """The sidecar written by ``scoremix select`` (empty when the CSV was made by hand)."""
    mp = meta_path(path)
    if not mp.is_file():
        return {}
    with open(mp) as f:
        return json.load(f)


def convex_weights(weights, k: int) -> np.ndarray:
    """Mixing weights as a checked float64 ``[k]`` array (None: uniform 1/k); they must form a convex mix."""
    if weights is None:
        return np.full(k, 1.0 / k)
    if isinstance(weights, str):
        raise TypeError(f"mixing weights {weights!r}: pass numbers, not text (parse_weights reads text)")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
        raise InputError(f"mixing weights {w.tolist()}: need {k} non-negative values summing to 1")
    return w


def parse_weights(text: str | None, k: int) -> np.ndarray:
    """``--weights 'w_a,w_b,...'`` as a checked array."""
    if text is None:
        return convex_weights(None, k)
    try:
        return convex_weights([float(v) for v in text.split(",")], k)
    except ValueError as e:
        raise InputError(f"--weights {text!r}: {e}") from e


def run_selection(
    centres_path,
    out,
    *,
    strategy="far",
    num_identities,
    max_uses=1,
    k=2,
    weights=None,
    seed=0,
    chunk_size=4096,
    margin=8,
    device=None,
    progress=True,
) -> Selection:
    """Load a centres file, select, write ``out`` (+ ``out.json``); return the selection in label space.

    ``weights``: the ``k`` mixing weights (a sequence or array of numbers; None: 1/k each).
    """
    from scoremix_plugin.centres import load_centres

    w = convex_weights(weights, k)
    c = load_centres(centres_path)
    t0 = time.perf_counter()
    idx, dist = select(
        c.centres,
        num_identities,
        strategy,
        max_uses=max_uses,
        k=k,
        seed=seed,
        chunk_size=chunk_size,
        margin=margin,
        device=device,
        progress=progress,
    )
    sel = Selection(c.labels[idx], np.tile(w, (len(idx), 1)), dist)
    meta = {
        "centres": str(centres_path),
        "centres_sha256": sha256_file(centres_path),
        "space": c.space,
        "strategy": strategy,
        "num_identities": int(num_identities),
        "max_uses": int(max_uses),
        "k": int(k),
        "seed": int(seed),
        "num_classes": len(c),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_pairs(out, sel, meta)
    return sel
