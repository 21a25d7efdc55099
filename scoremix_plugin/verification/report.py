"""Verification reports: a JSON summary, a Markdown table and a ROC plot (PNG) in one folder.

Takes one run (``{target: VerificationResult}``) or several named runs
(``{run: {target: VerificationResult}}``, e.g. baseline vs ScoreMix), so the same files serve a
single evaluation and a comparison.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.io_utils import pyplot, save_figure, write_json_atomic, write_text_atomic
from scoremix_plugin.verification.protocol import VerificationResult

Runs = Mapping[str, Mapping[str, VerificationResult]]

# The five high-quality .bin sets whose mean accuracy the ScoreMix paper reports as "Avg-H".
AVG_H_TARGETS: tuple[str, ...] = ("lfw", "cfp_fp", "agedb_30", "calfw", "cplfw")


def avg_h(accuracies: Mapping[str, float]) -> dict[str, Any] | None:
    """``{"avg_h", "present", "missing"}``: the mean accuracy over the Avg-H sets present (None when none is).

    Takes ``{target: accuracy}`` (fractions); the mean is over the sets found, and ``present`` says which, so a
    number over fewer than five sets is never mistaken for the paper's.
    """
    present = [t for t in AVG_H_TARGETS if t in accuracies]
    if not present:
        return None
    return {
        "avg_h": float(np.mean([accuracies[t] for t in present])),
        "present": present,
        "missing": [t for t in AVG_H_TARGETS if t not in accuracies],
    }


def avg_h_line(accuracies: Mapping[str, float], run: str = "") -> str | None:
    """One Markdown line naming the Avg-H and the sets it averages."""
    a = avg_h(accuracies)
    if a is None:
        return None
    of = "all five" if not a["missing"] else f"{len(a['present'])} of 5; missing {', '.join(a['missing'])}"
    return (
        f"Avg-H{f' ({run})' if run else ''}: {100 * a['avg_h']:.2f} % (mean accuracy of "
        f"{', '.join(a['present'])}: {of})"
    )


def as_runs(results: Mapping[str, Any], default_run: str = "model") -> dict[str, dict[str, VerificationResult]]:
    """Normalise ``{target: result}`` or ``{run: {target: result}}`` to the named-runs form."""
    if results and all(isinstance(v, VerificationResult) for v in results.values()):
        return {default_run: dict(results)}
    if all(
        isinstance(v, Mapping) and all(isinstance(r, VerificationResult) for r in v.values()) for v in results.values()
    ):
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
            lines.append(
                f"{f'| {run} ' if named else ''}| {target} | {r.num_pairs} | {100 * r.accuracy_mean:.2f} +- "
                f"{100 * r.accuracy_std:.2f} | {_tar_cell(r, far)} | {xnorm} |"
            )
    avg = [
        avg_h_line({t: r.accuracy_mean for t, r in targets.items()}, run if named else "")
        for run, targets in runs.items()
    ]
    if any(avg):
        lines += [""] + [line for line in avg if line]
    if flagged:
        lines.append("")
        lines.append(
            f"\\* fewer than {1 / far:g} negative pairs: TAR@FAR={far:g} cannot be resolved on this set "
            "(reported at the smallest FAR it has)."
        )
    return "\n".join(lines)


def plot_curves(
    panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    path: str | os.PathLike,
    *,
    title: str,
    xlim: tuple[float, float] | Mapping[str, tuple[float, float]],
    ylim=(0.0, 1.01),
    step: bool = True,
    xticks: list[float] | None = None,
) -> Path:
    """ROC-style PNG: one panel per ``{panel: {label: (far, tar)}}`` entry, FAR on a log axis."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, (far, tar) in curves.items():
            if step:
                ax.step(far, tar, where="post", label=label)
            else:
                ax.plot(far, tar, lw=1, label=label)
        ax.set_xscale("log")
        left, right = xlim[name] if isinstance(xlim, Mapping) else xlim
        ax.set_xlim(left=left, right=right)
        ax.set_ylim(*ylim)
        if xticks:
            ax.set_xticks(xticks)
        ax.set_xlabel("FAR")
        ax.set_ylabel("TAR")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    save_figure(fig, out, dpi=110)
    return out


