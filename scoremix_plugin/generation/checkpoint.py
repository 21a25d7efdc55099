"""Generator checkpoints: what ``scoremix train-generator`` writes and everything after it loads.

A checkpoint is a dict of tensors and plain values (loadable with ``torch.load(weights_only=True)``):
``format``, ``step``, ``net`` / ``ema`` (state dicts of the raw network F), ``optimizer``, ``config``,
``num_classes`` (real classes; the null class is row ``num_classes``), ``resolution``, ``preset``,
``network_kwargs`` (the exact UNet2DModel or, with ``arch="edm2"``, EDM2UNet arguments, so a later change
of a preset cannot break it), ``sigma_data`` and ``rng`` (the seed every random draw is derived from).
Optional: ``uncertainty`` (EDM2's u(sigma), config.loss_weighting = "uncertainty") and ``posthoc``
(the power-function EMAs of config.posthoc_ema) for resuming; ``posthoc_ema`` (how ``scoremix ema``
reconstructed ``ema``; such a file has no ``optimizer`` and cannot be resumed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scoremix_plugin.errors import CheckpointError

CHECKPOINT_FORMAT = "scoremix-generator/1"
CHECKPOINT_NAME = "generator.pt"
REQUIRED_KEYS = ("format", "step", "net", "ema", "config", "num_classes", "resolution", "network_kwargs", "sigma_data")


def plain(value: Any) -> Any:
    """Config values as weights_only-loadable data: dicts, lists, str, int, float, bool, None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"config value {value!r} of type {type(value).__name__} cannot go into a checkpoint")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a generator checkpoint (untrusted input: weights_only)."""
    from scoremix_plugin.io_utils import load_torch_safe

    ckpt = load_torch_safe(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not a scoremix generator checkpoint (expected format {CHECKPOINT_FORMAT!r}, "
            f"found {found!r}; it should come from `scoremix train-generator`)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: generator checkpoint lacks key(s) {missing}")
    return ckpt


def check_compatible(
    ckpt: Mapping[str, Any], path, *, num_classes: int, resolution: int, network_kwargs: Mapping[str, Any]
) -> None:
    """A resumed run must build the same network: same classes, resolution and architecture."""
    for key, want in (("num_classes", num_classes), ("resolution", resolution)):
        if int(ckpt[key]) != int(want):
            raise CheckpointError(f"{path}: checkpoint {key} is {ckpt[key]}, this run has {want}")
    if plain(ckpt["network_kwargs"]) != plain(network_kwargs):
        raise CheckpointError(
            f"{path}: checkpoint network {ckpt['network_kwargs']} differs from this run's "
            f"{dict(network_kwargs)} (another preset?)"
        )


def build_denoiser(ckpt: Mapping[str, Any], *, ema: bool = True):
    """The EDM-preconditioned denoiser of a loaded checkpoint, with EMA (or raw) weights, on the CPU."""
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import build_network

    net = build_network(dict(ckpt["network_kwargs"]))
    net.load_state_dict(ckpt["ema" if ema else "net"])
    return EDMPrecond(
        net,
        num_classes=int(ckpt["num_classes"]),
        resolution=int(ckpt["resolution"]),
        sigma_data=float(ckpt["sigma_data"]),
    )


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True, amp: torch.dtype | None = None
):
    """(denoiser, config): ``denoiser(x, sigma, class_labels) -> D`` in eval mode, gradients off.

    ``amp=torch.bfloat16`` runs the network under autocast (the preconditioning stays float32).
    ``config`` is the training config plus ``step``, ``preset`` and ``path``.
    """
    from scoremix_plugin.io_utils import check_finite_weights

    ckpt = load_checkpoint(path)
    weights = ckpt["ema" if ema else "net"]
    if isinstance(weights, Mapping):
        check_finite_weights(weights, path, prefix="ema." if ema else "net.")
    try:
        denoiser = build_denoiser(ckpt, ema=ema)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the weights do not fit the network the checkpoint describes: {e}") from e
    denoiser = denoiser.to(device).eval().requires_grad_(False)
    from scoremix_plugin.generation.edm import autocast_dtype

    denoiser.amp_dtype = autocast_dtype(amp, device)
    config = dict(ckpt["config"])
    config.update(step=int(ckpt["step"]), preset=ckpt.get("preset"), path=str(Path(path)))
    return denoiser, config
