"""The ScoreMix pipeline end to end, driven by one recipe file (the demo is ``scoremix_plugin/recipes/demo.py``).

``scoremix pipeline RECIPE --out DIR [--stage NAME | --from NAME] [--force] [--list]``

- ``runner.py``: Stage, Context, fingerprints, markers, skip-when-complete (knows no ScoreMix);
- ``stages.py``: the stages (data -> baseline, generator -> centres -> select -> generate ->
  dataset_report (the quality gate) -> merge, scoremix -> verify (.bin sets, IJB-B/C), align), each a few
  lines over the library, returning a typed result
  (``results.py``);
- ``report.py``: the last stage, ``DIR/report.md`` + ``report.json`` + ``figures/``;
- ``recipe.py``: the recipe format and its defaults; ``cli.py``: the subcommand.

A recipe may add its own stages (``config.stages = [Stage(...)]``): they run before the report, are
fingerprinted and skipped like the built-in ones, and the report lists their timings and results.

Launch: ``scoremix pipeline RECIPE --out DIR``; the demo: ``scoremix demo --out demo_out`` (``make demo``).
Every stage runs in this one process on one device; for multi-GPU training run that stage's own command
under torchrun (e.g. ``torchrun --nproc_per_node=8 -m scoremix_plugin train DIR/scoremix/config.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from scoremix_plugin.io_utils import write_json_atomic
from scoremix_plugin.pipeline.recipe import RECIPE_DEFAULTS, load_recipe
from scoremix_plugin.pipeline.report import report_stage
from scoremix_plugin.pipeline.runner import (
    Context,
    PipelineError,
    Stage,
    fingerprint,
    plan,
    read_marker,
    restore_stages,
    run_stages,
    save_stages,
)
from scoremix_plugin.pipeline.stages import REPORT_NEEDS, STAGE_NAMES, STAGES, verification_targets, verify_recogniser

__all__ = [
    "Context",
    "PipelineError",
    "RECIPE_DEFAULTS",
    "STAGES",
    "STAGE_NAMES",
    "Stage",
    "fingerprint",
    "log",
    "load_recipe",
    "pipeline_stages",
    "read_marker",
    "restore_stages",
    "run_recipe",
    "run_stages",
    "save_stages",
    "stage_states",
    "verification_targets",
    "verify_recogniser",
]


def pipeline_stages(recipe: Mapping) -> tuple[Stage, ...]:
    """The built-in stages, then the recipe's own (``recipe.stages``), then the report of them all."""
    added = tuple(recipe.get("stages") or ())
    return STAGES + added + (report_stage(REPORT_NEEDS, [s.name for s in added]),)


def log(message: str) -> None:
    """A stage line that stays clear of the stages' own progress bars."""
    from tqdm import tqdm

    tqdm.write(message)


def _context(recipe: str | os.PathLike | Mapping, out: str | os.PathLike, progress: bool) -> Context:
    from easydict import EasyDict as edict

    rec = edict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe)
    return Context(recipe=rec, out=Path(out).resolve(), progress=progress)


def run_recipe(
    recipe: str | os.PathLike | Mapping,
    out: str | os.PathLike,
    *,
    stage: str | None = None,
    start: str | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = log,
) -> dict[str, dict]:
    """Run a recipe into ``out``; returns each stage's status (``ran`` / ``skipped``) and seconds."""
    ctx = _context(recipe, out, progress)
    ctx.out.mkdir(parents=True, exist_ok=True)
    status = run_stages(pipeline_stages(ctx.recipe), ctx, only=stage, start=start, force=force, log=log)
    write_json_atomic(ctx.out / "timings.json", {name: m["seconds"] for name, m in ctx.markers.items()})
    return status


def stage_states(recipe: str | os.PathLike | Mapping, out: str | os.PathLike) -> dict[str, str]:
    """What a plain run would do with each stage: skip it (complete) or run it, and why."""
    ctx = _context(recipe, out, progress=False)
    return plan(pipeline_stages(ctx.recipe), ctx)