def plot_roc(results: Mapping[str, Any], path: str | os.PathLike, title: str = "Verification ROC") -> Path:
    """One panel per target, one curve per run: TAR against FAR on a log axis (all pairs)."""
    runs = as_runs(results)
    targets = list(dict.fromkeys(t for r in runs.values() for t in r))
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {t: {} for t in targets}
    xlim: dict[str, tuple[float, float]] = {}
    for target in targets:
        for run, res in runs.items():
            if target not in res:
                continue
            r = res[target]
            # FAR = 0 has no place on a log axis; start at the smallest resolvable FAR instead.
            floor = 1.0 / max(r.num_negative, 1)
            label = f"{run} ({100 * r.accuracy_mean:.2f}%)" if len(runs) > 1 else f"acc {100 * r.accuracy_mean:.2f}%"
            panels[target][label] = (np.maximum(r.roc_far, floor), r.roc_tar)
            xlim[target] = (min(floor, xlim.get(target, (1.0,))[0]), 1.0)
    return plot_curves(panels, path, title=title, xlim=xlim)


def results_json(results: Mapping[str, Any], curves: bool = True) -> dict[str, Any]:
    """``{run: {target: result.to_dict()}}``; a single unnamed run is written as ``{target: ...}``."""
    runs = as_runs(results)
    if len(runs) == 1 and all(isinstance(v, VerificationResult) for v in results.values()):
        return {t: r.to_dict(curves) for t, r in next(iter(runs.values())).items()}
    return {run: {t: r.to_dict(curves) for t, r in res.items()} for run, res in runs.items()}


