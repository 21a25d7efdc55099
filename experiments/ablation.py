"""The paper's pair-selection ablation at toy scale: which pairs of identities make useful new ones?

Arms (each trains the same recogniser for the same number of optimiser steps; only the data differ):

=============== ==================================================================================
baseline        real data only
random          + ScoreMix identities from uniformly random pairs of classes
near            + pairs NEAR in the baseline recogniser's embedding space
far             + pairs FAR in the recogniser's embedding space (the paper's recommendation)
far-condition   + pairs far in the generator's condition space (its learnt class embeddings)
=============== ==================================================================================

Shared by every arm and seed (trained once): the toy data, the baseline recogniser that
defines the embedding space (seed 0), the generator, and the centres files. Per (arm, seed):
selection (seeded), generation (seeded noise), a recogniser (seeded init and data order)
and verification on every toy target.

The recogniser and generator configs are copies of the demo's (the generator trained longer) kept
in ``experiments/ablation/``: the stage fingerprints hash config files, so a later change to the
demo's budget does not invalidate the ablation's finished runs.

Resumable: shared stages and each (arm, seed) keep the pipeline's stage markers, and a finished
(arm, seed) writes ``OUT/results/<arm>-s<seed>.json`` atomically; a rerun skips what is complete,
so the script can be stopped and restarted at any time (e.g. across sessions)::

    python experiments/ablation.py --out experiments/runs/ablation            # everything
    python experiments/ablation.py --out experiments/runs/ablation --summary  # table of what is done

``OUT/summary.md`` / ``summary.json``: mean and std over seeds of each arm's accuracy per target,
and the difference to the baseline arm seed by seed (paired: same seed, same initialisation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ARMS = {
    "baseline": None,
    "random": {"strategy": "random", "space": "embedding"},
    "near": {"strategy": "near", "space": "embedding"},
    "far": {"strategy": "far", "space": "embedding"},
    "far-condition": {"strategy": "far", "space": "condition"},
}


def build_recipe(args: argparse.Namespace) -> dict:
    """The shared recipe: the pipeline's defaults (the demo's sampler among them), with a longer-trained
    generator, larger test sets and no gate (an experiment measures, it does not gate)."""
    from scoremix_plugin.pipeline.recipe import recipe_from

    recipe = recipe_from(
        {
            "name": "ScoreMix ablation (toy scale)",
            "device": args.device,
            "data": {
                "toy": {
                    "identities": args.identities,
                    "images_per_identity": args.images,
                    "test_identities": args.test_identities,
                    "pairs": args.pairs,
                }
            },
            "recogniser": str(Path(args.recogniser).resolve()),
            # a generator config or checkpoint, or "pretrained:NAME" (shipped in the package) as it is
            "generator": args.generator
            if args.generator.startswith("pretrained:")
            else str(Path(args.generator).resolve()),
            "selection": {"num_identities": args.identities, "max_uses": args.max_uses},
            "generation": {"images_per_identity": args.images},
            "quality_gate": False,
        },
        HERE / "ablation.py",
    )
    return dict(recipe)


def seeded_recogniser_config(src: str, run_dir: Path, seed: int) -> Path:
    """The shared recogniser config with ``config.seed`` set for this seed (init, data order, augmentation)."""
    from scoremix_plugin.config import read_config_file, write_config_file

    cfg = read_config_file(src)
    cfg["seed"] = 2048 + 1000 * int(seed)
    return write_config_file(run_dir / "recogniser.py", cfg, f"experiments/ablation.py: recogniser, seed {seed}")


def run_arm(
    arm: str,
    seed: int,
    shared,
    out: Path,
    progress: bool,
    *,
    arms: dict | None = None,
    results_dir: Path | None = None,
    extra=None,
    dataset_report: bool = False,
) -> dict:
    """One (arm, seed): select -> generate -> train -> verify; returns and writes its result.

    ``arms``: {arm: None (real only) | selection overrides, optionally with a "generation" dict of
    generation overrides}; default :data:`ARMS`. ``results_dir``: where ``<arm>-s<seed>.json`` goes
    (default ``OUT/results``). ``extra(ctx, run_dir) -> dict``: more measurements merged into the result.
    ``dataset_report``: also run the pipeline's dataset_report stage on the synthetic set (never gating).
    """
    from easydict import EasyDict as edict

    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.pipeline import STAGES, Context, log, run_stages, verify_recogniser

    run_dir = out / "runs" / f"{arm}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = edict(json.loads(json.dumps(shared.recipe)))
    recipe.seed = int(seed)
    recipe.recogniser = str(seeded_recogniser_config(shared.recipe.recogniser, run_dir, seed))
    stages = {s.name: s for s in STAGES}
    if arm == "baseline":
        wanted, train_stage = ["baseline"], "baseline"
    else:
        spec = dict((arms or ARMS)[arm])
        recipe.generation.update(spec.pop("generation", {}))
        recipe.selection.update(spec)
        wanted, train_stage = (
            ["select", "generate"] + (["dataset_report"] if dataset_report else []) + ["scoremix"],
            "scoremix",
        )
    ctx = Context(recipe=recipe, out=run_dir, progress=progress)
    # The shared stages' results are this run's inputs: its stages fingerprint their run ids.
    ctx.adopt(shared, ("data", "generator", "centres") + (("baseline",) if arm != "baseline" else ()))
    t0 = time.perf_counter()
    status = run_stages([stages[n] for n in wanted], ctx, log=lambda m: log(f"[{arm} seed {seed}] {m}"))
    s = ctx.result(train_stage)
    res = verify_recogniser(ctx, s)
    result = {
        "arm": arm,
        "seed": int(seed),
        "accuracy": {t: float(r.accuracy_mean) for t, r in res.items()},
        "accuracy_std_folds": {t: float(r.accuracy_std) for t, r in res.items()},
        "model": s.model,
        "num_image": s.num_image,
        "num_classes": s.num_classes,
        "num_epoch": s.num_epoch,
        "global_step": s.global_step,
        "stage_seconds": {k: v["seconds"] for k, v in status.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if arm != "baseline":
        sel = ctx.result("select")
        result["selection"] = {
            k: getattr(sel, k) for k in ("strategy", "space", "distance_mean", "distance_min", "distance_max")
        }
        if dataset_report:  # the synthetic set's quality: the dataset report's headline
            result["quality"] = ctx.result("dataset_report").headline
        result["grid"] = str(run_dir / "generate")
        result["manifest"] = ctx.result("generate").manifest
    if extra is not None:
        result.update(extra(ctx, run_dir))
    write_json_atomic((results_dir or out / "results") / f"{arm}-s{seed}.json", result)
    return result


def summarise(out: Path) -> dict:
    """Mean / std over seeds per arm and target, and paired differences to the baseline arm."""
    import numpy as np

    from scoremix_plugin.io_utils import write_json_atomic, write_text_atomic

    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    by_arm: dict[str, dict[int, dict]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    targets = sorted({t for r in results for t in r["accuracy"]})
    summary: dict = {"targets": targets, "arms": {}}
    base = by_arm.get("baseline", {})
    for arm in [a for a in ARMS if a in by_arm]:
        runs = by_arm[arm]
        entry = {"seeds": sorted(runs), "accuracy": {}, "delta_vs_baseline": {}}
        for t in targets:
            acc = np.array([runs[s]["accuracy"][t] for s in sorted(runs)])
            entry["accuracy"][t] = {"mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else None}
            paired = [s for s in sorted(runs) if s in base]
            if arm != "baseline" and paired:
                d = np.array([runs[s]["accuracy"][t] - base[s]["accuracy"][t] for s in paired])
                entry["delta_vs_baseline"][t] = {
                    "mean": float(d.mean()),
                    "std": float(d.std(ddof=1)) if len(d) > 1 else None,
                    "seeds": paired,
                    "wins": int((d > 0).sum()),
                }
        if arm != "baseline":
            entry["selection_distance_mean"] = float(
                np.mean([runs[s]["selection"]["distance_mean"] for s in sorted(runs)])
            )
        summary["arms"][arm] = entry

    def pm(v: dict | None) -> str:
        if not v:
            return "-"
        std = "" if v["std"] is None else f" ± {100 * v['std']:.2f}"
        return f"{100 * v['mean']:.2f}{std}"

    lines = [
        "| arm | seeds | " + " | ".join(targets) + " | " + " | ".join(f"Δ {t}" for t in targets) + " |",
        "|---|---|" + "---|" * (2 * len(targets)),
    ]
    for arm, e in summary["arms"].items():
        deltas = []
        for t in targets:
            d = e["delta_vs_baseline"].get(t)
            deltas.append(
                "-"
                if d is None
                else f"{100 * d['mean']:+.2f}"
                + ("" if d["std"] is None else f" ± {100 * d['std']:.2f}")
                + f" ({d['wins']}/{len(d['seeds'])} up)"
            )
        lines.append(
            f"| {arm} | {len(e['seeds'])} | "
            + " | ".join(pm(e["accuracy"][t]) for t in targets)
            + " | "
            + " | ".join(deltas)
            + " |"
        )
    table = "\n".join(lines)
    summary["table_markdown"] = table
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(
        out / "summary.md",
        "# ScoreMix ablation (toy scale)\n\nVerification accuracy (%), mean ± std over seeds; "
        "Δ: paired difference to the baseline arm of the same seed.\n\n" + table + "\n",
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(HERE / "runs" / "ablation"), help="output folder (resumable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--identities", type=int, default=40, help="real training identities (toy data)")
    p.add_argument("--images", type=int, default=16, help="images per real and per synthetic identity")
    p.add_argument(
        "--max-uses",
        type=int,
        default=3,
        help="pairs per real class at most (one synthetic identity per real one on average; 3, not "
        "2, leaves the greedy near/far walks room to finish)",
    )
    p.add_argument("--test-identities", type=int, default=40, help="held-out identities of the .bin sets")
    p.add_argument("--pairs", type=int, default=1000, help="pairs per .bin set (10 folds)")
    p.add_argument("--recogniser", default=str(HERE / "ablation" / "recogniser.py"), help="recogniser config")
    p.add_argument("--generator", default=str(HERE / "ablation" / "generator.py"), help="generator config")
    p.add_argument("--device", default=None)
    p.add_argument("--summary", action="store_true", help="only summarise the finished runs")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if not args.summary:
        from easydict import EasyDict as edict

        from scoremix_plugin.pipeline import STAGES, Context, log, run_stages

        shared = Context(recipe=edict(build_recipe(args)), out=out / "shared", progress=not args.no_progress)
        shared.out.mkdir(parents=True, exist_ok=True)
        run_stages(
            [s for s in STAGES if s.name in ("data", "baseline", "generator", "centres")],
            shared,
            log=lambda m: log(f"[shared] {m}"),
        )
        # Seed-major order: a partial run already has every arm for its first seeds.
        for seed in args.seeds:
            for arm in args.arms:
                done = out / "results" / f"{arm}-s{seed}.json"
                if done.is_file():
                    print(f"[{arm} seed {seed}] complete, skipped", file=sys.stderr)
                    continue
                r = run_arm(arm, seed, shared, out, progress=not args.no_progress)
                print(
                    f"[{arm} seed {seed}] "
                    + ", ".join(f"{t} {100 * a:.2f}" for t, a in r["accuracy"].items())
                    + f" ({r['seconds']:.0f} s)",
                    file=sys.stderr,
                )
                summarise(out)
    s = summarise(out)
    print(s["table_markdown"])
    print(out / "summary.md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main())
