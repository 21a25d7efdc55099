"""The sampler's settings and choices, in one place and without torch, so command-line parsers can offer them cheaply.

:class:`SamplerSettings` holds the defaults every front end starts from: the ``scoremix generate`` /
``scoremix sample`` flags, :class:`~scoremix_plugin.synthesis.generate.GenerateSettings`, the pipeline
recipe's ``generation`` block and the experiments. ``generation.sampler.sample`` is the numerical routine
underneath; its callers pass these settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SOLVERS = ("heun", "euler", "dpm2m")
GUIDANCE = ("none", "cfg", "autoguidance")
MIX_SPACES = ("score", "condition")


@dataclass(frozen=True)
class SamplerSettings:
    """How synthetic images are sampled. The defaults are the demo's sampler: docs/results.md ("Sampling cost")
    holds the measurement that chose them (identity quality against network evaluations per image)."""

    # DPM-Solver++(2M), 32 steps: the cheapest setting measured whose identities match Heun-32's (EDM2's sampler)
    # within 2 points on BOTH shipped generators, 96 network inputs per 2-way mixed image instead of 189
    # (docs/results.md, "Sampling cost"). On the 200-class toy200, 24 steps (72 inputs) fell 6 points short on
    # far mixes recognised (74 % vs Heun-32's 80 %; 32 steps: 78 %); on the 40-class toy40, 24 steps already
    # held, and the demo, which samples toy40, keeps them. The steps a generator needs grow with its classes,
    # so the library's default takes the larger generator's. The former Heun-8 (45 inputs) recognised 80 % of
    # toy40's classes and 17.5 % of its far mixes against Heun-32's 97.5 % / 65 %.
    solver: str = "dpm2m"  # one of SOLVERS; heun: 2 * steps - 1 network evaluations, euler / dpm2m: steps
    steps: int = 32  # solver steps
    guidance: str = "cfg"  # one of GUIDANCE; cfg: the reference is the null class (one extra input per image)
    guidance_scale: float = 2.5  # w; 1 = no guidance
    guidance_interval: tuple[float, float] | None = None  # (sigma_lo, sigma_hi): guide only there; None: everywhere
    mix_window: tuple[float, float] | None = (
        None  # (sigma_lo, sigma_hi): mix only there (outside: the first class alone); None: everywhere
    )
    batch_size: int = 16  # images per sampler call (part of a run's plan: batches shape the float maths)
    bf16: bool = True  # the network under bfloat16 autocast

    def to_recipe(self) -> dict[str, Any]:
        """The recipe's ``generation`` keys."""
        return asdict(self)


SAMPLER = SamplerSettings()
