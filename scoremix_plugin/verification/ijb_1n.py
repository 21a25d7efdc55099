"""IJB-B / IJB-C 1:N identification, with the numbers of insightface's ``recognition/_evaluation_/ijb/ijb_1n.py``.

    from scoremix_plugin.verification.ijb_1n import evaluate_ijb_1n_features
    meta, sets = read_ijb_1n_meta("/data/IJB_release/IJBC", "IJBC")
    result = evaluate_ijb_1n_features(meta, sets, img_feats)      # img_feats [N, 2D] as for 1:1
    result.galleries["G1+G2"].rank_count   # the reference's own search: both galleries enrolled together

The protocol: template features exactly as the 1:1 code (``ijb.mode_features`` + ``ijb.template_features``;
the reference's default F1N1D1); the gallery templates of G1 / G2 (IJB-B: S1 / S2), one per subject; the
"mixed" probe templates; score = the inner product of the L2-normalised template features (float64);
rank-1 / 5 / 10 = share of probes whose gallery template is among the k best; TPIR at FPIR 0.01 / 0.1 by
the reference's rule (``identification.tpir_at_fpir``: threshold = the ``ceil(probes * FPIR)``-th highest
non-mated score over all probes, TPIR = share of mated scores strictly above it).

Galleries: the reference enrols G1 and G2 together (``"G1+G2"``, all probes). The usual IJB 1:N tables
report G1 and G2 apart, each with the probes of its own subjects, and their mean: those are given too
(``"G1"``, ``"G2"``, ``"mean"``), by the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scoremix_plugin.verification.identification import cmc_counts, search, tpir_at_fpir
from scoremix_plugin.verification.ijb import check_modes, mode_features, template_features
from scoremix_plugin.verification.ijb_meta import IJBError, IJBMeta, gallery_names

RANKS_1N: tuple[int, ...] = (1, 5, 10)
FPIRS: tuple[float, ...] = (0.01, 0.1)


@dataclass
class GalleryResult:
    """One gallery's search: rank-k and TPIR@FPIR (shares of ``num_probes``) with the counts behind them."""

    num_probes: int
    num_gallery: int
    ranks: tuple[int, ...]
    rank_count: list[int]
    tpir: list[dict[str, float]]
    tied_probes: int

    @property
    def rank_rate(self) -> list[float]:
        return [c / self.num_probes for c in self.rank_count]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_probes": self.num_probes,
            "num_gallery": self.num_gallery,
            "ranks": list(self.ranks),
            "rank": self.rank_rate,
            "rank_count": list(self.rank_count),
            "tpir": list(self.tpir),
            "tied_probes": self.tied_probes,
        }


@dataclass
class IJB1NResult:
    target: str
    mode: str
    galleries: dict[str, GalleryResult]  # "G1", "G2", "G1+G2" (IJB-B: S1, S2, S1+S2)
    mean: dict[str, Any]  # the mean over the two galleries of each rank and TPIR
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "galleries": {k: g.to_dict() for k, g in self.galleries.items()},
            "mean": dict(self.mean),
            "meta": dict(self.meta),
        }


def search_gallery(
    tfeats: np.ndarray,
    tids: np.ndarray,
    gallery: tuple[np.ndarray, np.ndarray],
    probes: tuple[np.ndarray, np.ndarray],
    ranks: Sequence[int] = RANKS_1N,
    fpirs: Sequence[float] = FPIRS,
) -> GalleryResult:
    """One gallery's numbers; ``tfeats`` [T, D] rows of the sorted template ids ``tids``."""
    (g_t, g_s), (p_t, p_s) = gallery, probes
    keep = np.ceil(p_t.size * max(fpirs)).astype(int) if fpirs else 0
    stats = search(tfeats[np.searchsorted(tids, p_t)], p_s, tfeats[np.searchsorted(tids, g_t)], g_s, keep_top=int(keep))
    return GalleryResult(
        num_probes=int(p_t.size),
        num_gallery=int(g_t.size),
        ranks=tuple(ranks),
        rank_count=cmc_counts(stats.rank, ranks),
        tpir=tpir_at_fpir(stats, fpirs),
        tied_probes=int(np.count_nonzero(stats.tied)),
    )


