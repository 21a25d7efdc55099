"""Pipeline recipes: a Python file defining ``config = edict(...)``, like an arcface_torch config.

Paths inside are relative to the recipe's folder. Keys (defaults in RECIPE_DEFAULTS)::

    config = edict(
        name="demo",                       # shown in the report
        seed=0,                            # seeds the toy data, selection and generation
        device=None,                       # None: cuda when available, else cpu
        data=edict(
            toy=edict(identities=40, images_per_identity=16, test_identities=20, pairs=300,
                      seed=None),          # None: the recipe's seed (a shipped generator fixes it)
            rec=None,                      # OR a real InsightFace folder (then toy is ignored)
        ),
        recogniser="demo/recogniser.py",   # arcface_torch-style config: network, lr, epochs,
                                           # image_degrade, ... (rec / num_classes / num_image /
                                           # output are filled in per run; val_targets is
                                           # emptied: the verify stage scores both runs)
        generator="demo/generator.py",     # generator training config (data / classes filled in),
                                           # a generator checkpoint (.pt) trained elsewhere: used as is,
                                           # or "pretrained:NAME", a generator shipped in the package for
                                           # the toy data (scoremix_plugin/pretrained/NAME.json)
        generator_sigma_rel=None,          # e.g. 0.10: sample with the post-hoc EMA of this length
                                           # (a run trained with config.posthoc_ema)
        guide=None,                        # autoguidance's weaker model, for generation.guidance=
                                           # "autoguidance": edict(kind="snapshot", fraction=0.25) (an
                                           # early snapshot of the main run: no extra training),
                                           # edict(kind="smaller", preset="edm2-test", fraction=0.25)
                                           # (a smaller network trained here), or a checkpoint (.pt)
        centres=edict(batch_size=64),      # embedding of the real images for the class centres
        selection=edict(strategy="far", space="embedding", num_identities=40, max_uses=1,
                        k=2, weights=None),  # space: "embedding", "head" or "condition";
                                             # num_identities <= classes * max_uses / k
        generation=edict(images_per_identity=16, shard_size=1000,
                         # + the sampler (generation.settings.SamplerSettings, its defaults and their why):
                         solver="dpm2m", steps=32, guidance="cfg", guidance_scale=2.5,
                         guidance_interval=None,  # or (sigma_lo, sigma_hi): guide only there
                         mix_window=None,  # or (sigma_lo, sigma_hi): mix only there
                         batch_size=16, bf16=True),
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
                           # tinyface=None: or edict(root="TINYFACE_ROOT", aligned_dir="aligned_pad_0.1_pad_high"):
                           # TinyFace rank-1/5/20 (the paper's third metric) beside them
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

from scoremix_plugin.generation.settings import SAMPLER
from scoremix_plugin.pipeline.runner import PipelineError, Stage

RECIPE_DEFAULTS: dict[str, Any] = {
    "name": "pipeline",
    "seed": 0,
    "device": None,
    "data": {
        "toy": {"identities": 40, "images_per_identity": 16, "test_identities": 20, "pairs": 300, "seed": None},
        "rec": None,
    },
    "recogniser": None,
    "generator": None,
    "generator_sigma_rel": None,
    "guide": None,
    "centres": {"batch_size": 64},
    "selection": {
        "strategy": "far",
        "space": "embedding",
        "num_identities": 40,
        "max_uses": 1,
        "k": 2,
        "weights": None,
    },
    "generation": {"images_per_identity": 16, "shard_size": 1000, **SAMPLER.to_recipe()},
    "scoremix": {"ratio": None, "aug_real": None, "aug_synthetic": None, "same_steps": True},
    "dataset_report": {"far": 1e-4, "min_share": 0.5},
    "quality_gate": True,
    "merge": {"name": "scoremix_merged", "config_overrides": None},
    "verification": {"targets": None, "batch_size": 64, "ijb": None, "tinyface": None},
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

    return recipe_from(read_config_file(path), path)


def recipe_from(given: Mapping[str, Any], path: str | os.PathLike) -> edict:
    """``given`` (a recipe's keys) over RECIPE_DEFAULTS, checked as :func:`load_recipe` checks a file; ``path``
    names the recipe in messages and is what relative paths in it are relative to."""
    p = Path(path)
    recipe = _fill(RECIPE_DEFAULTS, given, p, "recipe")
    for key in ("recogniser", "generator"):
        if not recipe[key]:
            raise PipelineError(f"{p}: recipe.{key} (a config file, relative to the recipe) is required")
    from scoremix_plugin.pipeline.recipe_checks import check_recipe_values

    check_recipe_values(recipe, p)  # every value now, named as its recipe key (not at its stage)
    check_guide(recipe, p)
    check_pretrained(recipe, p)
    bad = [s for s in recipe["stages"] if not isinstance(s, Stage)]
    if bad:
        raise PipelineError(f"{p}: recipe.stages must hold scoremix_plugin.pipeline.Stage objects, got {bad!r}")
    recipe["_path"] = str(p.resolve())
    return edict(recipe)


def check_pretrained(recipe: Mapping[str, Any], path: Path) -> None:
    """A shipped generator exists, and is not asked for what it cannot give: it is already a post-hoc EMA
    reconstruction and holds no snapshots (no generator_sigma_rel, no snapshot guide)."""
    from scoremix_plugin.errors import InputError
    from scoremix_plugin.generation.pretrained import PREFIX, is_pretrained_ref, provenance

    g = recipe["generator"]
    if not is_pretrained_ref(g):
        return
    try:
        provenance(g[len(PREFIX) :])
    except InputError as e:
        raise PipelineError(f"{path}: recipe.generator: {e}") from None
    if recipe["generator_sigma_rel"] is not None:
        raise PipelineError(
            f"{path}: recipe.generator_sigma_rel must be None with {g!r} (the shipped file is "
            "already its post-hoc EMA; its provenance names the sigma_rel)"
        )
    guide = recipe["guide"]
    if isinstance(guide, Mapping) and guide.get("kind") == "snapshot":
        raise PipelineError(
            f"{path}: recipe.guide kind 'snapshot' needs the generator's training snapshots, which "
            f"{g!r} does not ship; use kind 'smaller' or a guide checkpoint"
        )


def check_guide(recipe: Mapping[str, Any], path: Path) -> None:
    """recipe.guide and generation.guidance agree, and a guide spec is complete (before anything trains)."""
    from scoremix_plugin.generation.guide import GUIDE_KINDS
    from scoremix_plugin.generation.posthoc_ema import check_sigma_rel

    guide, guidance = recipe["guide"], recipe["generation"]["guidance"]
    if guidance == "autoguidance" and guide is None:
        raise PipelineError(
            f"{path}: generation.guidance = 'autoguidance' needs recipe.guide (e.g. "
            "edict(kind='snapshot', fraction=0.25))"
        )
    if guide is not None and guidance != "autoguidance":
        raise PipelineError(
            f"{path}: recipe.guide is set but generation.guidance is {guidance!r}; the guide is "
            "only used with guidance = 'autoguidance'"
        )
    if recipe["generator_sigma_rel"] is not None:
        try:
            check_sigma_rel(recipe["generator_sigma_rel"], "recipe.generator_sigma_rel")
        except ValueError as e:
            raise PipelineError(f"{path}: {e}") from None
    if guide is None or isinstance(guide, (str, os.PathLike)):
        return
    if not isinstance(guide, Mapping):
        raise PipelineError(
            f"{path}: recipe.guide must be a checkpoint path or edict(kind=..., fraction=...), got "
            f"{type(guide).__name__}"
        )
    unknown = sorted(set(guide) - {"kind", "fraction", "preset"})
    kind, fraction = guide.get("kind"), guide.get("fraction", 0.25)
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) in recipe.guide: {unknown}; known: ['fraction', 'kind', 'preset']")
    if kind not in GUIDE_KINDS:
        raise PipelineError(f"{path}: recipe.guide.kind must be one of {list(GUIDE_KINDS)}, got {kind!r}")
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise PipelineError(f"{path}: recipe.guide.fraction must be in (0, 1), got {fraction!r}")
    if kind == "smaller" and not guide.get("preset"):
        raise PipelineError(f"{path}: recipe.guide.kind 'smaller' needs recipe.guide.preset (a smaller network)")
