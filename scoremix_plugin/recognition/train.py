"""Train a recogniser from an arcface_torch config: the host's ``train_v2.py`` loop, on CPU or GPU.

One process (CPU or one GPU)::

    scoremix train configs/toy_r18.py

Several processes (gloo on CPU, nccl on GPU; the class weights are split across ranks)::

    torchrun --nproc_per_node=2 -m scoremix_plugin train configs/toy_r18.py

Host recipes run as they are (every key of the host's ``configs/base.py`` keeps its meaning);
scoremix adds ``dataset``/``scoremix`` (real + synthetic data), ``grad_clip``, ``image_degrade``,
``max_steps``, ``eval_batch_size``, ``device`` and ``log_json`` (see ``scoremix_plugin.config``).

Outputs in ``cfg.output``: ``model.pt`` (the backbone state dict, host format) after every epoch and
at the end; ``checkpoint_rank{r}.pt`` (ours, resumable exactly, also mid-epoch); the host's
``checkpoint_gpu_{r}.pt`` when ``save_all_states``; ``cfg.log_json`` (JSON lines: loss, lr,
throughput, verification).

Why one long module: the training loop reads top to bottom as one function (set-up, resume, the step,
logging, checkpoints, verification), like the host's ``train_v2.py`` it mirrors.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from easydict import EasyDict as edict

from scoremix_plugin.config import ConfigError, check_recogniser_config
from scoremix_plugin.errors import CheckpointError, InputError, MissingInputError
from scoremix_plugin.io_utils import load_torch_safe, save_torch_atomic

CHECKPOINT_FORMAT = "scoremix-recogniser/1"
HOST_CHECKPOINT_KEYS = (
    "epoch",
    "global_step",
    "state_dict_backbone",
    "state_dict_softmax_fc",
    "state_optimizer",
    "state_lr_scheduler",
)


def checkpoint_path(output: str | Path, rank: int) -> Path:
    """Our resumable checkpoint of one rank (each rank holds its own slice of the class weights)."""
    return Path(output) / f"checkpoint_rank{rank}.pt"


def host_checkpoint_path(output: str | Path, rank: int) -> Path:
    return Path(output) / f"checkpoint_gpu_{rank}.pt"


def polynomial_warmup_factor(step: int, warmup_steps: int, total_steps: int, power: float = 2.0) -> float:
    """The host's PolynomialLRWarmup (closed form): linear warm-up to the base lr, then ``(1 - progress)^power``.

    One difference: the host's chained scheduler returns the base lr (not 0) at step 0 of a warm-up; here
    step 0 is 0, as its own closed form says.
    """
    if warmup_steps > 0 and step <= warmup_steps:
        return step / warmup_steps
    progress = (min(total_steps, step) - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** power


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _ResumableSampler(torch.utils.data.Sampler):
    """The loader's epoch sampler, whose first epoch after a mid-epoch resume skips the batches already done.

    Skipping happens on indices, so no skipped image is decoded and no random flip is drawn for it.
    """

    def __init__(self, inner: torch.utils.data.Sampler, batch_size: int):
        self.inner, self.batch_size, self.skip_batches = inner, batch_size, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[int]:
        indices = list(self.inner)
        return iter(indices[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip_batches * self.batch_size


def _rng_state(device: torch.device) -> dict[str, Any]:
    # Plain tensors and numbers only, so the checkpoint loads with weights_only=True.
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(gauss),
        "python_version": int(version),
        "python_state": list(py_state),
        "python_gauss": py_gauss,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(state["python_state"]), state["python_gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _plain_config(cfg: dict) -> dict:
    """The config as JSON-able plain data (tuples -> lists; anything else -> str)."""
    return json.loads(json.dumps(dict(cfg), default=str))


def _cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def train(cfg: edict | str | os.PathLike, *, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Train per ``cfg`` (a config file, or a merged config: ``load_recogniser_config`` / ``recogniser_config``;
    ``overrides`` win, as in ``train_generator``). Returns a summary.

    The summary (rank 0; others get theirs without verification) holds ``global_step``, ``epoch``,
    ``steps_per_epoch``, ``total_step``, ``model`` (path) and ``verification`` (target -> numbers).
    """
    from torch.nn.parallel import DistributedDataParallel

    from scoremix_plugin.config import load_recogniser_config

    if isinstance(cfg, (str, os.PathLike)):
        cfg = load_recogniser_config(cfg)
    if overrides or not isinstance(cfg, edict):
        cfg = edict({**cfg, **overrides})

    from scoremix_plugin.backbones import get_backbone
    from scoremix_plugin.data.loader import EpochSampler, build_train_dataset, seed_worker
    from scoremix_plugin.distributed import barrier, init_distributed
    from scoremix_plugin.recognition.losses import MarginSoftmaxHead, margin_loss_from_config

    # Section: processes, seeds, output folder (config values checked first: nothing is written for a bad one).
    check_recogniser_config(cfg, source=str(cfg.get("config_file") or "config"))
    env = init_distributed(cfg.get("device"))
    device, rank, world = env.device, env.rank, env.world_size
    use_cuda = device.type == "cuda"
    _seed_everything(int(cfg.seed))
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels (host)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    fp16 = bool(cfg.fp16) and use_cuda
    if cfg.fp16 and not use_cuda:
        warnings.warn("config.fp16 is True but training runs on CPU: training in float32", stacklevel=2)
    if float(cfg.sample_rate) != 1.0:
        warnings.warn(
            f"config.sample_rate={cfg.sample_rate}: negative-class sampling is not implemented; every class "
            "takes part in every step (sample_rate 1, the host's default)",
            stacklevel=2,
        )
    ignored = [k for k in ("dali", "dali_aug", "using_wandb", "save_artifacts") if cfg.get(k)]
    if ignored:
        # DALI only decodes faster (same images; its extra augmentation is not reproduced) and wandb is a
        # logging sink: the run is still the recipe's run, so warn instead of refusing the recipe.
        warnings.warn(
            f"config keys {ignored} are set but not supported by this trainer: ignored (logs go to config.log_json)",
            stacklevel=2,
        )
    batch_size, grad_acc = int(cfg.batch_size), int(cfg.gradient_acc)
    for key in ("batch_size", "gradient_acc", "verbose", "frequent", "num_epoch"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"config.{key} must be >= 1, got {cfg[key]!r}")

    # Section: verification targets (checked before any training: a missing file is an error).
    val_bins = {}
    if not Path(cfg.rec).exists():  # said first: else a missing folder reads as a val_targets problem
        raise MissingInputError(
            f"config.rec {cfg.rec} does not exist (the RecordIO training data: train.rec, train.idx, property)"
        )
    for target in cfg.val_targets or []:
        path = Path(cfg.rec) / f"{target}.bin"
        if not path.is_file():
            raise MissingInputError(f"config.val_targets names {target!r} but {path} does not exist")
        val_bins[target] = path

    # Section: data.
    dataset = build_train_dataset(cfg)
    labels = getattr(dataset, "labels", None)
    if labels is not None and len(labels):
        lo, hi = int(np.min(labels)), int(np.max(labels))
        if lo < 0 or hi >= int(cfg.num_classes):
            raise ConfigError(f"{cfg.rec}: labels span [{lo}, {hi}] but config.num_classes is {cfg.num_classes}")
    if len(dataset) != int(cfg.num_image):
        # The host never checks this; it only bends the LR schedule. Say so loudly.
        warnings.warn(
            f"config.num_image={cfg.num_image} but the dataset at {cfg.rec} has {len(dataset)} images; "
            "the LR schedule follows config.num_image (as in the host)",
            stacklevel=2,
        )
    # The same sampling as the host and our host loader: shuffled with seed + epoch, padded to a multiple
    # of the world size, and the dataset told the epoch (ScoreMix's per-epoch synthetic draw).
    sampler = _ResumableSampler(
        EpochSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=int(cfg.seed)), batch_size
    )
    num_workers = int(cfg.num_workers)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=use_cuda,
        drop_last=True,  # the head's all-gather needs the same batch on every rank, every step
        worker_init_fn=functools.partial(seed_worker, num_workers=num_workers, rank=rank, seed=int(cfg.seed)),
        # Its own generator: creating an iterator must not consume the global RNG, which draws the flips
        # (num_workers=0) and is restored on resume.
        generator=torch.Generator().manual_seed(int(cfg.seed) + rank),
        persistent_workers=False,
    )
    steps_per_epoch = len(sampler.inner) // batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{cfg.rec}: {len(dataset)} images over {world} process(es) give no full batch of {batch_size}"
        )

    # Section: networks.
    backbone = get_backbone(cfg.network, num_features=int(cfg.embedding_size), fp16=fp16, dropout=0.0).to(device)
    head = MarginSoftmaxHead(
        margin_loss_from_config(cfg.margin_list, float(cfg.interclass_filtering_threshold)),
        int(cfg.embedding_size),
        int(cfg.num_classes),
        rank=rank,
        world_size=world,
        fp16=fp16,
        seed=int(cfg.seed),
    ).to(device)
    model = backbone
    if env.distributed:
        # Each rank keeps its own BN statistics after the start, as the host's broadcast_buffers=False
        # (model.pt is rank 0's). Newer torch names the switch forward_sync_buffers.
        sync = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else "broadcast_buffers"
        )
        model = DistributedDataParallel(backbone, device_ids=[device.index] if use_cuda else None, **{sync: False})
    model.train()
    head.train()

    # Section: optimiser and LR schedule (steps counted like the host: num_image // global batch * epochs).
    params = [{"params": backbone.parameters()}, {"params": head.parameters()}]  # head last, as the host
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=float(cfg.lr), momentum=float(cfg.momentum), weight_decay=float(cfg.weight_decay)
        )
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    else:
        raise ConfigError(f"config.optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")
    total_batch = batch_size * world
    warmup_step = int(cfg.num_image) // total_batch * int(cfg.warmup_epoch)
    total_step = int(cfg.num_image) // total_batch * int(cfg.num_epoch)
    if total_step <= 0:
        raise ConfigError(
            f"config: num_image {cfg.num_image} // (batch_size {batch_size} x {world} processes) x num_epoch "
            f"{cfg.num_epoch} gives no training step"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: polynomial_warmup_factor(step, warmup_step, total_step, power=2.0)
    )
    scaler = torch.amp.GradScaler("cuda", growth_interval=100, enabled=fp16)
    grad_clip = cfg.get("grad_clip")
    max_steps = cfg.get("max_steps")

    # Section: resume.
    start_epoch, global_step, step_in_epoch = 0, 0, 0
    if cfg.resume:
        ours, host = checkpoint_path(output, rank), host_checkpoint_path(output, rank)
        if ours.is_file():
            ck = load_torch_safe(ours, map_location=device)
            if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
                found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
                raise CheckpointError(
                    f"{ours}: not a scoremix recogniser checkpoint (found {found!r}, expected "
                    f"format {CHECKPOINT_FORMAT!r})"
                )
            if ck["world_size"] != world or ck["num_classes"] != int(cfg.num_classes):
                raise InputError(
                    f"{ours}: made with {ck['world_size']} process(es) and {ck['num_classes']} classes; this run has "
                    f"{world} and {cfg.num_classes} (the class weights are split per process)"
                )
            backbone.load_state_dict(ck["backbone"])
            head.load_state_dict(ck["head"])
            opt.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            scaler.load_state_dict(ck["scaler"])
            _set_rng_state(ck["rng"], device)
            start_epoch, global_step, step_in_epoch = ck["epoch"], ck["global_step"], ck["step_in_epoch"]
        elif host.is_file():
            ck = load_torch_safe(host, map_location=device)
            missing = [k for k in HOST_CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
            if missing:
                raise CheckpointError(f"{host}: not a host checkpoint_gpu_*.pt (lacks {missing})")
            backbone.load_state_dict(ck["state_dict_backbone"])
            head.load_state_dict(ck["state_dict_softmax_fc"])
            opt.load_state_dict(ck["state_optimizer"])
            scheduler.load_state_dict(ck["state_lr_scheduler"])
            start_epoch, global_step = int(ck["epoch"]), int(ck["global_step"])
        else:
            raise MissingInputError(f"config.resume is True but neither {ours} nor {host} exists")
        del ck

    # Section: logging and verification helpers.
    log_path = output / (cfg.log_json or "train_log.jsonl")
    # A resumed run appends to its log; a fresh run in the same folder starts a new one.
    log_file = open(log_path, "a" if cfg.resume else "w", encoding="utf-8") if env.is_main else None  # noqa: SIM115
    bar = None
    if env.is_main and progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total_step if max_steps is None else min(total_step, int(max_steps)),
            initial=global_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )

    def log(record: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    verification: dict[str, Any] = {}

    def verify() -> None:
        nonlocal verification
        if not env.is_main or not val_bins:
            return
        from scoremix_plugin.verification.evaluate import TorchEmbedder, verify_bins

        results = verify_bins(
            TorchEmbedder(backbone, device), val_bins, batch_size=int(cfg.eval_batch_size), progress=False
        )
        backbone.train()
        verification = {}
        for target, r in results.items():
            verification[target] = {"accuracy": float(r.accuracy_mean), "std": float(r.accuracy_std), "xnorm": r.xnorm}
            log({"event": "verify", "step": global_step, "target": target, **verification[target]})
            msg = (
                f"[{target}][{global_step}] Accuracy-Flip: {r.accuracy_mean:.5f}+-{r.accuracy_std:.5f} "
                f"XNorm: {r.xnorm:.3f}"
            )
            (bar.write if bar is not None else print)(msg)

    def save(epoch: int, step_in_epoch: int) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,  # the epoch to run next (as the host's "epoch": completed epochs)
            "global_step": global_step,
            "step_in_epoch": step_in_epoch,  # batches of `epoch` already done (0 at an epoch boundary)
            "rank": rank,
            "world_size": world,
            "num_classes": int(cfg.num_classes),
            "class_start": head.class_start,
            "backbone": _cpu_state_dict(backbone),
            "head": _cpu_state_dict(head),
            "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(device),
            "config": _plain_config(cfg),
        }
        save_torch_atomic(state, checkpoint_path(output, rank))
        if cfg.save_all_states:
            save_torch_atomic(
                {
                    "epoch": epoch,
                    "global_step": global_step,
                    "state_dict_backbone": state["backbone"],
                    "state_dict_softmax_fc": state["head"],
                    "state_optimizer": state["optimizer"],
                    "state_lr_scheduler": state["scheduler"],
                },
                host_checkpoint_path(output, rank),
            )
        if env.is_main:
            save_torch_atomic(state["backbone"], output / "model.pt")

    if env.is_main:
        log(
            {
                "event": "start",
                "world_size": world,
                "device": str(device),
                "steps_per_epoch": steps_per_epoch,
                "total_step": total_step,
                "warmup_step": warmup_step,
                "global_step": global_step,
                "config": _plain_config(cfg),
            }
        )

    # Section: training loop.
    loss_sum, loss_n, window_start, window_steps = 0.0, 0, time.perf_counter(), 0
    stopped = max_steps is not None and global_step >= int(max_steps)
    epoch = start_epoch
    for epoch in range(start_epoch, int(cfg.num_epoch)):
        if stopped:
            break
        sampler.set_epoch(epoch, skip_batches=step_in_epoch if epoch == start_epoch else 0)
        done_in_epoch = step_in_epoch if epoch == start_epoch else 0
        for img, local_labels in loader:
            global_step += 1
            done_in_epoch += 1
            img = img.to(device, non_blocking=True)
            local_labels = local_labels.to(device, non_blocking=True)
            loss = head(model(img), local_labels)
            scaler.scale(loss / grad_acc).backward()  # a no-op scale when fp16 is off
            if global_step % grad_acc == 0:
                scaler.unscale_(opt)
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(backbone.parameters(), float(grad_clip))
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # The schedule counts global steps, accumulation or not (host), so with gradient_acc > 1 it
                # steps before the first optimiser step; torch's warning about that order is expected.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                scheduler.step()

            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {global_step} (epoch {epoch})")
            loss_sum, loss_n, window_steps = loss_sum + loss_value, loss_n + 1, window_steps + 1
            lr = scheduler.get_last_lr()[0]
            if bar is not None:
                bar.update(1)
            if global_step % int(cfg.frequent) == 0 and env.is_main:
                elapsed = time.perf_counter() - window_start
                record = {
                    "event": "train",
                    "step": global_step,
                    "epoch": epoch,
                    "loss": loss_sum / loss_n,
                    "lr": lr,
                    "img_per_s": window_steps * total_batch / max(elapsed, 1e-9),
                }
                if fp16:
                    record["grad_scale"] = scaler.get_scale()
                log(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}", ips=f"{record['img_per_s']:.0f}")
                loss_sum, loss_n, window_start, window_steps = 0.0, 0, time.perf_counter(), 0
            if global_step % int(cfg.verbose) == 0:
                verify()
            if max_steps is not None and global_step >= int(max_steps):
                stopped = True
                break
        if stopped and done_in_epoch < steps_per_epoch:
            save(epoch, done_in_epoch)  # mid-epoch stop: resume skips the batches already done
        else:
            save(epoch + 1, 0)
        barrier(env)

    # Section: the end.
    if global_step % int(cfg.verbose) != 0 or not verification:
        verify()  # unlike the host, always score the final model
    if env.is_main:
        save_torch_atomic(_cpu_state_dict(backbone), output / "model.pt")
    summary = {
        "global_step": global_step,
        "epoch": epoch,
        "steps_per_epoch": steps_per_epoch,
        "total_step": total_step,
        "world_size": world,
        "model": str(output / "model.pt"),
        "verification": verification,
    }
    if env.is_main:
        log({"event": "end", **summary})
    if bar is not None:
        bar.close()
    if log_file is not None:
        log_file.close()
    barrier(env)
    return summary
