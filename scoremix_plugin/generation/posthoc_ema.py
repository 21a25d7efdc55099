"""Power-function EMA and post-hoc EMA reconstruction (EDM2, Karras et al. 2024, Section 3 and App. C).

A power-function EMA averages the weights seen up to step t with the profile
``p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)`` on [0, t]: its length is relative to the training
time (std / t = sigma_rel), so one profile suits every training length. It is tracked with
``ema <- beta ema + (1 - beta) net``, ``beta_t = (1 - 1/t)^(gamma + 1)`` (t = optimiser steps done).

Training (config.posthoc_ema = [0.05, 0.10]) stores the EMAs of two profiles every
``posthoc_every`` steps in ``OUTPUT/posthoc/posthoc-NNNNNNN.pt``. Any other profile (sigma_rel, at any
stored step) is afterwards the weighted sum of the snapshots whose profiles best approximate it in
L2: with the closed-form inner products ``<p_a, p_b>`` the weights solve ``A x = b`` (``A`` between
the snapshots, ``b`` between the snapshots and the target), normalised to sum 1 as EDM2 does.
``scoremix ema --ckpt-dir OUTPUT --sigma-rel 0.05 --out G.pt`` writes a generator checkpoint whose
``ema`` weights are that reconstruction.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scoremix_plugin.errors import InputError

POSTHOC_DIR = "posthoc"
POSTHOC_FORMAT = "scoremix-posthoc-ema/1"
SIGMA_REL_MAX = 0.2886  # sigma_rel of gamma = 0 (a uniform average over [0, t]): sqrt(1 / 12)


def check_sigma_rel(value: Any, what: str = "sigma_rel") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < SIGMA_REL_MAX:
        raise InputError(f"{what} must be a number in (0, {SIGMA_REL_MAX}), got {value!r}")
    return float(value)


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent whose profile has relative std sigma_rel.

    sigma_rel^2 = (g + 1) / ((g + 2)^2 (g + 3)) is the cubic g^3 + 7 g^2 + (16 - s) g + (12 - s) = 0
    with s = sigma_rel^-2; its largest real root is the answer (EDM2: 0.05 -> 16.97, 0.10 -> 6.94).
    """
    s = check_sigma_rel(sigma_rel) ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    g = float(gamma)
    return float(np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))))


def power_ema_beta(gamma: float, step: int) -> float:
    """The EMA's keep-factor after optimiser step ``step`` (1, 2, ...); 0 at step 1 (EMA = weights)."""
    return (1.0 - 1.0 / int(step)) ** (float(gamma) + 1.0)


def profile_inner(t_a, g_a, t_b, g_b) -> np.ndarray:
    """<p_{t_a, g_a}, p_{t_b, g_b}> = integral over [0, min t] of the two profiles (broadcasting).

    = (g_a + 1)(g_b + 1) / (g_a + g_b + 1) * m^(g_a + g_b + 1) / (t_a^(g_a + 1) t_b^(g_b + 1)), m = min(t_a, t_b),
    written with the ratio of the times so large exponents do not overflow.
    """
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, g_a, t_b, g_b))
    ratio = np.where(t_a <= t_b, t_a / t_b, t_b / t_a)  # (min / max) <= 1
    power = np.where(t_a <= t_b, g_b, g_a)  # the exponent of the profile with the longer support
    return (g_a + 1) * (g_b + 1) / (g_a + g_b + 1) * ratio**power / np.maximum(t_a, t_b)


def solve_coefficients(steps, gammas, target_step: float, target_gamma: float) -> np.ndarray:
    """Weights x (one per snapshot, summing to 1) minimising || sum_i x_i p_i - p_target ||_2."""
    t = np.asarray(steps, dtype=np.float64)
    g = np.asarray(gammas, dtype=np.float64)
    A = profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner(t, g, float(target_step), float(target_gamma))
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    return x / x.sum()


def snapshot_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / POSTHOC_DIR / f"posthoc-{int(step):07d}.pt"


