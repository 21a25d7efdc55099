"""Recipe values checked when the recipe loads (before any stage runs), each named as its recipe key.

Without this a bad value surfaced only at its stage, after the stages before it had run (an unknown
``generation.guidance`` word after five stages), and was named as the CLI flag the stage passes it to
(``--images-per-identity``) instead of the key the user wrote. The rules are the flags' own
(:mod:`scoremix_plugin.checks`); ``load_recipe`` calls :func:`check_recipe_values`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scoremix_plugin.centres import SPACES
from scoremix_plugin.checks import check_choice, check_number
from scoremix_plugin.errors import InputError
from scoremix_plugin.generation.settings import GUIDANCE, SOLVERS
from scoremix_plugin.pipeline.runner import PipelineError
from scoremix_plugin.synthesis.select import STRATEGIES

# key -> ("int"|"float", lo, hi, may be None); bounds inclusive unless noted in OPEN.
NUMBERS: dict[str, tuple[str, float | None, float | None, bool]] = {
    "seed": ("int", 0, None, False),
    "data.toy.identities": ("int", 1, None, False),
    "data.toy.images_per_identity": ("int", 1, None, False),
    "data.toy.test_identities": ("int", 1, None, False),
    "data.toy.pairs": ("int", 1, None, False),
    "data.toy.seed": ("int", 0, None, True),
    "centres.batch_size": ("int", 1, None, False),
    "selection.num_identities": ("int", 1, None, False),
    "selection.max_uses": ("int", 1, None, False),
    "selection.k": ("int", 2, None, False),
    "generation.images_per_identity": ("int", 1, None, False),
    "generation.steps": ("int", 1, None, False),
    "generation.guidance_scale": ("float", 0, 100, False),
    "generation.shard_size": ("int", 1, None, False),
    "generation.batch_size": ("int", 1, None, False),
    "scoremix.ratio": ("float", 0, 1, True),
    "dataset_report.far": ("float", 0, 1, False),
    "dataset_report.min_share": ("float", 0, 1, False),
    "verification.batch_size": ("int", 1, None, False),
    "report.grid_pairs": ("int", 1, None, False),
    "report.grid_images": ("int", 1, None, False),
}
OPEN = {"scoremix.ratio", "dataset_report.far"}  # (0, 1): both ends excluded
WORDS: dict[str, tuple[Any, ...]] = {
    "selection.strategy": STRATEGIES,
    "selection.space": SPACES,
    "generation.solver": SOLVERS,
    "generation.guidance": GUIDANCE,
}
FLAGS = ("quality_gate", "generation.bf16", "scoremix.same_steps")


def _get(recipe: Mapping[str, Any], key: str) -> Any:
    v: Any = recipe
    for part in key.split("."):
        if not isinstance(v, Mapping):
            return None
        v = v.get(part)
    return v


def check_recipe_values(recipe: Mapping[str, Any], path: Path) -> None:
    """Every number finite, of its type and in range; every word one of its choices; named ``recipe.KEY``."""
    try:
        for key, (kind, lo, hi, may_be_none) in NUMBERS.items():
            v = _get(recipe, key)
            if v is None and (may_be_none or key == "scoremix.ratio"):
                continue
            is_open = key in OPEN
            check_number(v, f"recipe.{key}", integer=kind == "int", lo=lo, hi=hi, lo_open=is_open, hi_open=is_open)
        for key, choices in WORDS.items():
            check_choice(_get(recipe, key), f"recipe.{key}", choices)
        for key in FLAGS:
            if not isinstance(_get(recipe, key), bool):
                raise InputError(f"recipe.{key} must be True or False, got {_get(recipe, key)!r}")
        window = _get(recipe, "generation.mix_window")
        if window is not None:
            if not isinstance(window, (list, tuple)) or len(window) != 2:
                raise InputError(f"recipe.generation.mix_window must be None or (sigma_lo, sigma_hi), got {window!r}")
            lo = check_number(window[0], "recipe.generation.mix_window[0]", lo=0)
            check_number(window[1], "recipe.generation.mix_window[1]", lo=lo)
        interval = _get(recipe, "generation.guidance_interval")
        if interval is not None:
            if not isinstance(interval, (list, tuple)) or len(interval) != 2:
                raise InputError(
                    f"recipe.generation.guidance_interval must be None or (sigma_lo, sigma_hi), got {interval!r}"
                )
            lo = check_number(interval[0], "recipe.generation.guidance_interval[0]", lo=0)
            check_number(interval[1], "recipe.generation.guidance_interval[1]", lo=lo, lo_open=True)
        weights = _get(recipe, "selection.weights")
        if weights is not None:
            if not isinstance(weights, (list, tuple)) or not weights:
                raise InputError(f"recipe.selection.weights must be None or a list of numbers, got {weights!r}")
            for i, w in enumerate(weights):
                check_number(w, f"recipe.selection.weights[{i}]", lo=0, hi=1)
    except InputError as e:
        raise PipelineError(f"{path}: {e}") from None
