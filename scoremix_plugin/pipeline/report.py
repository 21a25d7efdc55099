"""The pipeline's report stage: ``DIR/report.md`` + ``DIR/report.json`` + figures under ``DIR/figures/``.

The numbers come from the earlier stages' results (the verify stage's accuracies, the generate stage's
quality summary, ...); a stage added by a recipe appears with its timing and its result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scoremix_plugin.io_utils import pyplot, save_figure, write_bytes_atomic, write_json_atomic, write_text_atomic
from scoremix_plugin.pipeline.results import ReportResult
from scoremix_plugin.pipeline.runner import Context, Stage, to_json
from scoremix_plugin.verification.report import avg_h, avg_h_line


def mix_grid(ctx: Context, path: Path) -> Path | None:
    """Rows of (real images of class a | of class b | the synthetic identity mixed from them)."""
    import cv2
    import numpy as np

    from scoremix_plugin.generation.images import write_png
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.synthesis.manifest import Manifest
    from scoremix_plugin.synthesis.select import read_pairs

    sel = read_pairs(ctx.result("select").pairs)
    rows_wanted, n = int(ctx.recipe.report.grid_pairs), int(ctx.recipe.report.grid_images)
    manifest = Manifest.read(ctx.result("generate").manifest)

    def images_of(folder, label: int) -> list:
        return [folder.image(int(i)) for i in np.flatnonzero(folder.labels == label)[:n]]

    blank = np.full((112, 112, 3), 255, np.uint8)
    gap = np.full((112, 8, 3), 255, np.uint8)
    rows = []
    with FaceRecFolder(ctx.result("data").rec) as real:
        for shard in manifest.shards:
            with FaceRecFolder(shard.path) as syn:
                for label in range(*shard.labels):
                    if len(rows) >= rows_wanted:
                        break
                    parts = []
                    groups = [images_of(real, int(c)) for c in sel.classes[label - manifest.real_num_classes]] + [
                        images_of(syn, label)
                    ]
                    for group in groups:
                        parts += [np.concatenate((group + [blank] * n)[:n], 1), gap]
                    rows.append(np.concatenate(parts[:-1], 1))
    if not rows:
        return None
    sep = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    header = np.full((22, rows[0].shape[1], 3), 255, np.uint8)
    block = n * 112 + gap.shape[1]
    titles = [f"real class {'abcdefgh'[i]}" for i in range(sel.k)] + ["ScoreMix identity"]
    for i, title in enumerate(titles):
        cv2.putText(header, title, (i * block + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    write_png(path, np.concatenate([header] + [x for r in rows for x in (r, sep)][:-1], 0))
    return path


def accuracy_plot(acc: Mapping, std: Mapping, path: Path) -> Path:
    """Bars of verification accuracy per target, one bar per run, fold std as error bars."""
    import numpy as np

    plt = pyplot()
    runs = list(acc)
    targets = list(next(iter(acc.values())))
    x = np.arange(len(targets))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(targets), 3.2))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        vals = [100 * acc[run][t] for t in targets]
        errs = [100 * std[run][t] for t in targets]
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=run)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, targets)
    ax.set_ylabel("verification accuracy (%)")
    lo = min(100 * v for r in acc.values() for v in r.values())
    ax.set_ylim(max(0.0, lo - 10), 100)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def _copy(src: str | os.PathLike, dst: Path) -> Path | None:
    if not Path(src).is_file():
        return None
    write_bytes_atomic(dst, Path(src).read_bytes())
    return dst


def run_report(ctx: Context, added: Sequence[str] = ()) -> ReportResult:
    """Write the report from the finished stages' results; ``added``: the recipe's own stages."""
    figs = ctx.out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    data, ver, align, gen = (ctx.result(s) for s in ("data", "verify", "align", "generate"))
    dsr = ctx.result("dataset_report")
    base, mix, sel, generator = (ctx.result(s) for s in ("baseline", "scoremix", "select", "generator"))
    g = ctx.recipe.generation

    figures = {
        "mixes": mix_grid(ctx, figs / "mixes.png"),
        "roc": _copy(ver.roc, figs / "roc.png"),
        **{f"ijb_{t.lower()}": _copy(r["roc"], figs / f"ijb_{t.lower()}_roc.png") for t, r in ver.ijb.items()},
        **({"tinyface": _copy(ver.tinyface["cmc"], figs / "tinyface_cmc.png")} if ver.tinyface else {}),
        "accuracy": accuracy_plot(ver.accuracy, ver.accuracy_std, figs / "accuracy.png"),
        "alignment": _copy(align.png, figs / "alignment.png"),
        "consistency": _copy(Path(dsr.report).parent / "consistency.png", figs / "consistency.png"),
        "dataset_scores": _copy(Path(dsr.report).parent / "scores.png", figs / "dataset_scores.png"),
    }
    samples = sorted((ctx.dir("generator") / "samples").glob("*.png"))
    if samples:
        figures["generator_samples"] = _copy(samples[-1], figs / "generator_samples.png")
    stages = {name: m["seconds"] for name, m in ctx.markers.items() if name in ctx.stages}
    report = {
        "name": ctx.recipe.name,
        "baseline": ver.accuracy["baseline"],
        "scoremix": ver.accuracy["scoremix"],
        "accuracy_std": ver.accuracy_std,
        "ijb": {t: {k: v for k, v in r.items() if k not in ("json", "markdown", "roc")} for t, r in ver.ijb.items()},
        "tinyface": {k: v for k, v in ver.tinyface.items() if k not in ("json", "markdown", "cmc")},
        # the paper's Avg-H: mean accuracy over the five high-quality .bin sets present (which: "present")
        "avg_h": {run: avg_h(ver.accuracy[run]) for run in ("baseline", "scoremix")},
        "stages": stages,
        "data": {"rec": data.rec, "num_classes": data.num_classes, "num_image": data.num_image, "toy": data.toy},
        "image_degrade": base.image_degrade,
        "generator": {
            "step": generator.step,
            "final_loss": generator.final_loss,
            "stopped_early": generator.stopped_early,
            "trained": generator.trained,
            "sigma_rel": generator.sigma_rel,
            "guide_kind": generator.guide_kind,
            "guide_step": generator.guide_step,
            "pretrained": generator.pretrained,
            "sha256": generator.sha256,
        },
        "selection": to_json(sel),
        "synthetic": {
            "identities": gen.num_synthetic_classes,
            "images": gen.num_synthetic_images,
            "sampler": {
                k: g[k] for k in ("solver", "steps", "guidance", "guidance_scale", "guidance_interval", "mix_window")
            }
            | {"network_inputs_per_image": _inputs(g, ctx.recipe.selection.k)},
        },
        "alignment": {k: v for k, v in to_json(align).items() if k not in ("json", "png")},
        "dataset_report": {
            "headline": dsr.headline,
            "gate_passed": dsr.gate_passed,
            "gate": dsr.gate,
            "report": str(Path(dsr.report).relative_to(ctx.out)),
        },
        "recognisers": {"baseline": to_json(base), "scoremix": to_json(mix)},
        "added_stages": {name: ctx.markers[name]["summary"] for name in added},
        "figures": {k: (None if v is None else str(Path(v).relative_to(ctx.out))) for k, v in figures.items()},
    }
    write_json_atomic(ctx.out / "report.json", to_json(report))
    write_text_atomic(ctx.out / "report.md", report_markdown(report))
    return ReportResult(str(ctx.out / "report.md"), str(ctx.out / "report.json"))


def report_stage(needs: Sequence[str], added: Sequence[str] = ()) -> Stage:
    """The report stage: it reads the built-in stages ``needs`` and the recipe's ``added`` stages."""
    added = tuple(added)
    return Stage(
        "report",
        lambda ctx: run_report(ctx, added),
        tuple(needs) + added,
        lambda ctx: dict(ctx.recipe.report),
        lambda ctx: [ctx.out / "report.md", ctx.out / "report.json"],
        help="report.md + figures",
        folder="",
        result=ReportResult,
    )


