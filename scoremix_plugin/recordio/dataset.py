"""The torch Dataset over a RecordIO folder: the same samples as arcface_torch's MXFaceDataset, without mxnet.

Per sample: decode to RGB uint8, optional ``transform`` (augmentation, a resize), random
horizontal flip with probability 0.5 drawn from torch's generator (as torchvision's
RandomHorizontalFlip does, so DataLoader worker seeding applies), then ToTensor + Normalize(0.5, 0.5)
computed with the same float32 operations: ``(x / 255 - 0.5) / 0.5`` in [-1, 1].
The label is the header label (first value of a list), as a 0-d int64 tensor.

A garbled JPEG (libjpeg decodes it with only a "Corrupt JPEG data" / "Premature end of JPEG file" line
on stderr and fills the rest in grey) is a counted, warned skip, not an error: one damaged picture
among millions should not stop a run of days, nor be trained on as if it were a face. The sample
becomes the next image of the same identity that decodes cleanly (so the label and the batch stay as
drawn), ``garbled`` records ``{key: the decoder's line}`` (per process: each DataLoader worker counts
its own), and a :class:`RecordIOWarning` names the file, the key and the substitute, once per key.
Bytes that do not decode at all, or an identity with no clean image left, stay a RecordIOError
naming the file and the key. ``scoremix rec check --decode`` finds every garbled image before training.

The `.rec` is memory-mapped on first use in each process; pickling the dataset (DataLoader workers
under spawn / forkserver) carries the index and labels, never an open map.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .folder import FaceRecFolder
from .format import RecordIOError, RecordIOWarning, decode_image_warned


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
        self.garbled: dict[int, str] = {}  # key -> libjpeg's line, for the images skipped in this process
        self.folder.close()  # reopened lazily where samples are read (each worker maps the file itself)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """RGB uint8 of sample ``index``: its own image, or for a garbled JPEG a clean one of the same identity."""
        return training_image(self.folder, self.labels, index, self.garbled)

    def __getitem__(self, index: int):
        img = self.image(index)
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


def _decode(folder: FaceRecFolder, index: int) -> tuple[np.ndarray | None, str | None]:
    """(image, None), or (None, libjpeg's line) for a garbled JPEG; undecodable bytes raise RecordIOError."""
    key = int(folder.image_keys[index])
    try:
        img, warned = decode_image_warned(folder.jpeg(index))
    except ValueError as e:
        raise RecordIOError(str(e), file=folder.rec_path, key=key, offset=folder.reader.offset(key)) from None
    return (None, warned) if warned else (img, None)


def training_image(folder: FaceRecFolder, labels: np.ndarray, index: int, garbled: dict[int, str]) -> np.ndarray:
    """Image ``index`` of ``folder`` as RGB uint8 for training, a garbled JPEG skipped (the module's rule).

    ``garbled`` (key -> the decoder's line) is filled with the keys skipped; the first skip of a key warns.
    """
    img, warned = _decode(folder, index)
    if img is not None:
        return img
    key = int(folder.image_keys[index])
    label = int(labels[index])
    same = np.flatnonzero(labels == label)
    for j in np.roll(same, -int(np.searchsorted(same, index)) - 1):  # the next ones first, wrapping around
        if int(j) == index:
            continue
        sub, _ = _decode(folder, int(j))
        if sub is not None:
            if key not in garbled:
                garbled[key] = warned
                warnings.warn(
                    RecordIOWarning(
                        f"file {folder.rec_path}, key {key}: garbled JPEG (the decoder warned: {warned}); skipped, "
                        f"trained on key {int(folder.image_keys[j])} of the same identity (label {label}) instead; "
                        f"{len(garbled)} garbled image(s) so far in this process (scoremix rec check --decode lists "
                        "them)"
                    ),
                    stacklevel=3,
                )
            return sub
    raise RecordIOError(
        f"garbled JPEG (the decoder warned: {warned}), and no other image of identity {label} decodes cleanly",
        file=folder.rec_path,
        key=key,
        offset=folder.reader.offset(key),
    )