def evaluate_ijb_1n_features(
    meta: IJBMeta,
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    img_feats: np.ndarray,
    mode: str = "F1N1D1",
    ranks: Sequence[int] = RANKS_1N,
    fpirs: Sequence[float] = FPIRS,
) -> IJB1NResult:
    """The protocol on image features [N, 2D] (image | flip, rows in 5pts order), ``sets`` from ``read_ijb_1n_meta``."""
    (mode,) = check_modes(mode)
    if img_feats.ndim != 2 or img_feats.shape[0] != meta.num_images or img_feats.shape[1] % 2:
        raise IJBError(f"image features must be [{meta.num_images}, 2*D], got shape {img_feats.shape}")
    tfeats, tids = template_features(mode_features(img_feats, meta.faceness, mode), meta.templates, meta.medias)
    a, b = gallery_names(meta.target)
    probe_t, probe_s = sets["probe"]
    used = np.concatenate([sets[a][0], sets[b][0], probe_t])
    bad = np.flatnonzero(~np.isfinite(tfeats[np.searchsorted(tids, used)]).all(1))
    if bad.size:
        raise IJBError(
            f"mode {mode}: template {int(used[bad[0]])} has a non-finite feature (an image feature "
            "of zero norm cannot be L2-normalised)"
        )
    galleries: dict[str, GalleryResult] = {}
    for g in (a, b):
        mine = np.isin(probe_s, sets[g][1])  # the probes of this gallery's subjects
        galleries[g] = search_gallery(tfeats, tids, sets[g], (probe_t[mine], probe_s[mine]), ranks, fpirs)
    both = (np.concatenate([sets[a][0], sets[b][0]]), np.concatenate([sets[a][1], sets[b][1]]))
    order = np.argsort(both[0], kind="stable")  # the reference's np.unique order (irrelevant to the numbers)
    galleries[f"{a}+{b}"] = search_gallery(
        tfeats, tids, (both[0][order], both[1][order]), (probe_t, probe_s), ranks, fpirs
    )
    mean = {
        "ranks": list(ranks),
        "rank": [float(np.mean([galleries[g].rank_rate[i] for g in (a, b)])) for i in range(len(ranks))],
        "fpir": list(fpirs),
        "tpir": [float(np.mean([galleries[g].tpir[i]["tpir"] for g in (a, b)])) for i in range(len(fpirs))],
    }
    return IJB1NResult(target=meta.target, mode=mode, galleries=galleries, mean=mean, meta={"root": str(meta.root)})


def format_1n_table(result: IJB1NResult) -> str:
    """Markdown: one row per gallery (and the mean of the two), rank-k and TPIR@FPIR in %."""
    g0 = next(iter(result.galleries.values()))
    head = (
        ["gallery", "probes", "gallery templates"]
        + [f"rank-{r}" for r in g0.ranks]
        + [f"TPIR@FPIR={t['fpir']:g}" for t in g0.tpir]
    )
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, g in result.galleries.items():
        cells = (
            [name, str(g.num_probes), str(g.num_gallery)]
            + [f"{100 * v:.2f}" for v in g.rank_rate]
            + [f"{100 * t['tpir']:.2f}" for t in g.tpir]
        )
        lines.append("| " + " | ".join(cells) + " |")
    m = result.mean
    lines.append(
        "| "
        + " | ".join(
            ["mean of the two", "", ""] + [f"{100 * v:.2f}" for v in m["rank"]] + [f"{100 * v:.2f}" for v in m["tpir"]]
        )
        + " |"
    )
    return "\n".join(lines)
