"""Training data for a recogniser config, and the training DataLoader recipe.

``build_train_dataset(cfg)`` turns a recogniser config into a Dataset: the host's RecordIO folder
(``cfg.rec``) or, with ``cfg.dataset == "scoremix"``, the real folder plus the synthetic shards of
``cfg.scoremix.manifest``, checked against ``cfg.num_classes`` / ``cfg.num_image`` before any
training starts (a wrong ``num_image`` silently bends the host's LR schedule; a wrong
``num_classes`` silently trains on out-of-range labels).

``make_train_loader`` is the DataLoader recipe (the recogniser trainer shares its ``EpochSampler`` and
``seed_worker``): a DistributedSampler
seeded with ``seed`` (the host calls ``sampler.set_epoch``), workers seeded with
``num_workers * rank + worker_id + seed`` like the host, ``drop_last`` so every batch has the same
size, and batches already on the training device, because ``train_v2.py`` never moves them itself
(its own DataLoaderX does).

The host's ``dataset.get_dataloader`` signature over these is ``integration/loader.py``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import ConfigError, validate_scoremix_block
from ..errors import InputError
from .augment import DegradeResize

# Datasets.


def _degrade(cfg: Mapping[str, Any]):
    n = cfg.get("image_degrade")
    return None if n is None else DegradeResize(n)


def check_against_manifest(cfg: Mapping[str, Any], manifest, source: str = "config") -> None:
    """``cfg.num_classes`` / ``cfg.num_image`` must equal the manifest's totals."""
    for key, expected, how in (
        (
            "num_classes",
            manifest.num_classes,
            f"num_classes (real {manifest.real_num_classes} + synthetic {manifest.num_synthetic_classes})",
        ),
        (
            "num_image",
            manifest.num_image,
            f"real.num_image {manifest.real_num_image} + num_synthetic_images {manifest.num_synthetic_images}",
        ),
    ):
        got = cfg.get(key)
        if got != expected:
            raise ConfigError(
                f"{source}: config.{key} = {got!r} but the manifest {manifest.path} gives "
                f"{expected} ({how}); set config.{key} = {expected}"
            )


def build_train_dataset(cfg: Mapping[str, Any], *, source: str | None = None) -> Dataset:
    """The training Dataset a recogniser config describes (see the module docstring)."""
    from ..recordio.dataset import FaceRecDataset

    source = source or "recogniser config"
    degrade = _degrade(cfg)
    if cfg.get("dataset", "rec") in (None, "rec"):
        if cfg.get("rec") in (None, "synthetic"):
            raise ConfigError(f"{source}: config.rec must name a RecordIO folder, got {cfg.get('rec')!r}")
        return FaceRecDataset(cfg["rec"], transform=degrade)
    if cfg.get("dataset") != "scoremix":
        raise ConfigError(f"{source}: config.dataset must be 'rec' or 'scoremix', got {cfg.get('dataset')!r}")

    from ..synthesis.manifest import Manifest
    from .scoremix_dataset import ScoreMixDataset

    block = validate_scoremix_block(cfg, source=source)
    if not cfg.get("rec"):
        raise ConfigError(
            f"{source}: config.rec must name the real RecordIO folder (the host reads its .bin files from there too)"
        )
    manifest = Manifest.read(block.manifest).validate()  # a complete run only: checksums, labels, totals
    check_against_manifest(cfg, manifest, source)
    return ScoreMixDataset(
        cfg["rec"],
        manifest,
        ratio=block.ratio,
        aug_real=block.aug_real,
        aug_synthetic=block.aug_synthetic,
        transform=degrade,
        seed=int(cfg.get("seed", 2048)),
    )


# The loader.


def seed_worker(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """The host's worker seeding: ``num_workers * rank + worker_id + seed`` for numpy, random and torch."""
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


class EpochSampler(DistributedSampler):
    """DistributedSampler that also tells the dataset the epoch (ScoreMixDataset's per-epoch draw)."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class DeviceDataLoader(DataLoader):
    """A DataLoader whose batches arrive on ``device`` (still a DataLoader: the host checks isinstance)."""

    def __init__(self, *args, device: torch.device | str = "cpu", **kwargs):
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)

    def __iter__(self):
        it = super().__iter__()
        if self.device.type == "cpu":
            yield from it
            return
        for batch in it:
            yield tuple(t.to(self.device, non_blocking=True) for t in batch)


def make_train_loader(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int, rank: int, world: int, device: torch.device | str
) -> DeviceDataLoader:
    """The training DataLoader (both trainers): sharded, seeded, fixed batch, batches on ``device``."""
    if len(dataset) < batch_size * world:
        raise InputError(f"{len(dataset)} samples give no full batch of {batch_size} on each of {world} process(es)")
    device = torch.device(device)
    sampler = EpochSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    return DeviceDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        # Workers are re-created each epoch (no persistent_workers), so they see the dataset's epoch map.
        worker_init_fn=functools.partial(seed_worker, num_workers=num_workers, rank=rank, seed=seed),
        device=device,
    )
