"""The arcface_torch verification protocol on pair embeddings, plus a robust TAR@FAR.

Accuracy follows the host's ``eval/verification.py`` exactly, so our numbers are comparable with every
published ``.bin`` result:

1. distance = squared L2 between the two (already normalised) embeddings of a pair;
2. thresholds ``np.arange(0, 4, 0.01)``; a pair is predicted "same" when ``dist < threshold``;
3. 10 unshuffled folds sized like scikit-learn's ``KFold`` (the first ``n % 10`` folds get one more pair);
4. per fold, the threshold with the FIRST maximal accuracy on the other 9 folds is scored on this fold;
5. mean and population std (ddof=0) of the 10 fold accuracies; TPR/FPR curves are the mean over folds
   of each fold's test-fold curve.

TAR@FAR is computed on all pairs at once from the sorted negative distances, without the host's
interpolation (which raises on repeated FAR values with current scipy). When a set has fewer negatives
than ``1/FAR`` the target cannot be resolved; the value is still reported, with a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from scoremix_plugin.errors import InputError

DEFAULT_FARS: tuple[float, ...] = (1e-3,)


def thresholds_grid() -> np.ndarray:
    """The host's 400 accuracy thresholds on squared L2 distance."""
    return np.arange(0, 4, 0.01)


def kfold_test_slices(n: int, nrof_folds: int = 10) -> list[slice]:
    """Contiguous test folds in order, sized like scikit-learn ``KFold(shuffle=False)``."""
    if nrof_folds < 2:
        raise InputError(f"nrof_folds must be >= 2, got {nrof_folds}")
    if n < nrof_folds:
        raise InputError(f"cannot split {n} pairs into {nrof_folds} folds (need at least one pair per fold)")
    sizes = np.full(nrof_folds, n // nrof_folds, dtype=np.int64)
    sizes[: n % nrof_folds] += 1
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance of pairs (rows 2i and 2i+1), computed in the embeddings' own dtype like the host."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] % 2:
        raise InputError(f"embeddings must be [2N, D] with pairs interleaved, got shape {emb.shape}")
    diff = np.subtract(emb[0::2], emb[1::2])
    return np.sum(np.square(diff), 1)


def _confusion(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """tp, fp, tn, fn per threshold (integer counts, so accuracies are exact ratios like the host's)."""
    pred = dist[None, :] < thresholds[:, None]  # [T, n]
    pos = issame[None, :]
    tp = np.sum(pred & pos, axis=1)
    fp = np.sum(pred & ~pos, axis=1)
    tn = np.sum(~pred & ~pos, axis=1)
    fn = np.sum(~pred & pos, axis=1)
    return tp, fp, tn, fn


def _rates(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp, fp, tn, fn = _confusion(dist, issame, thresholds)
    with np.errstate(invalid="ignore", divide="ignore"):
        # The host reports 0 (not NaN) for a rate whose denominator is empty.
        tpr = np.where(tp + fn == 0, 0.0, tp / np.maximum(tp + fn, 1))
        fpr = np.where(fp + tn == 0, 0.0, fp / np.maximum(fp + tn, 1))
    acc = (tp + tn) / dist.size
    return tpr, fpr, acc


class TarAtFar(NamedTuple):
    """TAR at a requested FAR; ``few_negatives`` is True when the set has fewer than 1/FAR negative pairs."""

    tar: float
    few_negatives: bool


def roc_curve(dist: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ROC over all pairs: (far, tar, thresholds), accepting ``dist <= threshold``.

    One point per distinct distance (ties move together, so FAR never repeats within a tie), starting at
    (0, 0) with threshold -inf.
    """
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    s = issame[order]
    n_pos = max(int(s.sum()), 1)
    n_neg = max(int((~s).sum()), 1)
    last_of_tie = np.r_[d[1:] != d[:-1], True]
    tp = np.cumsum(s)[last_of_tie]
    fp = np.cumsum(~s)[last_of_tie]
    far = np.r_[0.0, fp / n_neg]
    tar = np.r_[0.0, tp / n_pos]
    thr = np.r_[-np.inf, d[last_of_tie]]
    return far, tar, thr


def tar_at_far(dist: np.ndarray, issame: np.ndarray, fars=DEFAULT_FARS) -> dict[float, TarAtFar]:
    """TAR at each FAR on all pairs, with the largest threshold whose FAR does not exceed the target.

    With k = floor(FAR * n_neg) false accepts allowed, the threshold is the (k+1)-th smallest negative
    distance and a pair is accepted when ``dist < threshold`` (the host's strict comparison), so at most k
    negatives pass, even with tied distances. No interpolation, hence no failure on repeated FAR values.
    """
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    neg = np.sort(dist[~issame])
    pos = dist[issame]
    out: dict[float, TarAtFar] = {}
    for far in fars:
        far = float(far)
        if not 0.0 < far <= 1.0:
            raise InputError(f"FAR must be in (0, 1], got {far}")
        few = neg.size < 1.0 / far
        if pos.size == 0:
            out[far] = TarAtFar(float("nan"), few)
            continue
        k = int(np.floor(far * neg.size + 1e-9))  # + eps: 0.001 * 3000 is 2.9999999999999996 in float
        thr = np.inf if k >= neg.size else neg[k]
        out[far] = TarAtFar(float(np.mean(pos < thr)), bool(few))
    return out


@dataclass
class VerificationResult:
    """One set's verification numbers (accuracies as fractions in [0, 1])."""

    accuracy_per_fold: list[float]
    accuracy_mean: float
    accuracy_std: float
    best_thresholds: list[float]
    tpr: np.ndarray  # [400] mean over folds of each test fold's TPR curve
    fpr: np.ndarray  # [400]
    tar_at_far: dict[float, TarAtFar]
    roc_far: np.ndarray  # full ROC over all pairs (see roc_curve)
    roc_tar: np.ndarray
    roc_thresholds: np.ndarray
    num_pairs: int
    num_positive: int
    num_negative: int
    xnorm: float | None = None  # mean embedding norm before normalising (set by the evaluator)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "accuracy_mean": float(self.accuracy_mean),
            "accuracy_std": float(self.accuracy_std),
            "accuracy_per_fold": [float(a) for a in self.accuracy_per_fold],
            "best_thresholds": [float(t) for t in self.best_thresholds],
            "tar_at_far": {
                f"{far:g}": {"tar": t.tar, "few_negatives": t.few_negatives} for far, t in self.tar_at_far.items()
            },
            "num_pairs": self.num_pairs,
            "num_positive": self.num_positive,
            "num_negative": self.num_negative,
            "xnorm": None if self.xnorm is None else float(self.xnorm),
            "tpr_sum": float(np.sum(self.tpr)),
            "fpr_sum": float(np.sum(self.fpr)),
        }
        if curves:
            d["tpr"] = [float(v) for v in self.tpr]
            d["fpr"] = [float(v) for v in self.fpr]
            d["roc"] = {
                "far": [float(v) for v in self.roc_far],
                "tar": [float(v) for v in self.roc_tar],
                "thresholds": [float(v) for v in self.roc_thresholds],
            }
        d.update(self.extra)
        return d


def evaluate_embeddings(
    embeddings: np.ndarray,
    issame,
    nrof_folds: int = 10,
    fars=DEFAULT_FARS,
    xnorm: float | None = None,
) -> VerificationResult:
    """Verification numbers for ``embeddings`` [2N, D] (normalised, pairs interleaved) and ``issame`` [N]."""
    issame = np.asarray(issame)
    if issame.ndim != 1 or (issame.dtype != bool and not np.isin(issame, (0, 1)).all()):
        raise InputError(f"issame must be a 1-D array of booleans, got shape {issame.shape} dtype {issame.dtype}")
    issame = issame.astype(bool)
    dist = pair_distances(embeddings)
    if dist.shape[0] != issame.shape[0]:
        raise InputError(f"{dist.shape[0]} embedding pairs but {issame.shape[0]} issame flags")
    if not np.all(np.isfinite(dist)):
        raise InputError("embeddings contain NaN or infinite values")
    n = dist.shape[0]
    thresholds = thresholds_grid()

    # Rates of every threshold on each fold once; a fold's training accuracy is then the pair-weighted
    # sum over the other folds (integer counts, so identical to recounting on the 9 folds).
    slices = kfold_test_slices(n, nrof_folds)
    fold_correct = []
    tprs = np.zeros((nrof_folds, thresholds.size))
    fprs = np.zeros((nrof_folds, thresholds.size))
    for i, sl in enumerate(slices):
        tp, fp, tn, fn = _confusion(dist[sl], issame[sl], thresholds)
        fold_correct.append(tp + tn)
        tprs[i], fprs[i], _ = _rates(dist[sl], issame[sl], thresholds)
    fold_correct_arr = np.stack(fold_correct)  # [folds, T]
    total_correct = fold_correct_arr.sum(0)
    accuracy = np.zeros(nrof_folds)
    best = np.zeros(nrof_folds)
    for i, sl in enumerate(slices):
        n_train = n - (sl.stop - sl.start)
        acc_train = (total_correct - fold_correct_arr[i]) / n_train
        b = int(np.argmax(acc_train))  # first maximum: the lowest threshold wins ties, as in the host
        best[i] = thresholds[b]
        accuracy[i] = fold_correct_arr[i, b] / (sl.stop - sl.start)

    far, tar, thr = roc_curve(dist, issame)
    return VerificationResult(
        accuracy_per_fold=accuracy.tolist(),
        accuracy_mean=float(np.mean(accuracy)),
        accuracy_std=float(np.std(accuracy)),
        best_thresholds=best.tolist(),
        tpr=np.mean(tprs, 0),
        fpr=np.mean(fprs, 0),
        tar_at_far=tar_at_far(dist, issame, fars),
        roc_far=far,
        roc_tar=tar,
        roc_thresholds=thr,
        num_pairs=n,
        num_positive=int(issame.sum()),
        num_negative=int((~issame).sum()),
        xnorm=xnorm,
    )
