"""``scoremix pipeline RECIPE --out DIR [--stage NAME | --from NAME] [--force] [--list]`` and
``scoremix demo --out DIR [--full]`` (the same runner over the demo recipe shipped in the package)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scoremix_plugin.pipeline.stages import STAGE_NAMES


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="pipeline recipe file (config = edict(...)), e.g. recipes/casia_r50/pipeline.py")
    parser.add_argument("--out", required=True, help="output folder (stages write DIR/<stage>/, report DIR/report.md)")
    which = parser.add_mutually_exclusive_group()
    # No argparse choices: a recipe may add stages of its own; the runner names the stages it knows.
    names = ", ".join(STAGE_NAMES)
    which.add_argument(
        "--stage",
        metavar="NAME",
        help=f"rerun only this stage (its inputs must be complete): {names} or a stage the recipe adds",
    )
    which.add_argument("--from", dest="start", metavar="NAME", help="rerun this stage and every later one")
    parser.add_argument("--force", action="store_true", help="rerun every stage, complete or not")
    parser.add_argument("--list", action="store_true", help="list the stages and whether each is complete, then exit")


def run_pipeline(args: argparse.Namespace) -> int:
    return _run(args.recipe, args)


def demo_recipe(full: bool = False) -> Path:
    """The demo recipe inside the installed package (a pip-installed user has no clone)."""
    return Path(__file__).resolve().parents[1] / "recipes" / ("demo_full.py" if full else "demo.py")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (report: DIR/report.md)")
    parser.add_argument(
        "--full",
        action="store_true",
        help="train the generator here from scratch (a CPU budget: "
        "320 s) instead of sampling the shipped one (pretrained:toy40)",
    )
    parser.add_argument("--force", action="store_true", help="rerun every stage, complete or not")
    parser.add_argument("--list", action="store_true", help="list the stages and whether each is complete, then exit")


def run_demo(args: argparse.Namespace) -> int:
    args.stage = args.start = None
    recipe = demo_recipe(args.full)
    print(f"demo recipe: {recipe}", file=sys.stderr)
    return _run(recipe, args)


def _run(recipe, args: argparse.Namespace) -> int:
    from scoremix_plugin.pipeline import run_recipe, stage_states

    args.recipe = recipe
    # A wrong recipe key or stage name raises PipelineError: the CLI's boundary prints it (exit 2).
    if args.list:
        for name, state in stage_states(args.recipe, args.out).items():
            print(f"{name:10s} {state}")
        return 0
    t0 = time.perf_counter()
    run_recipe(args.recipe, args.out, stage=args.stage, start=args.start, force=args.force)
    report = Path(args.out).resolve() / "report.md"
    print(f"pipeline finished in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if report.is_file():
        print(report)  # the last line: where to look
    return 0