def guidance_sentence(sampler: dict, gen: dict) -> str:
    """Which guidance ran, and with what guide (autoguidance), in words for the report."""
    w = sampler["guidance_scale"]
    if sampler["guidance"] == "autoguidance":
        kinds = {
            "snapshot": "an early snapshot of the main run",
            "smaller": "a smaller network trained for a fraction of the main run's steps",
            "checkpoint": "a checkpoint named by the recipe",
        }
        return (
            f" Guidance: autoguidance (w={w}), the guide {kinds.get(gen.get('guide_kind'), 'unknown')} "
            f"(step {gen.get('guide_step')})."
        )
    if sampler["guidance"] == "cfg":
        return f" Guidance: classifier-free (w={w}, the null class)."
    return " Guidance: none."


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}" if pct else f"{v:.3f}"
    return str(v)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _reading(r: Mapping[str, Any]) -> str:
    """A plain reading of the numbers, so nobody takes a small demo for evidence it is not."""
    diffs = {t: r["scoremix"][t] - r["baseline"][t] for t in r["baseline"]}
    stds = {t: max(r["accuracy_std"]["baseline"][t], r["accuracy_std"]["scoremix"][t]) for t in diffs}
    within = [t for t in diffs if abs(diffs[t]) <= stds[t]]
    parts = [", ".join(f"{t} {100 * d:+.2f}" for t, d in diffs.items()) + " points with ScoreMix"]
    if within:
        parts.append(f"within one fold-std on {', '.join(within)}")
    intra = ((r.get("dataset_report") or {}).get("headline", {}).get("data") or {}).get("consistency_mean")
    text = "**Reading the numbers:** " + "; ".join(parts) + "."
    if intra is not None:
        text += (
            f" Images of one synthetic identity agree with each other at a mean cosine of "
            f"{intra:.2f} under the baseline recogniser (1 = identical)."
        )
    if not r["generator"].get("pretrained"):
        text += (
            " New identities can only help when the generator renders each mixed identity consistently; a "
            f"generator trained for {r['generator']['step']} steps on a CPU budget may render coarse traits "
            "only, so read the dataset report's quality gate before the accuracies (the paper uses an EDM2 "
            "generator at 112 px)."
        )
    text += (
        " One run on a few hundred verification pairs is one draw: the spread over seeds "
        "(docs/results.md) is what says whether a difference is real."
    )
    return text