def write_report(
    out_dir: str | os.PathLike,
    results: Mapping[str, Any],
    *,
    title: str = "Verification",
    far: float = 1e-3,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
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


# IJB-B / IJB-C (results of verification.ijb: IJBResult, or {run: IJBResult}).


def _ijb_runs(results: Any) -> dict[str, Any]:
    if hasattr(results, "modes") and hasattr(results, "fars"):
        return {"": results}
    if isinstance(results, Mapping) and results and all(hasattr(r, "modes") for r in results.values()):
        return {str(k): v for k, v in results.items()}
    raise TypeError("results must be an IJBResult or {run: IJBResult}")


def format_ijb_table(results: Any, strict: bool = False) -> str:
    """The host's TPR@FPR table in Markdown (rows ``MODE-TARGET``, TAR in %); ``strict``: the strict TAR + AUC."""
    runs = _ijb_runs(results)
    fars = next(iter(runs.values())).fars
    head = ["Methods"] + [str(float(f)) for f in fars] + (["AUC (%)"] if strict else [])
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    flagged = set()
    for run, r in runs.items():
        if tuple(r.fars) != tuple(fars):
            raise ValueError(f"run {run!r} has FARs {r.fars}, the table has {fars}")
        for mode, m in r.modes.items():
            name = f"{run + ':' if run else ''}{mode}-{r.target}"
            if strict:
                cells = []
                for far, t in zip(fars, m.tar_strict):
                    cells.append(f"{100 * t.tar:.2f}" + (" *" if t.few_negatives else ""))
                    if t.few_negatives:
                        flagged.add(far)
                cells.append(f"{100 * m.auc:.4f}")
            else:
                cells = [f"{100 * t:.2f}" for t in m.tar]
            lines.append("| " + " | ".join([name] + cells) + " |")
    if flagged:
        lines += [
            "",
            f"\\* fewer impostor pairs than 1/FAR (FAR {', '.join(f'{f:g}' for f in sorted(flagged))}): "
            "that FAR cannot be resolved on this set; the value is the TAR at zero false accepts.",
        ]
    return "\n".join(lines)


def _runs_payload(runs: Mapping[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """A report's JSON: the meta, then one unnamed run's fields, or the named runs under "runs"."""
    if "" in runs:
        return {"meta": dict(meta or {}), **runs[""].to_dict()}
    return {"meta": dict(meta or {}), "runs": {k: r.to_dict() for k, r in runs.items()}}


def write_ijb_report(
    out_dir: str | os.PathLike, results: Any, *, title: str = "IJB verification", meta: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``ijb.json``, ``ijb.md`` (the host's table, then strict TAR + AUC) and ``ijb_roc.png`` into ``out_dir``."""
    runs = _ijb_runs(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "ijb.json", "markdown": out / "ijb.md", "roc": out / "ijb_roc.png"}
    write_json_atomic(paths["json"], _runs_payload(runs, meta))
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for run, r in runs.items():
        for mode, m in r.modes.items():
            label = f"{run + ':' if run else ''}{mode} (AUC = {100 * m.auc:.4f} %)"
            panels.setdefault(r.target, {})[label] = (m.roc_fpr, m.roc_tpr)
    fars = list(next(iter(runs.values())).fars)
    # The host's axes: FAR 1e-6 .. 0.1, TAR 0.3 .. 1, lines through the (point-dropped) ROC.
    plot_curves(
        panels, paths["roc"], title=f"{title}: ROC", xlim=(fars[0], fars[-1]), ylim=(0.3, 1.0), step=False, xticks=fars
    )
    first = next(iter(runs.values()))
    md = [f"# {title}", ""]
    for k, v in (meta or {}).items():
        md.append(f"- {k}: {v}")
    md += [
        f"- {first.target}: {first.num_images} images, {first.num_templates} templates, {first.num_pairs} pairs "
        f"({first.num_genuine} genuine, {first.num_impostor} impostor)",
        "",
        "TAR (%) at FAR, arcface_torch's `eval_ijbc.py` rule (ROC point with the nearest FAR; modes: F1 = "
        "flip added, N1 = norm kept, D1 = faceness-weighted):",
        "",
        format_ijb_table(results),
        "",
        "Strict TAR (%): the highest TAR whose FAR does not exceed the target; AUC of the ROC:",
        "",
        format_ijb_table(results, strict=True),
        "",
        f"![ROC]({paths['roc'].name})",
        "",
    ]
    write_text_atomic(paths["markdown"], "\n".join(md))
    return paths


# Identification: TinyFace (results of verification.tinyface: TinyFaceResult, or {run: TinyFaceResult}).


def _tinyface_runs(results: Any) -> dict[str, Any]:
    if hasattr(results, "cmc_count"):
        return {"": results}
    if isinstance(results, Mapping) and results and all(hasattr(r, "cmc_count") for r in results.values()):
        return {str(k): v for k, v in results.items()}
    raise TypeError("results must be a TinyFaceResult or {run: TinyFaceResult}")


def format_tinyface_table(results: Any) -> str:
    """Markdown: (run,) probes, gallery, rank-k (%) and the open-set DIR at each FAR (%)."""
    runs = _tinyface_runs(results)
    first = next(iter(runs.values()))
    head = (
        (["run"] if "" not in runs else [])
        + ["probes", "gallery (distractors)"]
        + [f"rank-{r} (%)" for r in first.ranks]
        + [f"DIR@FAR={o['far']:g} (%)" for o in first.open_set]
    )
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for run, r in runs.items():
        cells = ([run] if run else []) + [
            str(r.num_probes),
            f"{r.num_matches + r.num_distractors} ({r.num_distractors})",
        ]
        cells += [f"{100 * r.cmc[k]:.2f}" for k in r.ranks] + [f"{100 * o['dir']:.2f}" for o in r.open_set]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tinyface_report(
    out_dir: str | os.PathLike,
    results: Any,
    *,
    title: str = "TinyFace identification",
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``tinyface.json``, ``tinyface.md`` and ``tinyface_cmc.png`` (CMC, ranks 1..50) into ``out_dir``."""
    runs = _tinyface_runs(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "tinyface.json", "markdown": out / "tinyface.md", "cmc": out / "tinyface_cmc.png"}
    write_json_atomic(paths["json"], _runs_payload(runs, meta))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for run, r in runs.items():
        x = np.arange(1, r.cmc_curve.size + 1)
        ax.plot(x, 100 * r.cmc_curve, lw=1.5, label=f"{run + ': ' if run else ''}rank-1 {100 * r.rank1:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_title(f"{title}: CMC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, paths["cmc"], dpi=110)
    tied = sum(r.tied_probes for r in runs.values())
    md = (
        [f"# {title}", ""]
        + [f"- {k}: {v}" for k, v in (meta or {}).items()]
        + [
            "",
            "Closed-set identification, the protocol of AdaFace's `validation_lq/tinyface_helper.py` (probes "
            "against gallery matches + distractors, inner product of flip-added features; a probe is found at rank r "
            "when any of its mates is among the r best). DIR@FAR: open-set extra (each probe's search with its mates "
            "removed is its non-mated search; thresholds by the reference's `find_thresholds_by_FAR`).",
            "",
            format_tinyface_table(results),
            "",
        ]
    )
    if tied:
        md += [f"{tied} probe(s) had a non-mated entry tying with their best mate (counted in the probe's favour).", ""]
    md += [f"![CMC]({paths['cmc'].name})", ""]
    write_text_atomic(paths["markdown"], "\n".join(md))
    return paths
