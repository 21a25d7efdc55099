"""The demo's own question with spread: does + ScoreMix beat the baseline, over seeds, paired by seed?

Each seed runs the whole demo (``scoremix_plugin/recipes/demo.py``, the shipped generator ``pretrained:toy40``)
with ``recipe.seed = s`` (selection draws, generation noise) and the recogniser's ``config.seed = 2048 + 1000 s``
(initialisation, data order; the same for its baseline and its ScoreMix run); the toy data stays the seed-0
data the generator was trained on. The quality gate reports and never stops a seed (``quality_gate = False``),
so every seed has both accuracies. Per seed: ``experiments/results/demo_seeds/seed-S.json``; then the paired
difference (ScoreMix - baseline) per benchmark, its 95 % t-interval and the sign count
(``experiments/powered.py``'s ``paired_stats``) in ``summary.md`` / ``summary.json``::

    python experiments/demo_seeds.py --seeds 0 1 2 3 4        # resumable per seed
    python experiments/demo_seeds.py --summary

``--full`` does the same with the demo's generator trained here instead (``demo_full.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "demo_seeds"
TARGETS = ("toy_lfw", "toy_cfp_fp")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"scoremix_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_seed(seed: int, work: Path, full: bool = False, only: tuple[str, ...] = ()) -> dict | None:
    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.pipeline import load_recipe, run_recipe
    from scoremix_plugin.pipeline.cli import demo_recipe

    tag = "full-" if full else ""
    dest = RESULTS / f"{tag}seed-{seed}.json"
    if dest.is_file():
        return json.loads(dest.read_text())
    out = work / f"{tag}seed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(demo_recipe(full))
    recipe.seed = int(seed)
    recipe.data.toy.seed = 0
    recipe.quality_gate = False
    recipe.recogniser = str(
        _script("ablation").seeded_recogniser_config(str(Path(recipe._path).parent / recipe.recogniser), out, seed)
    )
    if only:  # e.g. the baselines ahead of a sampler decision: they do not depend on it (stage fingerprints)
        for stage in only:
            run_recipe(recipe, out, stage=stage, progress=False)
        return None
    t0, c0 = time.perf_counter(), time.process_time()
    run_recipe(recipe, out, progress=False)
    r = json.loads((out / "report.json").read_text())
    res = {
        "seed": seed,
        "generator": r["generator"],
        "baseline": r["baseline"],
        "scoremix": r["scoremix"],
        "accuracy_std": r["accuracy_std"],
        "gate_passed": r["dataset_report"]["gate_passed"],
        "gate": r["dataset_report"]["gate"],
        "headline": r["dataset_report"]["headline"],
        "sampler": r["synthetic"]["sampler"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
        "timings": json.loads((out / "timings.json").read_text()),
    }
    write_json_atomic(dest, res)
    print(
        f"[{time.strftime('%H:%M:%S')}] seed {seed}: "
        + ", ".join(f"{t} {100 * res['baseline'][t]:.2f} -> {100 * res['scoremix'][t]:.2f}" for t in TARGETS),
        file=sys.stderr,
    )
    return res


def summarise(full: bool = False) -> dict:
    from scoremix_plugin.io_utils import write_json_atomic, write_text_atomic

    paired_stats = _script("powered").paired_stats
    tag = "full-" if full else ""
    runs = [json.loads(f.read_text()) for f in sorted(RESULTS.glob(f"{tag}seed-*.json"))]
    runs = [r for r in runs if bool(r.get("generator", {}).get("pretrained")) != full]
    runs.sort(key=lambda r: r["seed"])
    out = {"seeds": [r["seed"] for r in runs], "targets": {}}
    lines = [
        "| benchmark | seeds | baseline (mean) | + ScoreMix (mean) | difference, 95 % CI | seeds up / down |",
        "|---|---|---|---|---|---|",
    ]
    for t in TARGETS:
        base = [100 * r["baseline"][t] for r in runs]
        mix = [100 * r["scoremix"][t] for r in runs]
        st = paired_stats([m - b for m, b in zip(mix, base)])
        out["targets"][t] = {"baseline": base, "scoremix": mix, **st}
        if runs:
            ci = (
                f"{st['mean']:+.2f} [{st['lo']:+.2f}, {st['hi']:+.2f}]"
                if st["lo"] is not None
                else f"{st['mean']:+.2f}"
            )
            lines.append(
                f"| {t} | {len(runs)} | {sum(base) / len(base):.2f} | {sum(mix) / len(mix):.2f} | {ci} | "
                f"{st['up']} / {st['down']} |"
            )
    per = [
        "| seed | " + " | ".join(f"{t} base / mix" for t in TARGETS) + " | gate | wall s |",
        "|---|" + "---|" * len(TARGETS) + "---|---|",
    ]
    for r in runs:
        per.append(
            f"| {r['seed']} | "
            + " | ".join(f"{100 * r['baseline'][t]:.2f} / {100 * r['scoremix'][t]:.2f}" for t in TARGETS)
            + f" | {'PASS' if r['gate_passed'] else 'FAIL'} | {r['wall_s']:.0f} |"
        )
    text = "\n".join(
        [f"# Demo over seeds ({'generator trained here' if full else 'shipped generator'})", "", *lines, "", *per, ""]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{tag}summary.json", out)
    write_text_atomic(RESULTS / f"{tag}summary.md", text)
    print(text)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--work", default=str(HERE / "runs" / "demo_seeds"))
    p.add_argument("--full", action="store_true", help="the demo with its generator trained here")
    p.add_argument("--summary", action="store_true", help="only rebuild the summary from the committed JSONs")
    p.add_argument("--only", nargs="+", default=[], help="run only these stages (in order), e.g. data baseline")
    args = p.parse_args(argv)
    if not args.summary:
        for s in args.seeds:
            run_seed(s, Path(args.work).resolve(), args.full, tuple(args.only))
        if args.only:
            return 0
    summarise(args.full)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main())