def _inputs(g: Mapping[str, Any], ctx_k: int) -> int:
    """Network inputs per synthetic image under the recipe's sampler (generation.sampler.network_evaluations)."""
    from scoremix_plugin.generation.sampler import network_evaluations

    gi = g.get("guidance_interval")
    return network_evaluations(
        int(g.steps),
        g.solver,
        int(ctx_k),
        g.guidance,
        float(g.guidance_scale),
        g.get("mix_space", "score"),
        None if gi is None else tuple(gi),
        mix_window=None if g.get("mix_window") is None else tuple(g.mix_window),
    )


def ijb_markdown(ijb: Mapping[str, Any]) -> list[str]:
    """TAR (%) at each FAR by arcface_torch's rule, baseline and ScoreMix side by side, per IJB target and mode."""
    lines: list[str] = []
    for target, r in ijb.items():
        fars = r["far"]
        lines += [
            f"## {target}: TAR (%) at FAR",
            "",
            "| mode | run | " + " | ".join(f"{f:g}" for f in fars) + " | AUC (%) |",
            "|---|---|" + "---:|" * (len(fars) + 1),
        ]
        for mode in r["baseline"]:
            for run in ("baseline", "scoremix"):
                m = r[run][mode]
                lines.append(
                    f"| {mode} | {run} | "
                    + " | ".join(f"{100 * t:.2f}" for t in m["tar"])
                    + f" | {100 * m['auc']:.2f} |"
                )
        lines += [
            "",
            "Template protocol of arcface_torch's `eval_ijbc.py` (the TAR of the ROC point whose FAR is "
            "nearest each target; `verify/` holds the strict TAR and the ROC).",
            "",
        ]
    return lines


