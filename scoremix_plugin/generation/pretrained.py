"""Generators shipped inside the package, trained once to identity quality on the embedded toy data.

Each shipped generator is two files in ``scoremix_plugin/pretrained/``: ``NAME.pt`` (what sampling needs: the
post-hoc EMA reconstruction in float16, no optimiser state) and ``NAME.json``, its provenance: the command
that made it, the toy data's fingerprint (``scoremix_plugin.toydata.toy_fingerprint``), the generator config,
steps, sigma_rel, training CPU seconds, the machine, the weights' sha256 and the measured quality. A recipe
names one as ``generator = "pretrained:NAME"``; ``experiments/pretrained.py`` trains, exports and measures them.

Why float16 and one copy of the weights: the file must stay small enough for a package (<= 10 MB). The EDM2
network normalises its weights in the forward pass, so float16 storage changes its outputs by about 1e-3
of their scale (measured at export, recorded in the provenance as ``export.max_abs_diff``); loading casts
back to float32. ``net`` and ``ema`` are the same tensors (torch.save stores shared storage once), so the
file loads everywhere a trained ``generator.pt`` loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scoremix_plugin.errors import CheckpointError, InputError

PREFIX = "pretrained:"
PROVENANCE_FORMAT = "scoremix-pretrained/1"
# Keys a sampling-only file keeps; training state (optimiser, post-hoc EMA accumulators, u(sigma)) is dropped.
KEEP = (
    "format",
    "step",
    "config",
    "num_classes",
    "resolution",
    "preset",
    "network_kwargs",
    "sigma_data",
    "rng",
    "posthoc_ema",
)


def pretrained_dir() -> Path:
    """The package folder holding the shipped generators (package data: present in a pip install too)."""
    return Path(__file__).resolve().parents[1] / "pretrained"


def available() -> list[str]:
    """Names of the shipped generators (those with both their ``.pt`` and their provenance)."""
    d = pretrained_dir()
    return sorted(p.stem for p in d.glob("*.json") if (d / f"{p.stem}.pt").is_file()) if d.is_dir() else []


def is_pretrained_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def provenance(name: str) -> dict[str, Any]:
    """The provenance record of shipped generator ``name``."""
    path = pretrained_dir() / f"{name}.json"
    if not path.is_file():
        raise InputError(f"no shipped generator {name!r} (have: {', '.join(available()) or 'none'})")
    try:
        prov = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable provenance ({e})") from None
    if not isinstance(prov, dict) or prov.get("format") != PROVENANCE_FORMAT:
        raise InputError(f"{path}: not a shipped-generator provenance (format {PROVENANCE_FORMAT!r})")
    return prov


def resolve(ref: str, *, verify: bool = True) -> tuple[Path, dict[str, Any]]:
    """``"pretrained:NAME"`` (or ``NAME``) -> (path of its ``.pt``, its provenance); checks the sha256 it records."""
    from scoremix_plugin.io_utils import sha256_file

    name = ref[len(PREFIX) :] if ref.startswith(PREFIX) else ref
    prov = provenance(name)
    path = pretrained_dir() / f"{name}.pt"
    if not path.is_file():
        raise InputError(f"{path}: the shipped generator's weights are missing (reinstall the package)")
    if verify:
        got = sha256_file(path)
        if got != prov["weights"]["sha256"]:
            raise CheckpointError(
                f"{path}: sha256 {got[:12]}... differs from its provenance's "
                f"{prov['weights']['sha256'][:12]}... (damaged or replaced)"
            )
    return path, prov


def sampling_checkpoint(ckpt: Mapping[str, Any], dtype: str = "float16") -> dict[str, Any]:
    """A generator checkpoint reduced to what sampling needs, with its EMA weights stored as ``dtype``.

    Floating tensors of ``ema`` are cast (integer buffers kept); ``net`` is the same dict, so it is stored once.
    """
    import torch

    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    ema = {
        k: (v.detach().to(dt).clone() if v.is_floating_point() else v.detach().clone()) for k, v in ckpt["ema"].items()
    }
    out = {k: ckpt[k] for k in KEEP if k in ckpt}
    out.update(ema=ema, net=ema, storage_dtype=dtype)
    return out


def export(ckpt: Mapping[str, Any], dest: str | os.PathLike, dtype: str = "float16") -> dict[str, Any]:
    """Write the sampling-only file and measure what the storage dtype changed: the largest absolute difference
    of the denoiser's output, float32 weights vs stored weights, on fixed inputs over the sigma range."""
    import torch

    from scoremix_plugin.generation.checkpoint import build_denoiser, load_checkpoint
    from scoremix_plugin.io_utils import save_torch_atomic, sha256_file

    small = sampling_checkpoint(ckpt, dtype)
    save_torch_atomic(small, dest)
    ref = build_denoiser(ckpt, ema=True).eval()
    got = build_denoiser(load_checkpoint(dest), ema=True).eval()
    g = torch.Generator().manual_seed(0)
    res, n = int(ckpt["resolution"]), 8
    x = torch.randn(n, 3, res, res, generator=g)
    sigma = torch.logspace(-2.3, 1.9, n)  # 0.005 .. 80, EDM's sampling range
    labels = torch.arange(n) % int(ckpt["num_classes"])
    with torch.no_grad():
        a = ref(x * sigma.view(-1, 1, 1, 1), sigma, labels)
        b = got(x * sigma.view(-1, 1, 1, 1), sigma, labels)
    return {
        "file": Path(dest).name,
        "sha256": sha256_file(dest),
        "bytes": Path(dest).stat().st_size,
        "storage_dtype": dtype,
        "max_abs_diff": float((a - b).abs().max()),
        "output_abs_mean": float(a.abs().mean()),
    }
