"""Leak checks and the quality gate, all at ONE threshold: the cosine where real impostor pairs reach a FAR.

``t = threshold_at_far(real impostor scores, far)`` (metrics.py): two images of different real people
score above ``t`` at most ``far`` of the time, so an identity closer than ``t`` to something is, to this
recogniser, plausibly the same person. An identity enters every check through its MEAN embedding
(``metrics.identity_means``): ``mean_a @ mean_b`` is the mean cosine over all image pairs of a and b, and
``mean_a @ x`` the mean cosine of a's images with image x, i.e. scores on the scale of the image pairs
that set ``t``. (Renormalised centres score higher than any of their images; compared with an image-pair
threshold they made "leaks" of unrelated people in a simulated clean set.)

- (a) training leak: a synthetic identity above ``t`` to a real class. Reported apart: ``source`` (one of
  the classes it was mixed from: a near-copy, the mix collapsed onto a parent) and ``other`` (a real class
  it was not made from);
- (b) evaluation leak: a synthetic identity above ``t`` to any image of an evaluation ``.bin`` (it would
  inflate that benchmark);
- (c) real-vs-evaluation overlap: a real training class above ``t`` to an evaluation image (the training
  data and the benchmark share people; it inflates the baseline and ScoreMix runs alike).

Each check makes many comparisons; ``comparisons * far`` is roughly how many would pass ``t`` by chance if
identity scores were as spread as single image pairs (they are less spread: means of many pairs).

The quality gate asks whether synthetic identities are identities at all: an identity is RECOGNISED when
more than half of its own image pairs are accepted at ``t``. The gate passes when the share of synthetic
identities recognised is at least ``min_share`` times the share of REAL identities recognised at the same
``t`` (``min_share`` of all of them when there is no real set). Relative, because at a strict FAR a weak
recogniser (the CPU demo's) does not recognise every real identity either; when it recognises fewer than
half of them the verdict says it is inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoremix_plugin.datareport.metrics import Threshold, identity_accept_rate, topk_similar


@dataclass(frozen=True)
class Leak:
    label: int  # the leaking identity (final label)
    kind: str  # "training_source" | "training_other" | "evaluation" | "real_evaluation"
    cosine: float  # its closest match's cosine (> threshold)
    match: str  # "class 17" or "lfw:1234" (target and image index)
    matches: int  # how many classes / evaluation images lie above the threshold


@dataclass(frozen=True)
class Neighbours:
    """For each identity centre: its nearest rows of another matrix (best first) and the count above ``t``."""

    index: np.ndarray  # [L, k] int64, -1 where fewer than k rows exist
    cosine: np.ndarray  # [L, k] float32
    above: np.ndarray  # [L] int64


def neighbours(
    centres: np.ndarray, other: np.ndarray, k: int, threshold: float | None = None, exclude_self: bool = False
) -> Neighbours:
    if len(other) == 0:
        return Neighbours(
            np.full((len(centres), k), -1),
            np.full((len(centres), k), -np.inf, np.float32),
            np.zeros(len(centres), np.int64),
        )
    i, v, c = topk_similar(centres, other, k, threshold=threshold, exclude_self=exclude_self)
    return Neighbours(i, v, c)


def training_leaks(
    labels: np.ndarray,
    centres: np.ndarray,
    sources: np.ndarray,
    real_labels: np.ndarray,
    real_centres: np.ndarray,
    threshold: float,
) -> tuple[list[Leak], dict[str, np.ndarray]]:
    """(a) on identity means (``centres``, ``real_centres``: ``metrics.identity_means``): leaks, and per
    identity: ``source_cos`` [L, K] (-inf for a source without a centre), ``nearest_real`` /
    ``nearest_real_cos``, ``nearest_other`` / ``nearest_other_cos`` (best non-source class).
    """
    pos = {int(c): j for j, c in enumerate(real_labels)}
    k = sources.shape[1]
    src_cos = np.full(sources.shape, -np.inf, np.float32)
    for col in range(k):
        j = np.array([pos.get(int(c), -1) for c in sources[:, col]])
        ok = j >= 0
        src_cos[ok, col] = np.einsum("ij,ij->i", centres[ok], real_centres[j[ok]])
    nb = neighbours(centres, real_centres, k + 1, threshold)
    near_lab = np.where(nb.index >= 0, real_labels[np.maximum(nb.index, 0)], -1)
    is_src = (near_lab[:, :, None] == sources[:, None, :]).any(axis=2) | (nb.index < 0)
    first_other = np.argmax(~is_src, axis=1)  # k + 1 candidates, at most k of them sources
    has_other = (~is_src).any(axis=1)  # false only when the real set has no class besides the sources
    other_lab = np.where(has_other, near_lab[np.arange(len(labels)), first_other], -1)
    other_cos = np.where(has_other, nb.cosine[np.arange(len(labels)), first_other], -np.inf).astype(np.float32)
    leaks = []
    for r, lab in enumerate(labels.tolist()):
        c = int(np.argmax(src_cos[r]))
        if src_cos[r, c] > threshold:
            leaks.append(
                Leak(
                    lab,
                    "training_source",
                    float(src_cos[r, c]),
                    f"class {int(sources[r, c])}",
                    int(np.sum(src_cos[r] > threshold)),
                )
            )
        if other_lab[r] >= 0 and other_cos[r] > threshold:
            leaks.append(
                Leak(
                    lab,
                    "training_other",
                    float(other_cos[r]),
                    f"class {int(other_lab[r])}",
                    int(nb.above[r] - np.sum(src_cos[r] > threshold)),
                )
            )
    extra = {
        "source_cos": src_cos,
        "nearest_real": near_lab[:, 0],
        "nearest_real_cos": nb.cosine[:, 0],
        "nearest_other": other_lab,
        "nearest_other_cos": other_cos,
    }
    return leaks, extra


def evaluation_leaks(
    labels: np.ndarray,
    centres: np.ndarray,
    evaluation: dict[str, np.ndarray],
    threshold: float,
    kind: str = "evaluation",
) -> list[Leak]:
    """(b) or (c): identity means above ``threshold`` to any image of each evaluation set (chunked)."""
    best = {}
    for target, emb in evaluation.items():
        nb = neighbours(centres, emb, 1, threshold)
        for r in np.flatnonzero(nb.above > 0):
            lab = int(labels[r])
            prev = best.get(lab)
            cos = float(nb.cosine[r, 0])
            n = int(nb.above[r]) + (prev.matches if prev else 0)
            if prev is None or cos > prev.cosine:
                best[lab] = Leak(lab, kind, cos, f"{target}:{int(nb.index[r, 0])}", n)
            else:
                best[lab] = Leak(lab, kind, prev.cosine, prev.match, n)
    return [best[k] for k in sorted(best)]


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    far: float
    threshold: float  # the real impostor cosine at ``far``
    threshold_from: str  # "real" (impostors of the real set) or "synthetic" (no real set given)
    identities: int
    recognised: int  # identities with more than half of their own pairs accepted at ``threshold``
    share: float
    min_share: float
    real_share: float | None  # real identities recognised at the same threshold (None: no real set)
    conclusive: bool  # False when the recogniser recognises under half of the real identities at ``threshold``
    synthetic_genuine_median: float
    real_genuine_median: float | None
    synthetic_intra_mean: float
    advice: tuple[str, ...]

    def text(self) -> str:
        head = ("PASS" if self.passed else "FAIL") + ("" if self.conclusive else " (inconclusive)")
        real = "" if self.real_genuine_median is None else f" (real identities: {self.real_genuine_median:.3f})"
        need = (
            f"need {100 * self.min_share:.0f} %"
            if self.real_share is None
            else f"need {100 * self.min_share:.0f} % of the real identities' {100 * self.real_share:.1f} %"
        )
        lines = [
            f"quality gate {head}: {self.recognised}/{self.identities} synthetic identities "
            f"({100 * self.share:.1f} %, {need}) are recognised as themselves at "
            f"cosine > {self.threshold:.4f}, where {self.threshold_from} impostor pairs reach FAR "
            f"{self.far:g}; median synthetic genuine cosine {self.synthetic_genuine_median:.3f}{real}, "
            f"mean intra-identity cosine {self.synthetic_intra_mean:.3f}"
        ]
        if not self.conclusive:
            lines.append(
                "  the recogniser recognises under half of the REAL identities at this threshold: train it "
                "better or judge at a larger FAR before trusting this verdict"
            )
        lines += [f"  - {a}" for a in self.advice]
        return "\n".join(lines)


def gate_advice(manifest: dict | None) -> tuple[str, ...]:
    """What to change when synthetic identities are not identities, from the settings that made them."""
    if not manifest:
        return (
            "train the generator longer, sample with classifier-free guidance (--guidance cfg "
            "--guidance-scale 2-3) and more solver steps",
        )
    gen, smp = manifest.get("generator") or {}, manifest.get("sampler") or {}
    out = []
    step = gen.get("step")
    out.append(
        f"train the generator longer (checkpoint at step {step}; scoremix train-generator resumes): "
        "its class images must look like their class before mixes can"
        if step is not None
        else "train the generator longer: its class images must look like their class before mixes can"
    )
    g, w = smp.get("guidance", "none"), float(smp.get("guidance_scale", 1.0) or 1.0)
    if g == "none" or w <= 1.0:
        out.append(f"sample with guidance (now {g}, w = {w:g}): --guidance cfg --guidance-scale 2-3")
    else:
        out.append(f"raise the guidance scale (now {g}, w = {w:g}) by 0.5-1")
    steps = smp.get("steps")
    if steps is not None and int(steps) < 16:
        out.append(f"more solver steps (--steps, now {steps})")
    if smp.get("mix_window"):
        out.append(f"mix in a narrower noise window (now {smp['mix_window']}), or everywhere")
    return tuple(out)


def recognised_share(emb: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, int]:
    """(identities with more than half of their own pairs above ``threshold``, identities with >= 2 images)."""
    _, rate = identity_accept_rate(emb, labels, threshold)
    ok = np.isfinite(rate)
    return int(np.sum(rate[ok] > 0.5)), int(ok.sum())


def gate_passes(share: float, real_share: float | None, min_share: float = 0.5) -> bool:
    """The gate's relative rule: synthetic identities recognised at least ``min_share`` times as often as real ones
    at the same threshold (``min_share`` of all of them when there is no real set)."""
    return share >= min_share * (1.0 if real_share is None else real_share)


def gate_conclusive(real_share: float | None) -> bool:
    """Whether the recogniser recognises at least half the REAL identities at the threshold (else the verdict
    says little: at a strict FAR a weak recogniser rejects real identities too)."""
    return real_share is None or real_share >= 0.5


def quality_gate(
    emb: np.ndarray,
    labels: np.ndarray,
    threshold: Threshold,
    *,
    threshold_from: str = "real",
    min_share: float = 0.5,
    real_emb: np.ndarray | None = None,
    real_labels: np.ndarray | None = None,
    real_genuine: np.ndarray | None = None,
    synthetic_genuine=None,
    manifest: dict | None = None,
) -> GateVerdict:
    """The verdict on synthetic identities (``emb``: their unit image embeddings, ``labels``: identities;
    ``real_emb`` / ``real_labels``: the real set, for the relative rule in the module docstring)."""
    from scoremix_plugin.datareport.metrics import genuine_pairs, identity_stats, pair_scores

    recognised, n = recognised_share(emb, labels, threshold.cosine)
    share = recognised / n if n else 0.0
    real_share = None
    if real_emb is not None:
        r_rec, r_n = recognised_share(real_emb, real_labels, threshold.cosine)
        real_share = r_rec / r_n if r_n else None
    if synthetic_genuine is None:
        synthetic_genuine = pair_scores(emb, genuine_pairs(labels, 10**6))
    _, _, intra = identity_stats(emb, labels)
    passed = n > 0 and gate_passes(share, real_share, min_share)
    return GateVerdict(
        passed=passed,
        far=threshold.far,
        threshold=threshold.cosine,
        threshold_from=threshold_from,
        identities=n,
        recognised=recognised,
        share=float(share),
        min_share=float(min_share),
        real_share=real_share,
        conclusive=gate_conclusive(real_share),
        synthetic_genuine_median=float(np.median(synthetic_genuine)) if len(synthetic_genuine) else float("nan"),
        real_genuine_median=None if real_genuine is None else float(np.median(real_genuine)),
        synthetic_intra_mean=float(np.nanmean(intra)) if np.isfinite(intra).any() else float("nan"),
        advice=() if passed else gate_advice(manifest),
    )
