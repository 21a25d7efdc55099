"""Pipeline recipes: a Python file defining ``config = edict(...)``, like an arcface_torch config.

Paths inside are relative to the recipe's folder. Keys (defaults in RECIPE_DEFAULTS)::

    config = edict(
        name="demo",                       # shown in the report
        seed=0,                            # seeds the toy data, selection and generation
        device=None,                       # None: cuda when available, else cpu
        data=edict(
            toy=edict(identities=40, images_per_identity=16, test_identities=20, pairs=300),
            rec=None,                      # OR a real InsightFace folder (then toy is ignored)
        ),
        recogniser="demo/recogniser.py",   # arcface_torch-style config: network, lr, epochs,
                                           # image_degrade, ... (rec / num_classes / num_image /
                                           # output are filled in per run; val_targets is
                                           # emptied: the verify stage scores both runs)
        generator="demo/generator.py",     # generator training config (data / classes filled in)
        centres=edict(batch_size=64),      # embedding of the real images for the class centres
        selection=edict(strategy="far", space="embedding", num_identities=40, max_uses=2,
                        k=2, weights=None),  # space: "embedding", "head" or "condition";
                                             # num_identities <= classes * max_uses / k
        generation=edict(images_per_identity=16, solver="heun", steps=8, guidance="cfg",
                         guidance_scale=2.5, mix_window=None,  # or (sigma_lo, sigma_hi)
                         shard_size=1000, batch_size=16, bf16=True),
        scoremix=edict(ratio=None, aug_real=None, aug_synthetic=None,  # -> config.scoremix block
                       same_steps=True),  # ScoreMix run gets the baseline's optimiser steps
        dataset_report=edict(far=1e-4,     # leak / gate threshold: the cosine where real impostor
                             min_share=0.5),  # pairs reach this FAR; the gate's share (relative to
                                              # the real identities recognised at that threshold)
        quality_gate=True,                 # stop before the ScoreMix stage when the synthetic
                                           # identities fail the gate (False: report it, go on)
        merge=edict(name="scoremix_merged",     # DIR/merged/NAME.py: the host's job config
                    config_overrides=None),     # e.g. {"network": "r50", "num_epoch": 20}
        verification=edict(targets=["toy_lfw", "toy_cfp_fp"], batch_size=64,
                           ijb=None),      # or edict(root="IJB_ROOT", target="IJBC", modes="F1N1D1")
                                           # (a list for several): IJB TAR@FAR beside the .bin sets
        report=edict(grid_pairs=6, grid_images=6),
        stages=[],                         # extra Stage objects (scoremix_plugin.pipeline.Stage), run
                                           # before the report, fingerprinted and reported like ours
    )
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from easydict import EasyDict as edict

from scoremix_plugin.pipeline.runner import PipelineError, Stage

RECIPE_DEFAULTS: dict[str, Any] = {
    "name": "pipeline",
    "seed": 0,
    "device": None,
    "data": {"toy": {"identities": 40, "images_per_identity": 16, "test_identities": 20, "pairs": 300}, "rec": None},
    "recogniser": None,
    "generator": None,
    "centres": {"batch_size": 64},
    "selection": {"strategy": "far", "space": "embedding", "num_identities": 40, "max_uses": 1, "k": 2,
                  "weights": None},
    "generation": {"images_per_identity": 16, "solver": "heun", "steps": 8, "guidance": "cfg",
                   "guidance_scale": 2.5, "mix_window": None, "shard_size": 1000, "batch_size": 16, "bf16": True},
    "scoremix": {"ratio": None, "aug_real": None, "aug_synthetic": None, "same_steps": True},
    "dataset_report": {"far": 1e-4, "min_share": 0.5},
    "quality_gate": True,
    "merge": {"name": "scoremix_merged", "config_overrides": None},
    "verification": {"targets": None, "batch_size": 64, "ijb": None},
    "report": {"grid_pairs": 6, "grid_images": 6},
    "stages": [],
}


def _fill(defaults: Mapping[str, Any], given: Mapping[str, Any], path: Path, where: str) -> dict[str, Any]:
    """``given`` over ``defaults``, block by block; a key the defaults do not know is an error."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) in {where}: {unknown}; known: {sorted(defaults)}")
    out = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        if isinstance(default, Mapping) and isinstance(value, Mapping):
            value = _fill(default, value, path, f"{where}.{key}")
        out[key] = value
    return out


def load_recipe(path: str | os.PathLike) -> edict:
    """Read a recipe file and fill in the defaults (a block given in the recipe is merged key by key)."""
    from scoremix_plugin.config import read_config_file

    p = Path(path)
    recipe = _fill(RECIPE_DEFAULTS, read_config_file(p), p, "recipe")
    for key in ("recogniser", "generator"):
        if not recipe[key]:
            raise PipelineError(f"{p}: recipe.{key} (a config file, relative to the recipe) is required")
    bad = [s for s in recipe["stages"] if not isinstance(s, Stage)]
    if bad:
        raise PipelineError(f"{p}: recipe.stages must hold scoremix_plugin.pipeline.Stage objects, got {bad!r}")
    recipe["_path"] = str(p.resolve())
    return edict(recipe)