def list_snapshots(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    folder = Path(ckpt_dir) / POSTHOC_DIR
    found = []
    for p in sorted(folder.glob("posthoc-*.pt")):
        m = re.fullmatch(r"posthoc-(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return found


def reconstruct(
    ckpt_dir: str | os.PathLike, sigma_rel: float, step: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """A generator checkpoint (dict) from ``ckpt_dir/generator.pt`` with ``ema`` = the reconstruction.

    Uses every snapshot at or before ``step`` (default: the last one). Parameters are averaged in float64;
    buffers (fixed at initialisation) are copied from the training checkpoint.
    """
    from scoremix_plugin.generation.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from scoremix_plugin.generation.network import build_network
    from scoremix_plugin.io_utils import load_torch_safe

    target_gamma = sigma_rel_to_gamma(sigma_rel)
    base_path = Path(ckpt_dir) / CHECKPOINT_NAME
    base = load_checkpoint(base_path)
    snaps = list_snapshots(ckpt_dir)
    if not snaps:
        raise InputError(
            f"{Path(ckpt_dir) / POSTHOC_DIR}: no posthoc-NNNNNNN.pt snapshots (train with "
            "config.posthoc_ema = [0.05, 0.10])"
        )
    target = int(step) if step is not None else snaps[-1][0]
    snaps = [(s, p) for s, p in snaps if s <= target]
    if not snaps or (step is not None and snaps[-1][0] != target):
        have = [s for s, _ in list_snapshots(ckpt_dir)]
        raise InputError(f"{Path(ckpt_dir) / POSTHOC_DIR}: no snapshot at step {target} (have {have})")
    if snaps[0][0] < 1:  # a profile at t = 0 has no length: the coefficients would be NaN
        raise InputError(f"{snaps[0][1]}: a snapshot at step {snaps[0][0]} (steps start at 1)")
    sigma_rels = [float(v) for v in base["config"].get("posthoc_ema") or []]
    if not sigma_rels:
        raise InputError(f"{base_path}: config.posthoc_ema is not set in this run")
    gammas = [sigma_rel_to_gamma(v) for v in sigma_rels]
    t_in = [s for s, _ in snaps for _ in gammas]
    g_in = [g for _ in snaps for g in gammas]
    coef = solve_coefficients(t_in, g_in, target, target_gamma)

    from scoremix_plugin.io_utils import check_state_tensors

    params = dict(build_network(dict(base["network_kwargs"])).named_parameters())
    param_names = set(params)
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    acc: dict[str, torch.Tensor] = {}
    it = snaps
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(snaps, desc="post-hoc EMA", leave=False)
    i = 0
    for s, path in it:
        snap = load_torch_safe(path)
        if not isinstance(snap, dict) or snap.get("format") != POSTHOC_FORMAT:
            raise InputError(f"{path}: not a post-hoc EMA snapshot (format {POSTHOC_FORMAT!r})")
        for key in ("step", "sigma_rels", "emas"):
            if key not in snap:
                raise InputError(f"{path}: snapshot lacks its {key!r} entry (not written by train-generator?)")
        got_step, got_rels, emas = snap["step"], snap["sigma_rels"], snap["emas"]
        if (
            isinstance(got_step, bool)
            or not isinstance(got_step, int)
            or not isinstance(got_rels, (list, tuple))
            or not all(isinstance(v, (int, float)) for v in got_rels)
        ):
            raise InputError(f"{path}: 'step' / 'sigma_rels' are not an integer / a list of numbers")
        if got_step != s or [float(v) for v in got_rels] != sigma_rels:
            raise InputError(
                f"{path}: holds step {got_step} sigma_rels {got_rels}, expected step {s} sigma_rels {sigma_rels}"
            )
        if not isinstance(emas, (list, tuple)) or len(emas) != len(gammas):
            raise InputError(f"{path}: 'emas' must be a list of {len(gammas)} state dicts (one per sigma_rel)")
        for j, state in enumerate(emas):
            # tensors only, finite, each of the network's shape (a wrong one would broadcast into the sum)
            check_state_tensors(state, path, shapes, prefix=f"emas[{j}].")
            for name in param_names:
                if name not in state:
                    raise InputError(f"{path}: snapshot lacks parameter {name!r}")
                term = state[name].double() * float(coef[i])
                acc[name] = term if name not in acc else acc[name] + term
            i += 1
    ema = {k: (acc[k].float() if k in acc else v.clone()) for k, v in base["net"].items()}
    out = {k: v for k, v in base.items() if k not in ("optimizer", "posthoc", "uncertainty")}
    out.update(
        ema=ema,
        step=target,
        posthoc_ema={
            "sigma_rel": float(sigma_rel),
            "gamma": target_gamma,
            "snapshot_steps": [s for s, _ in snaps],
            "snapshot_sigma_rels": sigma_rels,
            "coefficients": [float(c) for c in coef],
            "net_step": int(base["step"]),
        },
    )  # "net" stays the raw weights of generator.pt's step
    return out


# scoremix ema


def add_ema_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt-dir", required=True, help="train-generator output folder (generator.pt + posthoc/)")
    parser.add_argument(
        "--sigma-rel",
        required=True,
        type=float,
        help=f"EMA length relative to training time, in (0, {SIGMA_REL_MAX}); EDM2's best were ~0.05-0.15",
    )
    parser.add_argument("--step", type=int, help="reconstruct at this stored step (default: the last)")
    parser.add_argument("--out", required=True, help="generator checkpoint to write (loads like generator.pt)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file (never the run's own generator.pt or a snapshot)",
    )


def write_reconstruction(
    ckpt_dir: str | os.PathLike,
    sigma_rel: float,
    out: str | os.PathLike,
    step: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``reconstruct`` and save it atomically to ``out`` (a checkpoint that loads like generator.pt)."""
    from scoremix_plugin.io_utils import save_torch_atomic

    ckpt = reconstruct(ckpt_dir, sigma_rel, step, progress=progress)
    save_torch_atomic(ckpt, out)
    return ckpt


def run_ema(args: argparse.Namespace) -> int:
    from scoremix_plugin.generation.checkpoint import CHECKPOINT_NAME
    from scoremix_plugin.io_utils import refuse_output_file, refuse_output_overlapping_inputs

    run = Path(args.ckpt_dir)
    inputs = {f"--ckpt-dir's {CHECKPOINT_NAME}": run / CHECKPOINT_NAME}
    inputs.update({f"--ckpt-dir's snapshot {p.name}": p for _, p in list_snapshots(run)})
    refuse_output_file(args.out, overwrite=args.overwrite, inputs=inputs)
    refuse_output_overlapping_inputs(args.out, {"--ckpt-dir's posthoc/": run / POSTHOC_DIR})
    check_sigma_rel(args.sigma_rel, "--sigma-rel")
    ckpt = write_reconstruction(args.ckpt_dir, args.sigma_rel, args.out, args.step, progress=True)
    info = ckpt["posthoc_ema"]
    print(
        f"{args.out}: sigma_rel {info['sigma_rel']} (gamma {info['gamma']:.2f}) at step {ckpt['step']} from "
        f"{len(info['snapshot_steps'])} snapshots x {len(info['snapshot_sigma_rels'])} profiles"
    )
    return 0
