"""Guides for autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself").

Autoguidance extrapolates the main denoiser away from a weaker one of the same classes:
``D = D_guide + w (D_main - D_guide)`` (the sampler's ``guidance="autoguidance"``). The guide must make
the same kind of errors as the main model, only more of them; the paper gets it in two ways, both here:

- ``kind="snapshot"``: an early snapshot of the main run itself (``generator-NNNNNNN.pt``, written every
  ``config.snapshot_every`` steps). Costs no extra training. ``guide_snapshot`` picks it.
- ``kind="smaller"``: a smaller network (another preset) trained on the same data with the same recipe
  for a fraction of the main run's steps. ``train_guide`` trains it.

    from scoremix_plugin.generation.guide import train_guide
    summary = train_guide("configs/generator.py", preset="tiny-cpu-xs", fraction=0.25)
    # scoremix generate --ckpt MAIN/generator.pt --guidance autoguidance --guide summary["checkpoint"] ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scoremix_plugin.config import ConfigError, read_config_file
from scoremix_plugin.errors import InputError, MissingInputError

GUIDE_KINDS = ("smaller", "snapshot")
SNAPSHOT_RE = re.compile(r"generator-(\d{7})\.pt$")


def guide_snapshot(run_dir: str | os.PathLike, fraction: float = 0.25, main_step: int | None = None) -> Path:
    """The main run's snapshot whose step is nearest ``fraction`` of ``main_step`` (default: generator.pt's step).

    Snapshots after ``main_step`` are never chosen (they would be the better model, not the worse one).
    """
    from scoremix_plugin.generation.checkpoint import CHECKPOINT_NAME, load_checkpoint

    run = Path(run_dir)
    if not 0 < fraction < 1:
        raise InputError(f"fraction must be in (0, 1), got {fraction}")
    if main_step is None:
        main = run / CHECKPOINT_NAME
        if not main.is_file():
            raise MissingInputError(f"{main}: no main checkpoint to take the step from (pass main_step=)")
        main_step = int(load_checkpoint(main)["step"])
    snaps = {int(m.group(1)): p for p in run.glob("generator-*.pt") if (m := SNAPSHOT_RE.search(p.name))}
    snaps = {s: p for s, p in snaps.items() if 0 < s < main_step}
    if not snaps:
        raise MissingInputError(
            f"{run}: no snapshot generator-NNNNNNN.pt before step {main_step}; train the main "
            "run with config.snapshot_every set (e.g. a quarter of total_steps)"
        )
    return snaps[nearest_earlier_step(snaps, fraction, main_step)]


def nearest_earlier_step(steps, fraction: float, main_step: int) -> int:
    """Of the stored ``steps`` before ``main_step``, the one nearest ``fraction * main_step`` (ties: earlier).

    The step of an early-snapshot guide, whether the snapshots are generator-NNNNNNN.pt or post-hoc EMA ones.
    """
    before = [int(s) for s in steps if 0 < int(s) < main_step]
    if not before:
        raise MissingInputError(f"no stored snapshot before step {main_step}")
    return min(before, key=lambda s: (abs(s - fraction * main_step), s))


def guide_config(
    main_config: Mapping[str, Any] | str | os.PathLike,
    *,
    preset: str,
    fraction: float = 0.25,
    output: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The guide's training config: the main run's, with a smaller ``preset`` and ``fraction`` of its steps.

    Same data, resolution, batch, learning rate, label dropout and seed, so the guide differs from the main
    model only in capacity and training time, as autoguidance wants. A duration cap scales with the steps.
    """
    from scoremix_plugin.generation.train import GENERATOR_DEFAULTS

    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    source = "config" if isinstance(main_config, Mapping) else str(main_config)
    cfg = dict(main_config) if isinstance(main_config, Mapping) else read_config_file(main_config)
    if not cfg.get("rec"):
        raise ConfigError(f"{source}: config.rec is required (the guide trains on the main run's data)")
    total = int(cfg.get("total_steps", GENERATOR_DEFAULTS["total_steps"]))
    main_out = Path(cfg.get("output", GENERATOR_DEFAULTS["output"]))
    cfg.update(
        preset=preset,
        total_steps=max(1, round(fraction * total)),
        snapshot_every=None,
        resume=True,
        output=str(output if output is not None else main_out / "guide"),
    )
    if cfg.get("duration") is not None:
        cfg["duration"] = float(cfg["duration"]) * fraction
    for key in ("checkpoint_every", "sample_every"):
        if cfg.get(key) is not None:
            cfg[key] = min(int(cfg[key]), cfg["total_steps"])
    return cfg


def train_guide(
    main_config: Mapping[str, Any] | str | os.PathLike,
    *,
    preset: str,
    fraction: float = 0.25,
    output: str | os.PathLike | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the smaller guide (``guide_config``; ``overrides`` win) and return ``train_generator``'s summary.

    Resumable like any generator run (``resume=True``): rerunning continues or returns at once when complete.
    """
    from scoremix_plugin.generation.train import train_generator

    return train_generator(guide_config(main_config, preset=preset, fraction=fraction, output=output), **overrides)
