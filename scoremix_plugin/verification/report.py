"""Verification reports: a JSON summary, a Markdown table and a ROC plot (PNG) in one folder.

Takes one run (``{target: VerificationResult}``) or several named runs
(``{run: {target: VerificationResult}}``, e.g. baseline vs ScoreMix), so the same files serve a
single evaluation and a comparison.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from scoremix_plugin.io_utils import pyplot, save_figure, write_json_atomic, write_text_atomic
from scoremix_plugin.verification.protocol import VerificationResult

Runs = Mapping[str, Mapping[str, VerificationResult]]


def as_runs(results: Mapping[str, Any], default_run: str = "model") -> dict[str, dict[str, VerificationResult]]:
    """Normalise ``{target: result}`` or ``{run: {target: result}}`` to the named-runs form."""
    if results and all(isinstance(v, VerificationResult) for v in results.values()):
        return {default_run: dict(results)}
    if all(isinstance(v, Mapping) and all(isinstance(r, VerificationResult) for r in v.values())
           for v in results.values()):
        return {str(k): dict(v) for k, v in results.items()}
    raise TypeError("results must be {target: VerificationResult} or {run: {target: VerificationResult}}")


def _tar_cell(r: VerificationResult, far: float) -> str:
    t = r.tar_at_far.get(far)
    if t is None:
        return "-"
    # The flag: too few negatives to resolve this FAR, so the value is a coarse bound.
    return f"{100 * t.tar:.2f}" + (" *" if t.few_negatives else "")


def format_table(results: Mapping[str, Any], far: float = 1e-3) -> str:
    """Markdown table: (run,) target, pairs, accuracy mean +- std (%), TAR@FAR (%), XNorm."""
    runs = as_runs(results)
    named = len(runs) > 1 or not all(isinstance(v, VerificationResult) for v in results.values())
    run_col = ("| run ", "|---") if named else ("", "")
    lines = [
        f"{run_col[0]}| target | pairs | accuracy (%) | TAR@FAR={far:g} (%) | XNorm |",
        f"{run_col[1]}|---|---:|---:|---:|---:|",
    ]
    flagged = False
    for run, targets in runs.items():
        for target, r in targets.items():
            t = r.tar_at_far.get(far)
            flagged |= bool(t and t.few_negatives)
            xnorm = "-" if r.xnorm is None else f"{r.xnorm:.3f}"
            lines.append(f"{f'| {run} ' if named else ''}| {target} | {r.num_pairs} | {100 * r.accuracy_mean:.2f} +- "
                         f"{100 * r.accuracy_std:.2f} | {_tar_cell(r, far)} | {xnorm} |")
    if flagged:
        lines.append("")
        lines.append(f"\\* fewer than {1 / far:g} negative pairs: TAR@FAR={far:g} cannot be resolved on this set "
                     "(reported at the smallest FAR it has).")
    return "\n".join(lines)


def plot_roc(results: Mapping[str, Any], path: str | os.PathLike, title: str = "Verification ROC") -> Path:
    """One panel per target, one curve per run: TAR against FAR on a log axis (all pairs)."""
    plt = pyplot()

    runs = as_runs(results)
    targets = list(dict.fromkeys(t for r in runs.values() for t in r))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for run, res in runs.items():
            if target not in res:
                continue
            r = res[target]
            # FAR = 0 has no place on a log axis; start at the smallest resolvable FAR instead.
            floor = 1.0 / max(r.num_negative, 1)
            far = np.maximum(r.roc_far, floor)
            label = f"{run} ({100 * r.accuracy_mean:.2f}%)" if len(runs) > 1 else f"acc {100 * r.accuracy_mean:.2f}%"
            ax.step(far, r.roc_tar, where="post", label=label)
        ax.set_xscale("log")
        ax.set_xlim(left=min(1.0 / max(r.num_negative, 1) for res in runs.values()
                             for t, r in res.items() if t == target), right=1.0)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("FAR")
        ax.set_ylabel("TAR")
        ax.set_title(target)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    save_figure(fig, out, dpi=110)
    return out


def results_json(results: Mapping[str, Any], curves: bool = True) -> dict[str, Any]:
    """``{run: {target: result.to_dict()}}``; a single unnamed run is written as ``{target: ...}``."""
    runs = as_runs(results)
    if len(runs) == 1 and all(isinstance(v, VerificationResult) for v in results.values()):
        return {t: r.to_dict(curves) for t, r in next(iter(runs.values())).items()}
    return {run: {t: r.to_dict(curves) for t, r in res.items()} for run, res in runs.items()}


def write_report(out_dir: str | os.PathLike, results: Mapping[str, Any], *, title: str = "Verification",
                 far: float = 1e-3, meta: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``verification.json``, ``verification.md`` and ``roc.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "verification.json", "markdown": out / "verification.md", "roc": out / "roc.png"}
    payload: dict[str, Any] = {"meta": dict(meta or {}), "results": results_json(results)}
    write_json_atomic(paths["json"], payload)
    plot_roc(results, paths["roc"], title=f"{title}: ROC")
    md = [f"# {title}", ""]
    for k, v in (meta or {}).items():
        md.append(f"- {k}: {v}")
    if meta:
        md.append("")
    md += [
        "Accuracy: 10-fold protocol of arcface_torch (squared L2 of flip-added normalised embeddings, "
        "thresholds 0..4 step 0.01, mean +- population std over folds). TAR@FAR on all pairs.",
        "",
        format_table(results, far=far),
        "",
        f"![ROC]({paths['roc'].name})",
        "",
    ]
    write_text_atomic(paths["markdown"], "\n".join(md))
    return paths
