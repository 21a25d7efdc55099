"""How alike two class representations are (the paper's "alignment" finding).

``scoremix align --a cond.npz --b centres.npz`` matches the two centres files by label (intersection) and
reports, for the matched rows X [n, p] and Y [n, q]:

- linear CKA: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred X, Y (Kornblith et al. 2019);
- RBF CKA: HSIC of centred Gaussian kernels, bandwidth sigma = median pairwise Euclidean distance of each
  side (the "median heuristic"), on at most ``max_items`` rows (seeded subsample: kernels are n x n);
- mutual k-NN overlap (Huh et al. 2024): mean over items of |kNN_X(i) & kNN_Y(i)| / k, cosine neighbours,
  the item itself excluded, searched within the same subsample;
- the same numbers with Y's rows shuffled (mean over ``permutations``), the scale a score is read against.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scoremix_plugin.errors import InputError
from scoremix_plugin.io_utils import pyplot, save_figure, write_json_atomic


def _centre(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two [n, *] matrices (rows matched). Invariant to orthogonal transforms and scale."""
    if x.shape[0] != y.shape[0]:
        raise InputError(f"linear_cka: row counts differ ({x.shape[0]} vs {y.shape[0]})")
    xc, yc = _centre(x), _centre(y)
    # Feature-space form: p x q products, never n x n.
    num = np.linalg.norm(yc.T @ xc) ** 2
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(num / den) if den > 0 else 0.0


def _rbf_gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    iu = np.triu_indices(x.shape[0], 1)
    sigma2 = float(np.median(d2[iu])) if len(iu[0]) else 1.0  # median distance, squared
    if sigma2 <= 0:
        sigma2 = 1.0
    return np.exp(-d2 / (2.0 * sigma2))


def _centre_gram(k: np.ndarray) -> np.ndarray:
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def rbf_cka(x: np.ndarray, y: np.ndarray) -> float:
    kx, ky = _centre_gram(_rbf_gram(x)), _centre_gram(_rbf_gram(y))
    num = float(np.sum(kx * ky))
    den = float(np.sqrt(np.sum(kx * kx) * np.sum(ky * ky)))
    return num / den if den > 0 else 0.0


def knn_indices(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Cosine k nearest neighbours of each row (itself excluded), [n, k], in row blocks."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    xt = torch.nn.functional.normalize(xt, dim=1)
    n = xt.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        sim = xt[s : s + chunk] @ xt.T
        rows = torch.arange(s, min(s + chunk, n))
        sim[rows - s, rows] = -torch.inf
        out[s : s + chunk] = torch.topk(sim, k, dim=1).indices.numpy()
    return out


def _overlap(nx: np.ndarray, ny: np.ndarray) -> float:
    """Mean over rows of |nx[i] & ny[i]| / k (neighbour lists hold distinct indices)."""
    hits = 0
    for s in range(0, nx.shape[0], 8192):
        hits += int((nx[s : s + 8192, :, None] == ny[s : s + 8192, None, :]).sum())
    return hits / nx.size


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    n = x.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise InputError("mutual_knn needs at least 2 items")
    return _overlap(knn_indices(x, k), knn_indices(y, k))


def match_by_label(a, b):
    """Rows of two Centres with the same label, in ascending label order."""
    common, ia, ib = np.intersect1d(a.labels, b.labels, assume_unique=True, return_indices=True)
    return common, a.centres[ia], b.centres[ib]


def alignment(
    x: np.ndarray, y: np.ndarray, *, k: int = 10, permutations: int = 3, max_items: int = 4000, seed: int = 0
) -> dict:
    """Every metric on matched rows, plus its shuffled-rows baseline (mean over ``permutations``)."""
    n = x.shape[0]
    if n < 3:
        raise InputError(f"alignment needs at least 3 matched classes, got {n}")
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, size=max_items, replace=False)) if n > max_items else np.arange(n)
    m = len(sub)
    kk = min(k, m - 1)
    perms = [rng.permutation(n) for _ in range(permutations)]
    out: dict = {"num_matched": int(n), "k": int(kk), "permutations": int(permutations), "subsample": int(m)}
    out["linear_cka"] = linear_cka(x, y)
    out["linear_cka_shuffled"] = _mean([linear_cka(x, y[p]) for p in perms])
    out["rbf_cka"] = rbf_cka(x[sub], y[sub])
    out["rbf_cka_shuffled"] = _mean([rbf_cka(x[sub], y[p][sub]) for p in perms])
    # Neighbours among the subsample (as Huh et al. do with a fixed sample). Shuffling the rows of Y
    # relabels Y's neighbour lists, so the baselines reuse one k-NN search per side.
    nx, ny = knn_indices(x[sub], kk), knn_indices(y[sub], kk)
    out["mutual_knn"] = _overlap(nx, ny)
    sub_perms = [rng.permutation(m) for _ in range(permutations)]
    base = []
    for p in sub_perms:
        inv = np.empty_like(p)
        inv[p] = np.arange(m)
        base.append(_overlap(nx, inv[ny[p]]))  # neighbours of i under Y[p]: inv[p] of Y's neighbours of p[i]
    out["mutual_knn_shuffled"] = _mean(base)
    return out


def _mean(v: list[float]) -> float | None:
    return float(np.mean(v)) if v else None


def run_alignment(
    a_path, b_path, *, out_dir=None, json_path=None, k=10, permutations=3, max_items=4000, seed=0
) -> dict:
    from scoremix_plugin.centres import load_centres

    a, b = load_centres(a_path), load_centres(b_path)
    labels, x, y = match_by_label(a, b)
    if len(labels) < 3:
        raise InputError(
            f"{a_path} and {b_path} share {len(labels)} labels; alignment needs at least 3 matched classes"
        )
    res = {"a": str(a_path), "b": str(b_path), "space_a": a.space, "space_b": b.space, "num_a": len(a), "num_b": len(b)}
    res.update(alignment(x, y, k=k, permutations=permutations, max_items=max_items, seed=seed))
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json_atomic(out_dir / "alignment.json", res)
        plot_alignment(res, x, y, out_dir / "alignment.png", seed=seed)
    if json_path is not None:
        write_json_atomic(json_path, res)
    return res


def plot_alignment(res: dict, x: np.ndarray, y: np.ndarray, path: str | os.PathLike, seed: int = 0) -> None:
    """Bars (metric vs shuffled baseline) and a scatter of pairwise cosines in A vs B."""
    plt = pyplot()

    names = ["linear_cka", "rbf_cka", "mutual_knn"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    pos = np.arange(len(names))
    ax1.bar(pos - 0.2, [res[n] for n in names], 0.4, label="matched")
    ax1.bar(pos + 0.2, [res[f"{n}_shuffled"] or 0 for n in names], 0.4, label="labels shuffled")
    ax1.set_xticks(pos, names)
    ax1.set_ylim(0, 1)
    ax1.set_title(f"{res['space_a']} vs {res['space_b']} ({res['num_matched']} classes)")
    ax1.legend()
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    i, j = rng.integers(n, size=5000), rng.integers(n, size=5000)
    keep = i != j
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    ax2.scatter(np.sum(xn[i[keep]] * xn[j[keep]], 1), np.sum(yn[i[keep]] * yn[j[keep]], 1), s=2, alpha=0.3)
    ax2.set_xlabel(f"cosine between two classes in A ({res['space_a']})")
    ax2.set_ylabel(f"cosine in B ({res['space_b']})")
    ax2.set_title("pairwise class similarity")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
