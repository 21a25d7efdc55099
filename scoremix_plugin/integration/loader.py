"""The host's ``dataset.get_dataloader`` for scoremix configs, over ``scoremix_plugin.data.loader``.

``get_dataloader`` has the host's signature (both the current one with ``dali_aug`` and the older one
without); the launcher installs it into the host's ``dataset`` module with the merged host config bound
(``functools.partial(get_dataloader, cfg=cfg)``). The data and the DataLoader recipe themselves live in
the data layer, below both trainers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import ConfigError
from ..data.loader import DeviceDataLoader, build_train_dataset, make_train_loader


def _parse_host_args(args: tuple, kwargs: dict) -> dict[str, Any]:
    """The host's trailing arguments: ``(dali, dali_aug, seed, num_workers)`` or older ``(dali, seed, num_workers)``."""
    out: dict[str, Any] = {"dali": False, "dali_aug": False, "seed": 2048, "num_workers": 2}
    args = list(args)
    if len(args) > 4:
        raise TypeError(f"get_dataloader takes at most 7 positional arguments, got {3 + len(args)}")
    names = ["dali", "dali_aug", "seed", "num_workers"]
    if len(args) >= 2 and not isinstance(args[1], bool) and isinstance(args[1], (int, np.integer)):
        # Older host: the argument after dali is the seed (an int), not dali_aug (a bool).
        if len(args) == 4:
            raise TypeError(
                "get_dataloader: 7 positional arguments must be (root_dir, local_rank, batch_size, "
                f"dali, dali_aug, seed, num_workers); dali_aug={args[1]!r} is not a bool"
            )
        names = ["dali", "seed", "num_workers"]
    out.update(zip(names, args))
    for k, v in kwargs.items():
        if k not in out:
            raise TypeError(f"get_dataloader got an unexpected keyword argument {k!r}")
        out[k] = v
    return out


def get_dataloader(
    root_dir: str,
    local_rank: int,
    batch_size: int,
    *args,
    cfg: Mapping[str, Any] | None = None,
    source: str | None = None,
    dataset: Dataset | None = None,
    **kwargs,
) -> DeviceDataLoader:
    """The host's ``get_dataloader`` for scoremix configs (and plain RecordIO folders without ``cfg``).

    ``cfg`` (the merged host config), ``source`` (its file, for error messages) and ``dataset`` (the
    data the launcher already built and checked from ``cfg``) are bound by the launcher.
    """
    opts = _parse_host_args(args, kwargs)
    source = source or ("recogniser config" if cfg is not None else "get_dataloader")
    if opts["dali"]:
        raise ConfigError(
            f"{source}: config.dali = True is not supported by the scoremix loader; set config.dali = False"
        )
    if cfg is not None:
        if cfg.get("rec") is not None and os.path.abspath(str(cfg["rec"])) != os.path.abspath(str(root_dir)):
            raise ConfigError(f"{source}: get_dataloader was called with {root_dir!r} but config.rec is {cfg['rec']!r}")
        if dataset is None:
            dataset = build_train_dataset(cfg, source=source)
    elif dataset is None:
        from ..recordio.dataset import FaceRecDataset

        dataset = FaceRecDataset(root_dir)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return make_train_loader(dataset, int(batch_size), int(opts["seed"]), int(opts["num_workers"]), rank, world, device)
