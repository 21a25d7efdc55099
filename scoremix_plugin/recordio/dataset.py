"""The torch Dataset over a RecordIO folder: the same samples as arcface_torch's MXFaceDataset, without mxnet.

Per sample: decode to RGB uint8, optional ``transform`` (augmentation, a resize), random
horizontal flip with probability 0.5 drawn from torch's generator (as torchvision's
RandomHorizontalFlip does, so DataLoader worker seeding applies), then ToTensor + Normalize(0.5, 0.5)
computed with the same float32 operations: ``(x / 255 - 0.5) / 0.5`` in [-1, 1].
The label is the header label (first value of a list), as a 0-d int64 tensor.

The `.rec` is memory-mapped on first use in each process; pickling the dataset (DataLoader workers
under spawn / forkserver) carries the index and labels, never an open map.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .folder import FaceRecFolder
from .format import RecordIOError


class FaceRecDataset(torch.utils.data.Dataset):
    """``(image float32 [3, S, S] in [-1, 1], label int64)`` for every image of a RecordIO folder."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        flip: bool = True,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        image_size: int | None = 112,
    ):
        self.root = Path(root)
        self.flip = flip
        self.transform = transform
        self.image_size = image_size  # checked after transform; None accepts any size
        self.folder = FaceRecFolder(self.root)
        self.labels: np.ndarray = self.folder.labels  # int64, one per sample
        self.num_classes = self.folder.num_classes
        self.folder.close()  # reopened lazily where samples are read (each worker maps the file itself)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        img = self.folder.image(index)
        if self.transform is not None:
            img = self.transform(img)
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{self.root}: transform must return RGB uint8 HxWx3, got {img.dtype} {img.shape}")
        if self.image_size is not None and img.shape[:2] != (self.image_size, self.image_size):
            key = int(self.folder.image_keys[index])
            raise RecordIOError(
                f"image is {img.shape[0]}x{img.shape[1]}, expected {self.image_size}x{self.image_size}",
                file=self.folder.rec_path,
                key=key,
                offset=self.folder.reader.offset(key),
            )
        if self.flip and torch.rand(1) < 0.5:
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
        x = x.to(torch.float32).div(255).sub_(0.5).div_(0.5)
        return x, torch.tensor(int(self.labels[index]), dtype=torch.long)
