"""PNG figures of the dataset report (written atomically beside ``report.md``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scoremix_plugin.io_utils import pyplot, save_figure

GRID_IMAGES = 8  # images per row of the least-consistent grid


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def write_figures(out: str | os.PathLike, rep, ds, scores: dict, intra: np.ndarray) -> dict[str, str]:
    """scores.png, consistency.png, worst_identities.png (+ sources.png for a manifest) -> {key: file name}."""
    plt = pyplot()

    out = Path(out)
    figs = {}
    # Genuine vs impostor, real beside data: where the two overlap is where errors happen.
    panels = [(k, scores[k]) for k in ("real", "data") if scores.get(k) is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), sharex=True, squeeze=False)
    for ax, (key, (g, i)) in zip(axes[0], panels):
        s = rep.real if key == "real" else rep.data
        bins = np.linspace(-1, 1, 101)
        # histtype="step": one outline per histogram instead of a patch per bar (drawing is the slow part)
        ax.hist(i, bins=bins, density=True, histtype="step", lw=1.5, color="tab:red", label=f"impostor ({len(i):,})")
        ax.hist(g, bins=bins, density=True, histtype="step", lw=1.5, color="tab:blue", label=f"genuine ({len(g):,})")
        ax.axvline(rep.threshold.cosine, color="k", ls="--", lw=1, label=f"t @ FAR {rep.far:g}")
        ax.set_title(f"{key}: {s.name}  EER {100 * s.stats.eer:.2f} %  d' {s.stats.d_prime:.2f}", fontsize=9)
        ax.set_xlabel("cosine")
        ax.legend(fontsize=7)
    _save(fig, out / "scores.png")
    figs["scores"] = "scores.png"

    fig, ax = plt.subplots(figsize=(5, 3.4))
    v = intra[np.isfinite(intra)]
    ax.hist(v, bins=min(50, max(5, len(v) // 3)), histtype="stepfilled", color="tab:blue")
    ax.axvline(rep.threshold.cosine, color="k", ls="--", lw=1, label=f"t @ FAR {rep.far:g}")
    ax.set_xlabel("mean intra-identity cosine")
    ax.set_title(f"{rep.data.name}: per-identity consistency ({len(v)} identities)", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, out / "consistency.png")
    figs["consistency"] = "consistency.png"

    if rep.data.worst:
        _worst_grid(out / "worst_identities.png", ds, [lab for lab, _ in rep.data.worst])
        figs["worst"] = "worst_identities.png"

    if rep.identities and rep.identities[0].source_cos:
        sc = np.array([r.source_cos[:2] for r in rep.identities], float)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.scatter(sc[:, 0], sc[:, 1], s=8)
        ax.axvline(rep.threshold.cosine, color="k", ls="--", lw=1)
        ax.axhline(rep.threshold.cosine, color="k", ls="--", lw=1)
        ax.set_xlabel("cosine to source a")
        ax.set_ylabel("cosine to source b")
        ax.set_title("synthetic identity vs its two sources (mean pair cosine)", fontsize=9)
        _save(fig, out / "sources.png")
        figs["sources"] = "sources.png"
    return figs


def _worst_grid(path: Path, ds, labels: list[int]) -> None:
    """One row per identity (least consistent first), its first images, through generation's grid helper."""
    import torch

    from scoremix_plugin.generation.images import save_grid

    rows = []
    for lab in labels:
        idx = np.flatnonzero(ds.labels == lab)[:GRID_IMAGES]
        imgs = [ds.image(i) for i in idx]
        imgs += [np.full_like(imgs[0], 255)] * (GRID_IMAGES - len(imgs))  # white padding
        rows += imgs
    x = torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    save_grid(path, x, ncol=GRID_IMAGES)
