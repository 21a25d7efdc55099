"""The pre-registered, powered pair-selection experiment (docs/results.md, "Pre-registered design").

Builds on ``experiments/ablation.py`` (same shared stages, same per-(arm, seed) run) and adds:

=============== ==================================================================================
auggen-far      the far (embedding) pairs, mixed in the generator's CONDITION space (AugGen) instead
                of mixing denoiser outputs; needs the sampler's ``mix_space="condition"``
=============== ==================================================================================

plus, per (arm, seed), the pipeline's dataset_report stage on the synthetic set (EER / FDR / d', leak counts;
quality gate off) and,
shared, the alignment (linear CKA, mutual kNN) of condition vs embedding space (the ``align`` stage).

Designs (``--design``): ``earlier`` is the first ablation's sizes (5 arms x 3 seeds, 40 identities);
``powered`` is the pre-registered one (6 arms x 5 seeds, 200 training identities, 3,000-pair
benchmarks of 100 held-out identities). A budget estimate is printed before anything runs.

Resumable per (arm, seed): a finished one has ``experiments/results/<design>/<arm>-s<seed>.json``
(tracked in git, small) and is never redone; heavy outputs go to ``--out`` (git-ignored)::

    python experiments/powered.py --design powered                 # budget, then run what is missing
    python experiments/powered.py --design powered --budget-only   # the estimate only
    python experiments/powered.py --design powered --summary       # tables + figure from the JSONs

The statistic is fixed in advance (:func:`paired_stats`): per target, the paired difference of an arm
to another arm of the SAME seed, its mean, 95 % t-interval over seeds and sign count.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

DESIGNS = {
    "earlier": {
        "identities": 40,
        "images": 16,
        "test_identities": 40,
        "pairs": 1000,
        "seeds": [0, 1, 2],
        "arms": ["baseline", "random", "near", "far", "far-condition"],
        "generator": "ablation/generator.py",
        "generator_steps": 2200,
    },
    "powered": {
        "identities": 200,
        "images": 16,
        "test_identities": 100,
        "pairs": 3000,
        "seeds": [0, 1, 2, 3, 4],
        "arms": ["baseline", "random", "near", "far", "far-condition", "auggen-far"],
        # Amended 2026-12-03, before any unit ran: the shipped 200-identity generator (issue 23), sampled,
        # not trained here (docs/results.md, "Pre-registered design": its sha256 and quality).
        "generator": "pretrained:toy200",
        # Amended again 2026-12-03, before any unit ran: pinned to the weights re-shipped at 9,000 steps. Every
        # unit must sample these; a re-shipped toy200 stops the run (check_generator) instead of mixing two.
        "generator_sha256": "323e2c124bd9853c79b5b482807791d9e0dd7760b0785c61618bdaae69e10cc1",
        "generator_steps": 0,
    },
}
# The comparisons fixed in advance: (arm, reference arm), each a paired difference over seeds.
COMPARISONS = [
    ("random", "baseline"),
    ("near", "baseline"),
    ("far", "baseline"),
    ("far-condition", "baseline"),
    ("auggen-far", "baseline"),
    ("far", "random"),
    ("far", "near"),
    ("far", "far-condition"),
    ("far", "auggen-far"),
]
# Seconds per unit at 40 identities x 16 images on the 2-core build machine, from the earlier design's
# runs (docs/results.md, "Cost"): used when no result JSON with timings exists yet.
# The generator step: 1.82 CPU s (edm2-cpu, float32, one thread: 2,182 s for 1,200 steps in the generator arms,
# docs/results.md, issue 13).
# The shared stages committed beside the results (results/<design>/shared/), so that they are never redone:
# the seed-0 baseline recogniser (model.pt), its ONNX export and the class centres, the alignment.
SAVED_STAGES = ("baseline", "centres", "align")
EARLIER_SECONDS = {"generator_step": 1.82, "baseline": 150.0, "scoremix": 240.0, "report": 120.0}
# Synthetic images per CPU second with the pipeline's default sampler (DPM-Solver++(2M)-32 + CFG, 96 network
# inputs per 2-way image) on the shipped toy200, one core, batch 16: experiments/results/sampler_quality/
# toy200.json (mix_images_per_s_per_core, measured with another job on the machine). The earlier design's
# "scoremix" seconds held Heun-8 (45 inputs) at 640 images, so they cannot be scaled to 3,200 images of this.
MIXED_IMAGES_PER_S = 0.97
SHARD_IDENTITIES = 20


def ablation():
    """experiments/ablation.py as a module (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location("scoremix_ablation", HERE / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def arms_table() -> dict:
    """Every arm: the ablation's, plus AugGen's condition mixing of the far (embedding) pairs."""
    return {
        **ablation().ARMS,
        "auggen-far": {"strategy": "far", "space": "embedding", "generation": {"mix_space": "condition"}},
    }


def auggen_available() -> bool:
    """Whether the sampler on this checkout can mix in condition space (AugGen)."""
    from dataclasses import fields

    from scoremix_plugin.synthesis.generate import GenerateSettings

    return "mix_space" in {f.name for f in fields(GenerateSettings)}


# Statistics (fixed before any run).


def t_quantile(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def paired_stats(diffs: list[float], level: float = 0.95) -> dict:
    """Mean paired difference, its t-interval over seeds, sample sd, and the sign count."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    out = {
        "n": n,
        "mean": float(d.mean()) if n else None,
        "sd": None,
        "lo": None,
        "hi": None,
        "up": int((d > 0).sum()),
        "down": int((d < 0).sum()),
    }
    if n > 1:
        sd = float(d.std(ddof=1))
        half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
        out.update(sd=sd, lo=out["mean"] - half, hi=out["mean"] + half)
    return out


def detectable(sd: float, n: int, alpha: float = 0.05, power: float | None = None) -> float:
    """Smallest paired difference this design detects, from the seed-to-seed sd of paired differences.

    ``power`` None: the half-width of the (1 - alpha) interval, t_{1-alpha/2, n-1} * sd / sqrt(n) (a true
    difference this large is "significant" half the time). With ``power``: (t_{1-alpha/2} + t_{power}) * sd /
    sqrt(n), the difference found significant with that probability (the usual normal-shift approximation).
    """
    if n < 2:
        raise ValueError(f"detectable: needs n >= 2 seeds, got {n}")
    k = t_quantile(1 - alpha / 2, n - 1) + (0.0 if power is None else t_quantile(power, n - 1))
    return k * sd / math.sqrt(n)


def load_results(results_dir: Path) -> dict[str, dict[int, dict]]:
    """{arm: {seed: result}} from ``<arm>-s<seed>.json`` files."""
    by_arm: dict[str, dict[int, dict]] = {}
    for p in sorted(Path(results_dir).glob("*-s*.json")):
        try:
            r = json.loads(p.read_text())
            by_arm.setdefault(str(r["arm"]), {})[int(r["seed"])] = r
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: not an experiment result ({e})") from e
    return by_arm


def summarise(results_dir: Path, figure: Path | None = None) -> dict:
    """Tables (markdown) and the paired-difference figure from the result JSONs; also written beside them."""
    import numpy as np

    from scoremix_plugin.io_utils import write_json_atomic, write_text_atomic

    by_arm = load_results(results_dir)
    order = [a for a in arms_table() if a in by_arm] + sorted(a for a in by_arm if a not in arms_table())
    targets = sorted({t for runs in by_arm.values() for r in runs.values() for t in r["accuracy"]})
    s: dict = {"targets": targets, "arms": {}, "comparisons": []}
    for arm in order:
        runs = by_arm[arm]
        acc = {t: [runs[k]["accuracy"][t] for k in sorted(runs)] for t in targets}
        s["arms"][arm] = {
            "seeds": sorted(runs),
            "accuracy": {
                t: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}
                for t, v in acc.items()
            },
        }
        rep = [runs[k].get("datareport") for k in sorted(runs) if runs[k].get("datareport")]
        if rep:
            keys = ("eer", "fdr", "d_prime") + tuple(f"leaks_{k}" for k in rep[0].get("leak_counts", {}))
            flat = [
                {
                    **{k: r.get(k) for k in ("eer", "fdr", "d_prime")},
                    **{f"leaks_{k}": v for k, v in r.get("leak_counts", {}).items()},
                }
                for r in rep
            ]
            s["arms"][arm]["datareport"] = {
                k: float(np.mean([f[k] for f in flat if f.get(k) is not None]))
                for k in keys
                if any(f.get(k) is not None for f in flat)
            }
    for arm, ref in COMPARISONS:
        if arm not in by_arm or ref not in by_arm:
            continue
        seeds = sorted(set(by_arm[arm]) & set(by_arm[ref]))
        for t in targets:
            d = [by_arm[arm][k]["accuracy"][t] - by_arm[ref][k]["accuracy"][t] for k in seeds]
            st = paired_stats(d)
            if st["sd"] is not None and st["sd"] > 0:
                st["detectable"] = detectable(st["sd"], st["n"])
                st["detectable_80"] = detectable(st["sd"], st["n"], power=0.8)
            s["comparisons"].append({"arm": arm, "ref": ref, "target": t, "seeds": seeds, **st})

    def pct(v, sign=False):
        return "-" if v is None else (f"{100 * v:+.2f}" if sign else f"{100 * v:.2f}")

    acc_lines = ["| arm | seeds | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for arm, e in s["arms"].items():
        cells = [
            pct(e["accuracy"][t]["mean"])
            + ("" if e["accuracy"][t]["sd"] is None else f" ± {pct(e['accuracy'][t]['sd'])}")
            for t in targets
        ]
        acc_lines.append(f"| {arm} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    cmp_lines = [
        "| comparison | target | seeds | mean Δ | 95 % CI | up / down | detectable (CI half-width) "
        "| detectable at 80 % power |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in s["comparisons"]:
        ci = "-" if c["lo"] is None else f"[{pct(c['lo'], True)}, {pct(c['hi'], True)}]"
        cmp_lines.append(
            f"| {c['arm']} − {c['ref']} | {c['target']} | {c['n']} | {pct(c['mean'], True)} | {ci} "
            f"| {c['up']} / {c['down']} | {pct(c.get('detectable'))} | {pct(c.get('detectable_80'))} |"
        )
    rep_arms = [(a, e["datareport"]) for a, e in s["arms"].items() if "datareport" in e]
    rep_lines = []
    if rep_arms:
        keys = sorted({k for _, r in rep_arms for k in r})
        rep_lines = ["| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        rep_lines += [
            f"| {a} | " + " | ".join("-" if k not in r else f"{r[k]:.3f}" for k in keys) + " |" for a, r in rep_arms
        ]
    # Condition vs embedding space: shared by every arm and seed (one generator, one baseline).
    al = next((r["alignment"] for runs in by_arm.values() for r in runs.values() if r.get("alignment")), None)
    s["alignment"] = al
    al_lines = (
        []
        if not al
        else [
            "| linear CKA | shuffled | mutual kNN | shuffled | classes |",
            "|---|---|---|---|---|",
            "| "
            + " | ".join(
                "-" if al.get(k) is None else f"{al[k]:.3f}"
                for k in ("linear_cka", "linear_cka_shuffled", "mutual_knn", "mutual_knn_shuffled")
            )
            + f" | {al.get('num_matched')} |",
        ]
    )
    s["tables"] = {
        "accuracy": "\n".join(acc_lines),
        "comparisons": "\n".join(cmp_lines),
        "datareport": "\n".join(rep_lines),
        "alignment": "\n".join(al_lines),
    }
    md = (
        "# Pair-selection experiment: summary\n\nVerification accuracy (%), mean ± sd (ddof 1) over seeds.\n\n"
        + s["tables"]["accuracy"]
        + "\n\nPaired differences (points; same seed), mean, 95 % t-interval over "
        "seeds, sign count, smallest detectable difference.\n\n" + s["tables"]["comparisons"] + "\n"
    )
    if rep_lines:
        md += "\nDataset report of the synthetic set (mean over seeds).\n\n" + s["tables"]["datareport"] + "\n"
    if al_lines:
        md += (
            "\nGenerator condition space vs recogniser embedding space (shared).\n\n" + s["tables"]["alignment"] + "\n"
        )
    results_dir = Path(results_dir)
    write_json_atomic(results_dir / "summary.json", s)
    write_text_atomic(results_dir / "summary.md", md)
    if figure is not None and s["comparisons"]:
        plot_comparisons(s["comparisons"], figure)
        s["figure"] = str(figure)
    return s


def plot_comparisons(comparisons: list[dict], path: Path) -> None:
    """One PNG: each comparison's mean paired difference with its 95 % CI, one row per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scoremix_plugin.io_utils import atomic_path

    targets = sorted({c["target"] for c in comparisons})
    fig, axes = plt.subplots(
        1, len(targets), figsize=(5 * len(targets), 0.45 * len(comparisons) + 1.5), squeeze=False, sharey=True
    )
    for ax, t in zip(axes[0], targets):
        rows = [c for c in comparisons if c["target"] == t]
        for i, c in enumerate(rows):
            lo, hi = (c["lo"], c["hi"]) if c["lo"] is not None else (c["mean"], c["mean"])
            ax.plot([100 * lo, 100 * hi], [i, i], color="tab:blue")
            ax.plot([100 * c["mean"]], [i], "o", color="tab:blue")
        ax.axvline(0, color="grey", lw=0.8)
        ax.invert_yaxis()  # the comparisons top-down in the table's order
        ax.set_yticks(range(len(rows)), [f"{c['arm']} − {c['ref']} (n={c['n']})" for c in rows])
        ax.set_title(t)
        ax.set_xlabel("paired difference (points), 95 % CI")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# Budget.


def budget(design: dict, arms: list[str], seeds: list[int], results_dir: Path) -> dict:
    """CPU-hour estimate: per unit from finished result JSONs of this design if any, else the earlier
    design's timings scaled linearly with the training identities (steps and generated images both scale)."""
    done = load_results(results_dir) if Path(results_dir).is_dir() else {}
    scale = design["identities"] / DESIGNS["earlier"]["identities"]
    per_unit, source = {}, {}

    def measured(arm: str) -> list[float]:
        return [r["seconds"] for r in done.get(arm, {}).values() if r.get("seconds")]  # report included

    for arm in arms:
        kind = "baseline" if arm == "baseline" else "scoremix"
        own = measured(arm)
        if own:
            per_unit[arm], source[arm] = sum(own) / len(own), f"measured ({len(own)} runs)"
        else:
            # A ScoreMix arm: the baseline's training (same optimiser steps; measured once a baseline unit ran),
            # its synthetic images at the measured rate, + the dataset report and 3,000-pair benchmarks (a guess).
            base = measured("baseline")
            if base:
                per_unit[arm], source[arm] = sum(base) / len(base), "baseline units' training"
            else:
                per_unit[arm], source[arm] = EARLIER_SECONDS["baseline"] * scale, f"earlier design x {scale:g}"
            if kind == "scoremix":
                gen = design["identities"] * design["images"] / MIXED_IMAGES_PER_S
                per_unit[arm] += gen + EARLIER_SECONDS["report"]
                source[arm] += f" + {gen / 60:.0f} min generation + {EARLIER_SECONDS['report'] / 60:.0f} min report"
    todo = [(a, s) for s in seeds for a in arms if s not in done.get(a, {})]
    # generator, the shared baseline, centres + alignment (about a baseline's embedding time)
    shared = EARLIER_SECONDS["generator_step"] * design["generator_steps"] + 2 * EARLIER_SECONDS["baseline"] * scale
    total = sum(per_unit[a] for a, _ in todo) + shared
    return {
        "per_unit_s": per_unit,
        "source": source,
        "units_total": len(arms) * len(seeds),
        "units_todo": len(todo),
        "shared_s": shared,
        "total_cpu_h": total / 3600,
    }


def format_budget(b: dict) -> str:
    lines = [
        f"budget (one thread per unit; measured units as they ran, often beside another job): {b['units_todo']} "
        f"of {b['units_total']} (arm, seed) units to run, ~{b['total_cpu_h']:.1f} CPU h in all "
        f"(shared stages, if not yet done, ~{b['shared_s'] / 60:.0f} min)"
    ]
    lines += [f"  {a}: ~{s / 60:.0f} min per seed ({b['source'][a]})" for a, s in b["per_unit_s"].items()]
    return "\n".join(lines)


def machine(ctx) -> dict:
    """Where the unit ran (a GPU unit and a CPU unit of one (arm, seed) are compared by it): the device, and the
    dtype generation actually sampled in (bf16 autocast falls back to float32 on a CPU without AVX-512)."""
    import warnings

    import torch

    from scoremix_plugin.distributed import describe_device
    from scoremix_plugin.generation.edm import autocast_dtype

    m = describe_device(ctx.recipe.device or None)
    if "generate" not in ctx.markers:  # the baseline arm samples nothing
        return m
    with warnings.catch_warnings():  # the fallback's warning is for samplers; here it is only recorded
        warnings.simplefilter("ignore")
        dtype = autocast_dtype(torch.bfloat16 if ctx.recipe.generation.bf16 else None, m["device"])
    return {**m, "generation_dtype": str(dtype or torch.float32).removeprefix("torch.")}


def dataset_report(ctx, run_dir: Path) -> dict:
    """The pipeline's dataset_report stage's numbers (EER / FDR / d', leak counts) of a ScoreMix arm's set."""
    if "dataset_report" not in ctx.markers:
        return {}
    js = json.loads(Path(ctx.result("dataset_report").json).read_text())
    st = js["data"]["stats"]
    return {
        "datareport": {
            "eer": st.get("eer"),
            "fdr": st.get("fdr"),
            "d_prime": st.get("d_prime"),
            "leak_counts": js.get("leak_counts", {}),
            "path": ctx.result("dataset_report").report,
            "seconds": ctx.markers["dataset_report"].get("seconds"),
        }
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--design", choices=list(DESIGNS), default="powered")
    p.add_argument("--out", default=None, help="heavy outputs (default experiments/runs/<design>, git-ignored)")
    p.add_argument("--results", default=None, help="result JSONs (default experiments/results/<design>, tracked)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the design's")
    p.add_argument("--arms", nargs="+", default=None, help="default: the design's")
    p.add_argument("--device", default=None)
    p.add_argument("--summary", action="store_true", help="only rebuild the tables and the figure")
    p.add_argument("--budget-only", action="store_true", help="only print the budget estimate")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    design = DESIGNS[args.design]
    results = Path(args.results or HERE / "results" / args.design).resolve()
    figure = results / "paired_differences.png"
    arms, seeds = args.arms or design["arms"], args.seeds if args.seeds is not None else design["seeds"]
    table = arms_table()
    bad = [a for a in arms if a not in table]
    if bad:
        p.error(f"--arms: unknown {bad}; choose from {list(table)}")
    if not args.summary:
        print(format_budget(budget(design, arms, seeds, results)), file=sys.stderr)
        if args.budget_only:
            return 0
        if "auggen-far" in arms and not auggen_available():
            p.error(
                "arm auggen-far needs the sampler's condition mixing (GenerateSettings.mix_space, "
                "AugGen) which this checkout lacks: merge the generator work (branch edm2-measure) "
                "or leave the arm out with --arms"
            )
        run(args, design, arms, seeds, results)
    s = summarise(results, figure)
    print(s["tables"]["accuracy"] + "\n\n" + s["tables"]["comparisons"])
    return 0


def check_generator(design: dict, results: Path, sha256: str | None) -> None:
    """All units of a design sample ONE generator: the pinned sha256 (when the design pins one), and the one
    every unit already written names. ``sha256``: the generator about to be sampled."""
    pinned = design.get("generator_sha256")
    if pinned and sha256 != pinned:
        raise SystemExit(
            f"{design['generator']}: sha256 {str(sha256)[:12]}... is not the {pinned[:12]}... the design pins "
            "(experiments/powered.py DESIGNS, docs/results.md amendment): restore the pinned weights "
            "(git checkout the shipped file) or amend the design before any unit runs"
        )
    for p in sorted(results.glob("*-s*.json")):
        got = (json.loads(p.read_text()).get("generator") or {}).get("sha256")
        if got and got != sha256:
            raise SystemExit(f"{p}: sampled generator sha256 {got[:12]}..., not {str(sha256)[:12]}...: units mix two")


def run(args, design: dict, arms: list[str], seeds: list[int], results: Path) -> None:
    """Shared stages once, then every missing (arm, seed), seed-major."""
    from easydict import EasyDict as edict

    from scoremix_plugin.pipeline import STAGES, Context, log, restore_stages, run_stages, save_stages

    if design["generator"].startswith("pretrained:"):
        from scoremix_plugin.generation.pretrained import resolve

        # before any stage: the centres' alignment and every unit depend on the generator
        check_generator(design, results, resolve(design["generator"])[1]["weights"]["sha256"])
    ab = ablation()
    out = Path(args.out or HERE / "runs" / args.design).resolve()
    ns = argparse.Namespace(
        device=args.device,
        identities=design["identities"],
        images=design["images"],
        test_identities=design["test_identities"],
        pairs=design["pairs"],
        max_uses=3,
        recogniser=str(HERE / design.get("recogniser", "ablation/recogniser.py")),
        generator=design["generator"]
        if design["generator"].startswith("pretrained:")
        else str(HERE / design["generator"]),
    )
    recipe = edict(ab.build_recipe(ns))
    # A ScoreMix unit generates for about an hour on one core, and a session's end may cut it: generation resumes
    # per finished shard, so shards of 20 identities (320 images) lose minutes, not the hour. Images are seeded
    # per image, so the shard size changes no image.
    recipe.generation.shard_size = SHARD_IDENTITIES
    shared = Context(recipe=recipe, out=out / "shared", progress=not args.no_progress)
    shared.out.mkdir(parents=True, exist_ok=True)
    stages = [s for s in STAGES if s.name in ("data", "baseline", "generator", "centres", "align")]
    say = lambda m: log(f"[shared] {m}")  # noqa: E731
    saved = results / "shared"
    if (saved / "stages.json").is_file():
        # The committed baseline recogniser and centres: the data and the (shipped) generator stages are cheap
        # and run here; what needs them is installed from the copies, never trained again.
        run_stages([s for s in stages if s.name in ("data", "generator")], shared, log=say)
        restore_stages(stages, shared, saved, log=say)
    run_stages(stages, shared, log=say)
    if not (saved / "stages.json").is_file():
        save_stages(shared, SAVED_STAGES, saved)
    align = shared.result("align")
    alignment = {
        k: getattr(align, k)
        for k in ("linear_cka", "linear_cka_shuffled", "mutual_knn", "mutual_knn_shuffled", "num_matched")
    }
    gen = shared.result("generator")
    check_generator(design, results, gen.sha256)
    generator = {"ref": design["generator"], "pretrained": gen.pretrained, "sha256": gen.sha256, "step": gen.step}
    table = arms_table()
    for seed in seeds:
        for arm in arms:
            if (results / f"{arm}-s{seed}.json").is_file():
                print(f"[{arm} seed {seed}] complete, skipped", file=sys.stderr)
                continue
            r = ab.run_arm(
                arm,
                seed,
                shared,
                out,
                progress=not args.no_progress,
                arms=table,
                results_dir=results,
                dataset_report=True,
                extra=lambda ctx, d: {
                    "design": args.design,
                    "alignment": alignment,
                    "generator": generator,
                    "machine": machine(ctx),
                    **dataset_report(ctx, d),
                },
            )
            print(
                f"[{arm} seed {seed}] "
                + ", ".join(f"{t} {100 * a:.2f}" for t, a in r["accuracy"].items())
                + f" ({r['seconds']:.0f} s)",
                file=sys.stderr,
            )


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main())
