"""Quality report of a generation run: are the synthetic identities consistent, distinct and new?

For each synthetic identity (embeddings of its images by a recogniser, flip-added, normalised):

- ``intra``: mean pairwise cosine of its images (consistency; ``(|sum|^2 - n) / (n (n - 1))`` for unit rows);
- ``nearest_synthetic`` / ``nearest_synthetic_cos``: the closest other synthetic identity (cosine of centres);
- ``nearest_real`` / ``nearest_real_cos``: the closest real class, against ``--real-centres`` (``scoremix embed``).

Filtering never rewrites shards (labels inside shards must stay contiguous): with ``filter_real_cos`` /
``filter_min_intra`` it marks identities to drop and writes ``OUT/filtered_pairs.csv``, the pairs file of
the kept identities renumbered 0..n-1, to generate from again (same settings, new ``--out``): a clean,
reproducible run without the dropped identities. Outputs: ``OUT/quality.json`` and ``OUT/quality.png``.

This is the quick per-identity view written after generation; the full dataset report (genuine/impostor
statistics, leak checks against training and evaluation sets, the quality gate, dropping leaked
identities) is ``scoremix_plugin.datareport``, whose metrics this module shares.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.datareport.metrics import identity_stats, topk_similar  # noqa: F401 - identity_stats re-exported
from scoremix_plugin.errors import InputError
from scoremix_plugin.io_utils import pyplot, save_figure, write_json_atomic


def _nearest(a: np.ndarray, b: np.ndarray, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    idx, val, _ = topk_similar(a, b, 1, exclude_self=exclude_self)
    return idx[:, 0], val[:, 0].astype(np.float64)


def quality_report(out_dir: str | os.PathLike, embedder, *, network: str | None = None, real_centres=None,
                   filter_real_cos: float | None = None, filter_min_intra: float | None = None,
                   device=None, batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """Embed every shard image of a finished run and write ``quality.json`` / ``quality.png`` (+ filtered pairs)."""
    from tqdm.auto import tqdm

    from scoremix_plugin.centres import load_centres
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.synthesis.manifest import verify_manifest
    from scoremix_plugin.synthesis.select import Selection, read_pairs, write_pairs
    from scoremix_plugin.verification.evaluate import embed_images, load_embedder

    out = Path(out_dir)
    m = verify_manifest(out / "manifest.json", check_sha=False)
    embedder_name = str(embedder) if isinstance(embedder, (str, os.PathLike)) else type(embedder).__name__
    if isinstance(embedder, (str, os.PathLike)):
        embedder = load_embedder(embedder, network=network, device=device)
    c_real = m.real_num_classes
    embs, labs = [], []
    for s in tqdm(m.shards, desc="quality: embed shards", unit="shard", disable=not progress):
        folder = FaceRecFolder(s.path)
        # A few thousand decoded images at a time: a whole shard can be gigabytes of pixels.
        for i0 in range(0, len(folder), 2048):
            images = np.stack([folder.image(i) for i in range(i0, min(i0 + 2048, len(folder)))])
            e, _ = embed_images(embedder, images, batch_size=batch_size, flip=True)
            embs.append(e)
        labs.append(folder.labels)
        folder.close()
    emb, lab = np.concatenate(embs), np.concatenate(labs)
    uniq, centres, intra = identity_stats(emb, lab)
    syn_idx, syn_cos = _nearest(centres, centres, exclude_self=True) if len(uniq) > 1 else (
        np.full(len(uniq), -1), np.full(len(uniq), np.nan))
    real = None
    if real_centres is not None:
        real = load_centres(real_centres)
        if real.centres.shape[1] != centres.shape[1]:
            raise InputError(f"{real_centres}: {real.centres.shape[1]}-d centres, the embedder gives {centres.shape[1]}-d")
        r_idx, r_cos = _nearest(centres, real.centres, exclude_self=False)
    keep = np.ones(len(uniq), bool)
    reasons: list[list[str]] = [[] for _ in uniq]
    if filter_min_intra is not None:
        for i in np.flatnonzero(~(intra >= filter_min_intra)):
            keep[i] = False
            reasons[i].append(f"intra {intra[i]:.3f} < {filter_min_intra}")
    if filter_real_cos is not None:
        if real is None:
            raise InputError("--filter-real-cos needs --real-centres")
        for i in np.flatnonzero(r_cos >= filter_real_cos):
            keep[i] = False
            reasons[i].append(f"real class {int(real.labels[r_idx[i]])} at cosine {r_cos[i]:.3f} >= {filter_real_cos}")
    sel_path = (out / m.selection["file"]).resolve()
    sel = read_pairs(sel_path)
    rows = []
    for i, lab_i in enumerate(uniq.tolist()):
        n = lab_i - c_real
        row = {"label": lab_i, "new_label": n, "classes": sel.classes[n].tolist(), "intra": float(intra[i]),
               "nearest_synthetic": int(uniq[syn_idx[i]]) if syn_idx[i] >= 0 else None,
               "nearest_synthetic_cos": float(syn_cos[i]), "keep": bool(keep[i]), "drop_reasons": reasons[i]}
        if real is not None:
            row["nearest_real"] = int(real.labels[r_idx[i]])
            row["nearest_real_cos"] = float(r_cos[i])
            row["source_in_nearest_real"] = int(real.labels[r_idx[i]]) in row["classes"]
        rows.append(row)

    def stats(v):
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())} if len(v) else None

    summary = {"identities": len(uniq), "images": int(len(lab)), "intra": stats(intra),
               "nearest_synthetic_cos": stats(syn_cos), "kept": int(keep.sum()), "dropped": int((~keep).sum())}
    if real is not None:
        summary["nearest_real_cos"] = stats(r_cos)
        summary["nearest_real_is_a_source"] = float(np.mean([r["source_in_nearest_real"] for r in rows]))
    report = {"manifest": "manifest.json", "embedder": embedder_name,
              "real_centres": str(real_centres) if real_centres else None,
              "filter": {"real_cos": filter_real_cos, "min_intra": filter_min_intra}, "summary": summary,
              "identities": rows}
    if filter_real_cos is not None or filter_min_intra is not None:
        kept_n = [r["new_label"] for r in rows if r["keep"]]
        if kept_n:
            write_pairs(out / "filtered_pairs.csv",
                        Selection(sel.classes[kept_n], sel.weights[kept_n], sel.distance[kept_n]),
                        {"filtered_from": str(sel_path), "kept_new_labels": kept_n,
                         "strategy": m.selection.get("strategy"), "space": m.selection.get("space"),
                         "filter": report["filter"]})
            report["filtered_pairs"] = "filtered_pairs.csv"
    write_json_atomic(out / "quality.json", report)
    plot_quality(report, out / "quality.png")
    return report


def plot_quality(report: dict[str, Any], path: str | os.PathLike) -> None:
    plt = pyplot()

    rows = report["identities"]
    panels = [("intra", "intra-identity cosine", report["filter"]["min_intra"]),
              ("nearest_synthetic_cos", "cosine to nearest other synthetic identity", None)]
    if rows and "nearest_real_cos" in rows[0]:
        panels.append(("nearest_real_cos", "cosine to nearest real class", report["filter"]["real_cos"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title, thr) in zip(np.atleast_1d(axes), panels):
        v = np.asarray([r[key] for r in rows], float)
        v = v[np.isfinite(v)]
        ax.hist(v, bins=min(40, max(5, len(v) // 3)), color="tab:blue")
        if thr is not None:
            ax.axvline(thr, color="tab:red", ls="--", label=f"filter {thr:.3g}")
            ax.legend()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("cosine")
    fig.suptitle(f"{report['summary']['identities']} synthetic identities, {report['summary']['images']} images",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
