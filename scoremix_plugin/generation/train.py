"""Train the class-conditional EDM generator on a RecordIO folder (``scoremix train-generator CONFIG``).

One process:      scoremix train-generator configs/generator_demo.py
Several (DDP):    torchrun --nproc_per_node=2 -m scoremix_plugin train-generator configs/generator_demo.py

The config is an arcface_torch-style Python file (``config = edict(rec=..., ...)``) merged over
GENERATOR_DEFAULTS. ``batch_size`` is per process. Outputs in ``config.output``: ``generator.pt``
(latest checkpoint, atomic), optional ``generator-NNNNNNN.pt`` snapshots (weaker guides for
autoguidance), ``train_log.jsonl`` and ``samples/step-NNNNNNN.png`` grids (EMA weights, CFG).

Randomness is a pure function of (seed, step, rank) and (seed, epoch): the data order, the flips,
the label dropout, sigma and the noise are all re-derived from the step counter, so a resumed run
continues exactly as an uninterrupted one would (checked on CPU by the tests) and a checkpoint needs
no RNG state beyond the step and the seed.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scoremix_plugin.config import ConfigError, merge_config, read_config_file
from scoremix_plugin.errors import InputError
from scoremix_plugin.generation.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    check_compatible,
    load_checkpoint,
    plain,
)
from scoremix_plugin.generation.edm import (
    EDMPrecond,
    autocast_dtype,
    edm_loss,
    precond_coefficients,
    sample_training_sigma,
)
from scoremix_plugin.generation.network import PRESETS, build_network, network_kwargs
from scoremix_plugin.generation.posthoc_ema import (
    POSTHOC_FORMAT,
    check_sigma_rel,
    power_ema_beta,
    sigma_rel_to_gamma,
    snapshot_path,
)
from scoremix_plugin.io_utils import stable_seed

GENERATOR_DEFAULTS: dict[str, Any] = {
    "rec": None,  # InsightFace-layout RecordIO folder of the team's labelled faces (required)
    "resolution": 32,  # pixels; images are resized on load (cv2.INTER_AREA). 32: CPU demo, 112: real
    "preset": "tiny-cpu",  # network preset (generation/network.py PRESETS)
    "batch_size": 32,  # images per process per step
    "lr": 1e-3,  # Adam; 1e-3 beat 2e-4 in the CPU spike
    "lr_warmup": 100,  # steps of linear learning-rate ramp-up from 0
    "lr_decay_ref": None,  # EDM2's decay: lr / sqrt(max(step / lr_decay_ref, 1)); None = constant after warm-up
    "adam_betas": (0.9, 0.999),
    "total_steps": 2000,  # optimiser steps
    "duration": None,  # seconds of training; stop (with a checkpoint) when reached, None = no limit
    "label_dropout": 0.1,  # share of labels replaced by the null class (enables classifier-free guidance)
    "ema_decay": 0.999,  # EMA of the weights; sampling uses the EMA
    "ema_warmup": True,  # decay = min(ema_decay, (1 + n) / (10 + n)): short runs forget the initial weights
    "ema_sigma_rel": None,  # a number: the `ema` weights are EDM2's power-function EMA of this length instead
    "posthoc_ema": None,  # e.g. [0.05, 0.10]: power-function EMAs stored to OUTPUT/posthoc/ for `scoremix ema`
    "posthoc_every": 500,  # steps between post-hoc EMA snapshots (and the last step)
    "posthoc_dtype": "float32",  # snapshot precision: "float32", "float16" or "bfloat16" (EDM2 stores float16)
    "loss_weighting": "edm",  # "edm": lambda(sigma); "uncertainty": EDM2's learned u(sigma) on top of it
    # bfloat16 autocast for the network (GPU; CPU only with AVX-512, else float32: generation.edm.autocast_dtype)
    "bf16": True,
    "seed": 0,
    "output": "work_dirs/generator",
    "checkpoint_every": 500,  # steps; the last step always writes one
    "snapshot_every": None,  # steps; keep generator-NNNNNNN.pt copies (autoguidance guides)
    "sample_every": 500,  # steps; a PNG grid of a few classes and a 2-way mix; None = only at the end
    "sample_steps": 16,  # Heun steps for the grid
    "sample_classes": 6,  # rows of the grid (one class each) besides the mix row
    "sample_guidance": 2.5,  # CFG scale for the grid (w = 2.5 made identities show in the CPU spike)
    "log_every": 10,  # steps between JSON log lines
    "num_workers": 2,  # DataLoader workers (0 when images are cached in memory)
    "cache_images": "auto",  # keep resized images in memory: True, False or "auto" (when under 1 GiB)
    "resume": False,  # True: continue from output/generator.pt when present; or a checkpoint path
    "device": None,  # None: cuda:local_rank when available, else cpu
    "threads": None,  # torch intra-op threads (CPU); None = torch's default. On a shared 2-core machine 1
    #                   thread ran the tiny-cpu preset ~4x faster than 2 (no oversubscription)
    "sigma_data": 0.5,
    "P_mean": -1.2,
    "P_std": 1.2,
}

CACHE_LIMIT_BYTES = 1 << 30


class GeneratorImages(torch.utils.data.Dataset):
    """Items ``(index, flip)`` -> (float32 [3,R,R] in [-1,1], int64 label) from a RecordIO folder.

    The flip comes with the index (decided by the batch sampler from the seed), not from a worker's
    RNG, so the stream is identical whatever the number of workers and after a resume.
    """

    def __init__(self, rec: str | os.PathLike, resolution: int, cache: bool | str = "auto", progress: bool = False):
        from scoremix_plugin.recordio import FaceRecFolder

        self.folder = FaceRecFolder(rec)
        self.root = Path(rec)
        self.resolution = int(resolution)
        self.labels = self.folder.labels.astype(np.int64)
        self.num_classes = int(self.folder.num_classes)
        self.garbled: dict[int, str] = {}  # garbled JPEGs skipped (recordio.dataset's rule)
        if len(self.labels) == 0:
            raise InputError(f"{rec}: the RecordIO folder holds no images")
        size = len(self.labels) * self.resolution**2 * 3
        self.cache: np.ndarray | None = None
        if cache is True or (cache == "auto" and size <= CACHE_LIMIT_BYTES):
            from tqdm.auto import tqdm

            self.cache = np.empty((len(self.labels), self.resolution, self.resolution, 3), np.uint8)
            for i in tqdm(range(len(self.labels)), desc="decode", disable=not progress, leave=False):
                self.cache[i] = self._load(i)
        self.folder.close()  # each DataLoader worker maps the file again on first read

    def _load(self, i: int) -> np.ndarray:
        import cv2

        from scoremix_plugin.recordio.dataset import training_image

        img = training_image(self.folder, self.labels, i, self.garbled)
        if img.shape[:2] != (self.resolution, self.resolution):
            shrinking = img.shape[0] >= self.resolution and img.shape[1] >= self.resolution
            interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC  # AREA averages; it does not enlarge well
            img = cv2.resize(img, (self.resolution, self.resolution), interpolation=interp)
        return img

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, bool]):
        i, flip = item
        img = self.cache[i] if self.cache is not None else self._load(i)
        if flip:
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(127.5).sub(1)
        return x, torch.tensor(int(self.labels[i]), dtype=torch.int64)


class StepBatches(torch.utils.data.Sampler):
    """Batches of ``(index, flip)`` for steps ``start_step .. end_step - 1`` of one process.

    Step s belongs to epoch s // steps_per_epoch; each epoch is a permutation seeded by (seed, epoch)
    cut into global batches of batch_size * world; process r takes slice r of each global batch.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int, world: int, start_step: int, end_step: int):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.start_step, self.end_step = start_step, end_step
        self.steps_per_epoch = n // (batch_size * world)
        if self.steps_per_epoch < 1:
            raise InputError(
                f"the dataset has {n} images, fewer than one global batch (batch_size {batch_size} x {world} processes)"
            )

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self):
        epoch, perm, flips = None, None, None
        for s in range(self.start_step, self.end_step):
            e, within = divmod(s, self.steps_per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(stable_seed("generator-data", self.seed, e))
                perm, flips = torch.randperm(self.n, generator=g), torch.randint(0, 2, (self.n,), generator=g)
                epoch = e
            first = (within * self.world + self.rank) * self.batch_size
            idx = perm[first : first + self.batch_size]
            yield [(int(i), bool(flips[i])) for i in idx]


def _check_config(cfg, source: str) -> None:
    def need(key, ok, what):
        if not ok:
            raise ConfigError(f"{source}: config.{key} must be {what}, got {cfg[key]!r}")

    need("preset", cfg.preset in PRESETS, f"one of {sorted(PRESETS)}")
    for key in ("resolution", "batch_size", "total_steps", "log_every", "sample_steps", "sample_classes"):
        need(key, isinstance(cfg[key], int) and not isinstance(cfg[key], bool) and cfg[key] >= 1, "an integer >= 1")
    for key in ("checkpoint_every", "snapshot_every", "sample_every"):
        need(key, cfg[key] is None or (isinstance(cfg[key], int) and cfg[key] >= 1), "None or an integer >= 1")
    need("lr", isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0, "a finite positive number")
    need("lr_warmup", isinstance(cfg.lr_warmup, int) and cfg.lr_warmup >= 0, "an integer >= 0")
    need(
        "lr_decay_ref",
        cfg.lr_decay_ref is None
        or (
            isinstance(cfg.lr_decay_ref, (int, float))
            and not isinstance(cfg.lr_decay_ref, bool)
            and cfg.lr_decay_ref > 0
        ),
        "None or a positive number of steps",
    )
    need("loss_weighting", cfg.loss_weighting in ("edm", "uncertainty"), '"edm" or "uncertainty"')
    need("posthoc_every", isinstance(cfg.posthoc_every, int) and cfg.posthoc_every >= 1, "an integer >= 1")
    need("posthoc_dtype", cfg.posthoc_dtype in ("float32", "float16", "bfloat16"), '"float32", "float16" or "bfloat16"')
    rels = cfg.posthoc_ema
    need(
        "posthoc_ema",
        rels is None or (isinstance(rels, (list, tuple)) and len(rels) >= 1 and len(set(rels)) == len(rels)),
        "None or a list of distinct sigma_rel",
    )
    for key, values in (
        ("ema_sigma_rel", [] if cfg.ema_sigma_rel is None else [cfg.ema_sigma_rel]),
        ("posthoc_ema", rels or []),
    ):
        for v in values:
            try:
                check_sigma_rel(v)
            except ValueError as e:
                raise ConfigError(f"{source}: config.{key}: {e}") from None
    need("label_dropout", isinstance(cfg.label_dropout, (int, float)) and 0 <= cfg.label_dropout < 1, "in [0, 1)")
    need("ema_decay", isinstance(cfg.ema_decay, (int, float)) and 0 <= cfg.ema_decay < 1, "in [0, 1)")
    need(
        "duration",
        cfg.duration is None or (isinstance(cfg.duration, (int, float)) and cfg.duration > 0),
        "None or a positive number of seconds",
    )
    need("cache_images", cfg.cache_images in (True, False, "auto"), 'True, False or "auto"')
    need(
        "threads", cfg.threads is None or (isinstance(cfg.threads, int) and cfg.threads >= 1), "None or an integer >= 1"
    )
    need("num_workers", isinstance(cfg.num_workers, int) and cfg.num_workers >= 0, "an integer >= 0")
    need("resume", isinstance(cfg.resume, (bool, str, os.PathLike)), "True, False or a checkpoint path")


def activation_bytes(preset: str, resolution: int, batch_size: int) -> int:
    """A rough estimate of the activation memory one training step keeps for the backward pass.

    Per image and U-Net level l (side R/2^l, C_l channels): ~12 saved tensors per ResNet layer, down
    path and up path (2 * layers + 1 layers), plus heads * (R/2^l)^4 for attention scores where
    there is attention; float32. It is meant to catch impossible settings before anything is
    allocated (resolution 100000 asked for 30 GB per image), not to size a batch exactly.
    """
    kw = PRESETS[preset]
    if kw.get("arch") == "edm2":  # channels = model_channels * channel_mult[l]; attention at attn_levels
        chans = [int(kw["model_channels"]) * int(m) for m in kw["channel_mult"]]
        attn = [level in tuple(kw.get("attn_levels", ())) for level in range(len(chans))]
        layers, head_dim = 2 * int(kw["num_blocks"]) + 1, int(kw.get("channels_per_head", 64))
    else:  # diffusers UNet2DModel presets
        chans = list(kw["block_out_channels"])
        attn = [block.startswith("Attn") for block in kw["down_block_types"]]
        layers, head_dim = 2 * int(kw["layers_per_block"]) + 1, int(kw["attention_head_dim"])
    per_image = 0.0
    for level, (ch, has_attn) in enumerate(zip(chans, attn)):
        side2 = (resolution / 2**level) ** 2
        per_image += 12 * layers * ch * side2
        if has_attn:
            per_image += layers * max(ch // head_dim, 1) * side2**2
    return int(4 * per_image * batch_size)


def _device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _check_memory(cfg, device: torch.device, source: str) -> None:
    """Refuse a resolution / batch size whose activations cannot fit the device, before loading anything."""
    need, have = activation_bytes(cfg.preset, cfg.resolution, cfg.batch_size), _device_memory(device)
    # A factor 4 of slack: the estimate is rough (bf16 halves it), and a refusal must never hit a run that fits.
    if need > 4 * have:
        raise ConfigError(
            f"{source}: config.resolution={cfg.resolution} with config.batch_size={cfg.batch_size} (preset "
            f"{cfg.preset!r}) needs about {need / 2**30:,.0f} GiB of activations per step, over four times the "
            f"{have / 2**30:,.0f} GiB of {device}; lower config.resolution or config.batch_size"
        )


def learning_rate(cfg: Mapping[str, Any], step: int) -> float:
    """The rate for the step after ``step`` completed ones: linear warm-up, then EDM2's 1/sqrt decay."""
    lr = float(cfg["lr"])
    if cfg.get("lr_decay_ref"):
        lr /= math.sqrt(max(step / float(cfg["lr_decay_ref"]), 1.0))
    if cfg["lr_warmup"]:
        lr *= min(1.0, (step + 1) / cfg["lr_warmup"])
    return lr


class TrainingLoss(torch.nn.Module):
    """Per-image loss of a batch; one module (the denoiser and EDM2's u(sigma) when used) for DDP."""

    def __init__(self, denoiser: EDMPrecond, uncertainty: torch.nn.Module | None = None):
        super().__init__()
        self.denoiser, self.uncertainty = denoiser, uncertainty

    def forward(self, y, labels, sigma, noise):
        logvar = None
        if self.uncertainty is not None:
            logvar = self.uncertainty(precond_coefficients(sigma, self.denoiser.sigma_data)[3])
        return edm_loss(self.denoiser, y, labels, sigma, noise, self.denoiser.sigma_data, logvar=logvar)


def train_generator(
    config: Mapping[str, Any] | str | os.PathLike, *, progress: bool = True, **overrides: Any
) -> dict[str, Any]:
    """Run training from a config file or mapping (``overrides`` win); returns a summary on every process.
    ``progress``: progress bars on the main process (off for background jobs whose logs are files)."""
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from scoremix_plugin.distributed import barrier, cleanup, init_distributed
    from scoremix_plugin.generation.images import save_grid
    from scoremix_plugin.generation.sampler import image_generator, sample
    from scoremix_plugin.io_utils import save_torch_atomic

    # Config.
    if isinstance(config, Mapping):
        source, job = "config", dict(config)
    else:
        source, job = str(config), read_config_file(config)
    job.update(overrides)
    cfg = merge_config(job, GENERATOR_DEFAULTS, source=source, required=("rec",))
    _check_config(cfg, source)
    out = Path(cfg.output)

    # Processes and device.
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = init_distributed(cfg.device)
    device = env.device
    _check_memory(cfg, device, source)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)

    # Data.
    data = GeneratorImages(cfg.rec, cfg.resolution, cfg.cache_images, progress=progress and env.is_main)
    num_classes = data.num_classes

    # Network, EMA, optimiser (same initial weights in every process: seeded before building).
    torch.manual_seed(stable_seed("generator-init", cfg.seed))
    net_kwargs = network_kwargs(cfg.preset, num_classes, cfg.resolution)
    denoiser = EDMPrecond(
        build_network(net_kwargs), num_classes=num_classes, resolution=cfg.resolution, sigma_data=cfg.sigma_data
    ).to(device)
    denoiser.amp_dtype = autocast_dtype(torch.bfloat16 if cfg.bf16 else None, device)
    ema = copy.deepcopy(denoiser).eval().requires_grad_(False)
    uncertainty = None
    if cfg.loss_weighting == "uncertainty":
        from scoremix_plugin.generation.network_edm2 import UncertaintyWeight

        uncertainty = UncertaintyWeight().to(device)
    objective = TrainingLoss(denoiser, uncertainty)
    # Post-hoc EMA profiles: (sigma_rel, gamma, copy of F), tracked on every process, stored by process 0.
    posthoc = [
        (float(r), sigma_rel_to_gamma(r), copy.deepcopy(denoiser.net).eval().requires_grad_(False))
        for r in cfg.posthoc_ema or []
    ]
    ema_gamma = sigma_rel_to_gamma(cfg.ema_sigma_rel) if cfg.ema_sigma_rel is not None else None
    optimizer = torch.optim.Adam(objective.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=1e-8)
    step = 0

    # Resume.
    resume_path = None
    if isinstance(cfg.resume, bool):
        if cfg.resume and (out / CHECKPOINT_NAME).is_file():
            resume_path = out / CHECKPOINT_NAME
    else:
        resume_path = Path(cfg.resume)
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        check_compatible(
            ckpt, resume_path, num_classes=num_classes, resolution=cfg.resolution, network_kwargs=net_kwargs
        )
        if "optimizer" not in ckpt:
            raise InputError(
                f"{resume_path}: holds no optimiser state (a `scoremix ema` output?); resume from "
                "the run's generator.pt"
            )
        for key, have in (("uncertainty", uncertainty is not None), ("posthoc", bool(posthoc))):
            if (key in ckpt) != have:
                raise InputError(
                    f"{resume_path}: checkpoint {'has' if key in ckpt else 'lacks'} {key!r} state; "
                    "this run's config.loss_weighting / config.posthoc_ema differ"
                )
        denoiser.net.load_state_dict(ckpt["net"])
        ema.net.load_state_dict(ckpt["ema"])
        if uncertainty is not None:
            uncertainty.load_state_dict(ckpt["uncertainty"])
        if posthoc:
            if sorted(ckpt["posthoc"]) != sorted(str(r) for r, _, _ in posthoc):
                raise InputError(
                    f"{resume_path}: post-hoc EMA profiles {sorted(ckpt['posthoc'])} differ from "
                    f"config.posthoc_ema {cfg.posthoc_ema}"
                )
            for r, _, net in posthoc:
                net.load_state_dict(ckpt["posthoc"][str(r)])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        del ckpt
    model = torch.nn.parallel.DistributedDataParallel(objective) if env.distributed else objective

    # Helpers: checkpoint and sample grid (process 0 only).
    def save_or_close(obj: Any, path: Path) -> None:
        try:
            save_torch_atomic(obj, path)
        except Exception:
            bar.close()  # a failed save (full disk) is the last line the user sees, not the progress bar
            raise

    def checkpoint(path: Path) -> None:
        extra: dict[str, Any] = {}
        if uncertainty is not None:
            extra["uncertainty"] = uncertainty.state_dict()
        if posthoc:
            extra["posthoc"] = {str(r): net.state_dict() for r, _, net in posthoc}
        save_or_close(
            extra
            | {
                "format": CHECKPOINT_FORMAT,
                "step": step,
                "net": denoiser.net.state_dict(),
                "ema": ema.net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": plain(dict(cfg)),
                "num_classes": num_classes,
                "resolution": int(cfg.resolution),
                "preset": cfg.preset,
                "network_kwargs": plain(net_kwargs),
                "sigma_data": float(cfg.sigma_data),
                # Every random draw is re-derived from (seed, step, rank): these two fix them all.
                "rng": {"seed": int(cfg.seed), "scheme": "sha256(seed, step, rank)"},
            },
            path,
        )

    def posthoc_snapshot() -> None:
        dtype = getattr(torch, cfg.posthoc_dtype)
        save_or_close(
            {
                "format": POSTHOC_FORMAT,
                "step": step,
                "sigma_rels": [r for r, _, _ in posthoc],
                "emas": [
                    {k: v.to(dtype) if v.is_floating_point() else v for k, v in net.state_dict().items()}
                    for _, _, net in posthoc
                ],
            },
            snapshot_path(out, step),
        )

    def sample_grid() -> Path:
        rows = sorted(
            {
                round(i * (num_classes - 1) / max(cfg.sample_classes - 1, 1))
                for i in range(min(cfg.sample_classes, num_classes))
            }
        )
        cols = 6
        classes = [[c, c] for c in rows for _ in range(cols)]
        weights = [[1.0, 0.0]] * len(classes)
        if num_classes >= 2:  # the last row: a 50/50 ScoreMix of the first and last class shown
            classes += [[rows[0], rows[-1]]] * cols
            weights += [[0.5, 0.5]] * cols
        gens = [image_generator(cfg.seed, 0, j % cols, device) for j in range(len(classes))]
        guided = cfg.label_dropout > 0 and cfg.sample_guidance != 1
        images = sample(
            ema,
            torch.tensor(classes),
            torch.tensor(weights),
            generators=gens,
            num_steps=cfg.sample_steps,
            guidance="cfg" if guided else "none",
            guidance_scale=cfg.sample_guidance,
        )
        path = out / "samples" / f"step-{step:07d}.png"
        save_grid(path, images, ncol=cols)
        return path

    # Training loop.
    batches = StepBatches(
        len(data),
        cfg.batch_size,
        seed=cfg.seed,
        rank=env.rank,
        world=env.world_size,
        start_step=step,
        end_step=cfg.total_steps,
    )
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=batches,
        num_workers=0 if data.cache is not None else cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    gen = torch.Generator(device=device)
    log_path = out / "train_log.jsonl"
    bar = tqdm(total=cfg.total_steps, initial=step, desc="train-generator", disable=not (progress and env.is_main))
    t_start = last_t = time.perf_counter()
    window: list[float] = []
    last_log_step, stopped_early, losses = step, False, []
    denoiser.train()
    for y, labels in loader:
        y, labels = y.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        gen.manual_seed(stable_seed("generator-step", cfg.seed, step, env.rank))
        drop = torch.rand(labels.shape[0], generator=gen, device=device) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
        sigma = sample_training_sigma(labels.shape[0], generator=gen, device=device, P_mean=cfg.P_mean, P_std=cfg.P_std)
        noise = torch.randn(y.shape, generator=gen, device=device)
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(y, labels, sigma, noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for p in objective.parameters():  # a rare inf/nan gradient must not poison Adam's moments (as EDM)
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
        optimizer.step()
        step += 1
        if ema_gamma is not None:
            decay = power_ema_beta(ema_gamma, step)
        else:
            decay = min(cfg.ema_decay, (1 + step) / (10 + step)) if cfg.ema_warmup else cfg.ema_decay
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), denoiser.parameters()):
                p_ema.lerp_(p.detach(), 1 - decay)
            for _, gamma, net in posthoc:
                keep = power_ema_beta(gamma, step)
                for p_ema, p in zip(net.parameters(), denoiser.net.parameters()):
                    p_ema.lerp_(p.detach(), 1 - keep)
        window.append(loss.item())
        losses.append(window[-1])
        bar.update(1)

        # Log, stop on duration, checkpoint, sample.
        last = step >= cfg.total_steps
        if step % cfg.log_every == 0 or last:
            stats = torch.tensor([sum(window), len(window), time.perf_counter() - t_start], dtype=torch.float64)
            if env.distributed:
                flag = torch.tensor([float(cfg.duration is not None and stats[2] >= cfg.duration)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every process stops at the same step
                dist.all_reduce(stats[:2])
                stopped_early = bool(flag.item()) and not last
            else:
                stopped_early = cfg.duration is not None and float(stats[2]) >= cfg.duration and not last
            now = time.perf_counter()
            record = {
                "step": step,
                "loss": float(stats[0] / stats[1]),
                "lr": lr,
                "ema_decay": decay,
                "steps_per_s": (step - last_log_step) / max(now - last_t, 1e-9),
                "elapsed_s": float(stats[2]),
                "world_size": env.world_size,
            }
            last_t, last_log_step, window = now, step, []
            if env.is_main:
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
        end = last or stopped_early
        if env.is_main:
            if end or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                checkpoint(out / CHECKPOINT_NAME)
            if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                checkpoint(out / f"generator-{step:07d}.pt")
            if posthoc and (end or step % cfg.posthoc_every == 0):
                posthoc_snapshot()
            if end or (cfg.sample_every and step % cfg.sample_every == 0):
                sample_grid()
                denoiser.train()
        if end:
            break
    bar.close()
    barrier(env)
    cleanup(env)
    return {
        "step": step,
        "rank": env.rank,
        "world_size": env.world_size,
        "losses": losses,
        "checkpoint": str(out / CHECKPOINT_NAME),
        "num_classes": num_classes,
        "stopped_early": stopped_early,
        "final_loss": float(np.mean(losses[-cfg.log_every :])) if losses else math.nan,
    }