def tinyface_markdown(t: Mapping[str, Any]) -> list[str]:
    """TinyFace CMC (%) at each rank, baseline and ScoreMix side by side."""
    if not t:
        return []
    ranks = t["baseline"]["ranks"]
    lines = [
        "## TinyFace: closed-set identification (%)",
        "",
        "| run | " + " | ".join(f"rank-{k}" for k in ranks) + " | probes | gallery |",
        "|---|" + "---:|" * (len(ranks) + 2),
    ]
    for run in ("baseline", "scoremix"):
        r = t[run]
        lines.append(
            f"| {run} | "
            + " | ".join(f"{100 * v:.2f}" for v in r["cmc"])
            + f" | {r['num_probes']} | {r['num_gallery']} |"
        )
    return lines + [
        "",
        "AdaFace's `validation_lq` protocol (the paper's TinyFace rank-1); `verify/tinyface/` holds "
        "the open-set DIR and the CMC curve.",
        "",
    ]


def dataset_markdown(d: Mapping[str, Any] | None) -> list[str]:
    """The dataset report's headline: both sets' verification statistics, the leak counts, the gate."""
    if not d:
        return []
    h = d["headline"]
    sets = [(name, h[key]) for name, key in (("synthetic", "data"), ("real", "real")) if h.get(key)]
    keys = [k for k in sets[0][1] if k not in ("images", "identities")]
    lines = [
        "## The synthetic set beside the real one (baseline recogniser)",
        "",
        "| set | images | identities | " + " | ".join(keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for name, v in sets:
        lines.append(f"| {name} | {v['images']} | {v['identities']} | " + " | ".join(_fmt(v[k]) for k in keys) + " |")
    leaks = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in (h.get("leaks") or {}).items())
    lines += [
        "",
        f"Leaks at cosine > {_fmt(h['threshold'])} (where real impostor pairs reach FAR {h['far']:g}), "
        f"identities found: {leaks}.",
        "",
        "**Quality gate:** " + d["gate"].replace("\n", "  \n"),
        "",
        f"Full report: [{d['report']}]({d['report']}).",
        "",
    ]
    return lines


def report_markdown(r: Mapping[str, Any]) -> str:
    degrade = r["image_degrade"]
    syn, al, sel, data = r["synthetic"], r["alignment"], r["selection"], r["data"]
    lines = [
        f"# {r['name']}: ScoreMix vs the real-data baseline",
        "",
        f"Real data: {data['num_image']} images of {data['num_classes']} identities "
        f"({'the embedded toy dataset' if data['toy'] else data['rec']}). ScoreMix added {syn['identities']} "
        f"synthetic identities ({syn['images']} images), each mixed from a pair of real classes chosen "
        f"'{sel['strategy']}' in the {sel['space']} space (mean cosine distance {sel['distance_mean']:.3f}), "
        f"sampled with {syn['sampler']['solver']}-{syn['sampler']['steps']}, guidance {syn['sampler']['guidance']} "
        f"w={syn['sampler']['guidance_scale']}"
        + (
            f" for sigma in {tuple(syn['sampler']['guidance_interval'])}"
            if syn["sampler"].get("guidance_interval")
            else ""
        )
        + f", mixing window {syn['sampler']['mix_window'] or 'the whole trajectory'}"
        + (
            f"; {syn['sampler']['network_inputs_per_image']} network inputs per image."
            if syn["sampler"].get("network_inputs_per_image")
            else "."
        ),
        "",
    ]
    if degrade:
        lines += [
            f"**Same resolution for real and synthetic images:** the generator works at {degrade} px, so before "
            f"recogniser training the real images go through the same {degrade}-px down-and-up resize "
            f"(recogniser config `image_degrade = {degrade}`, in both the baseline and the ScoreMix run; the "
            f"synthetic images, already {degrade} px upsampled, pass through it too). Blur therefore does not tell "
            'synthetic from real, and the recogniser cannot use "blurry = synthetic" as a shortcut. '
            "Verification images are used as they are (the host's protocol).",
            "",
        ]
    targets = list(r["baseline"])
    gen = r["generator"]
    lines += [
        f"Generator: {gen['step']} training steps"
        + (" (stopped by its time cap)" if gen.get("stopped_early") else "")
        + (
            f", final loss {_fmt(gen.get('final_loss'))}"
            if gen.get("trained", True)
            else f" (pretrained: {gen['pretrained']}, sha256 {gen['sha256']}; shipped in the package, its "
            f"provenance in scoremix_plugin/pretrained/{gen['pretrained']}.json)"
            if gen.get("pretrained")
            else " (trained elsewhere, recipe.generator)"
        )
        + (f"; sampled with its post-hoc EMA at sigma_rel {gen['sigma_rel']}" if gen.get("sigma_rel") else "")
        + "."
        + guidance_sentence(syn["sampler"], gen),
        "",
    ]
    lines += [
        "## Verification accuracy (%)",
        "",
        "| target | baseline | ScoreMix | difference |",
        "|---|---:|---:|---:|",
    ]
    std = r["accuracy_std"]
    for t in targets:
        b, m = r["baseline"][t], r["scoremix"][t]
        lines.append(
            f"| {t} | {100 * b:.2f} +- {100 * std['baseline'][t]:.2f} | {100 * m:.2f} +- "
            f"{100 * std['scoremix'][t]:.2f} | {100 * (m - b):+.2f} |"
        )
    lines += ["", "10-fold protocol of arcface_torch (mean +- std over folds) on held-out identities.", ""]
    for run in ("baseline", "scoremix"):
        line = avg_h_line(r["baseline"] if run == "baseline" else r["scoremix"], run)
        if line:
            lines += [line, ""]
    lines += ijb_markdown(r.get("ijb") or {})
    lines += tinyface_markdown(r.get("tinyface") or {})
    lines += [_reading(r), ""]
    figs = r["figures"]
    for key, caption in (
        ("accuracy", "Accuracy"),
        ("roc", "ROC curves, baseline vs ScoreMix"),
        ("mixes", "Real class a | real class b | the synthetic identity mixed from them"),
        *((f"ijb_{t.lower()}", f"{t} ROC (log FAR), baseline vs ScoreMix") for t in r.get("ijb") or {}),
        ("tinyface", "TinyFace CMC, baseline vs ScoreMix"),
        ("generator_samples", "Generator samples (rows: classes; last row: a 2-way mix)"),
        ("alignment", "Generator conditions vs recogniser centres"),
        ("consistency", "Synthetic identities under the baseline recogniser: intra-identity cosine"),
        ("dataset_scores", "Genuine vs impostor cosine, synthetic and real sets"),
    ):
        if figs.get(key):
            lines += [f"![{caption}]({figs[key]})", "", f"*{caption}.*", ""]
    lines += [
        "## Alignment of the generator's conditions with the recogniser's class centres",
        "",
        "| metric | value | shuffled-label baseline |",
        "|---|---:|---:|",
    ]
    for m in ("linear_cka", "rbf_cka", "mutual_knn"):
        lines.append(f"| {m} | {_fmt(al.get(m))} | {_fmt(al.get(m + '_shuffled'))} |")
    lines += ["", f"{al.get('num_matched')} classes matched by label.", ""]
    lines += dataset_markdown(r.get("dataset_report"))
    for name, summary in r.get("added_stages", {}).items():
        lines += [f"## Added stage: {name}", "", "| result | value |", "|---|---|"]
        lines += [
            f"| {k} | {_fmt(v)} |"
            for k, v in _flatten(summary if isinstance(summary, Mapping) else {"value": summary}).items()
        ]
        lines.append("")
    lines += ["## Stage timings (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["stages"].items()]
    lines.append("")
    return "\n".join(lines)
