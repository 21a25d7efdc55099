"""ScoreMix training data: the team's real RecordIO folder plus the synthetic shards of a generation manifest.

Labels are FINAL everywhere: real classes are ``0 .. C_real-1``, synthetic
identities already carry ``C_real + n`` in their shards, so nothing here adds an offset. Every
source is checked against the manifest when the dataset is built (image counts, label ranges) and
every sample's label against ``[0, num_classes)`` when it is read, because an out-of-range label
does not crash the host's margin loss: it silently trains on garbage.

An epoch is always ``num_image`` samples (the host derives its LR schedule from that number):
- ``ratio=None``: every real and synthetic image once per epoch;
- ``0 < ratio < 1``: ``round(ratio * num_image)`` samples drawn from the synthetic images and the rest
  from the real ones, drawn anew each epoch (without replacement while a pool lasts, then full passes).
  The draw depends only on ``(seed, epoch)``: the dataset length never changes and the
  DistributedSampler's index -> (source, image) map is what moves, so every rank sees the same map
  and the sampler's partition across ranks stays exact. ``set_epoch`` is called by the training
  loader's sampler (``EpochSampler`` in loader.py) whenever the host calls ``sampler.set_epoch``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..recordio import RecordIOError
from ..recordio.dataset import FaceRecDataset
from ..synthesis.manifest import Manifest, ManifestError, check_provenance
from .augment import build_augmentation, chain


def _draw(pool: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices into range(pool): whole shuffled passes, then a partial pass without replacement."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pool == 0:
        raise InputError(f"cannot draw {n} samples from an empty pool")
    full, rest = divmod(n, pool)
    parts = [rng.permutation(pool) for _ in range(full)]
    parts.append(rng.choice(pool, size=rest, replace=False))
    return np.concatenate(parts).astype(np.int64)


class ScoreMixDataset(torch.utils.data.Dataset):
    """``(image float32 [3,112,112] in [-1,1], label int64)`` over real + synthetic images.

    ``manifest``: the generation ``manifest.json`` (path) or an already read ``Manifest``.
    ``transform``: applied to every image (real and synthetic) first, e.g. ``DegradeResize``;
    ``aug_real`` / ``aug_synthetic``: then per source (a registered name, a serialised albumentations
    dict, a callable or None); then the host's random flip and normalisation.
    """

    def __init__(
        self,
        real_root: str | os.PathLike,
        manifest: str | os.PathLike | Manifest,
        *,
        ratio: float | None = None,
        aug_real: Any = None,
        aug_synthetic: Any = None,
        transform=None,
        seed: int = 2048,
        verify: bool = True,
    ):
        if not isinstance(manifest, Manifest):
            # An interrupted generation is refused: num_classes would count identities that have no images.
            manifest = Manifest.read(manifest).validate() if verify else Manifest.read(manifest)
        self.manifest = manifest
        m = self.manifest
        self.real_root = Path(real_root)
        self.num_classes = m.num_classes
        self.seed = int(seed)
        if ratio is not None and not (
            isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio < 1
        ):
            raise InputError(f"ratio must be None or a number in (0, 1), got {ratio!r}")
        self.ratio = ratio
        t_real = chain(transform, build_augmentation(aug_real, key="config.scoremix.aug_real"))
        t_syn = chain(transform, build_augmentation(aug_synthetic, key="config.scoremix.aug_synthetic"))

        # Sources: the real folder, then each shard in manifest order.
        check_provenance(m, real_dir=self.real_root, what="the real folder")  # another dataset: an error
        if m.real_rec is not None and m.real_rec.resolve() != self.real_root.resolve():
            # Not an error: a dataset copied elsewhere is still the same data (the counts are checked below).
            warnings.warn(
                f"{m.path} was generated for the real folder {m.real_rec}; training reads {self.real_root}",
                stacklevel=2,
            )
        real = FaceRecDataset(self.real_root, transform=t_real)
        self._check_source(
            real, 0, m.real_num_classes, m.real_num_image, f"the real folder {self.real_root}", "real.num_image"
        )
        if real.num_classes != m.real_num_classes:
            raise RecordIOError(
                f"the real folder's property says {real.num_classes} classes, the manifest "
                f"{m.path} says real.num_classes = {m.real_num_classes}: the manifest was made "
                "for another real folder",
                file=self.real_root / "property",
            )
        self.sources: list[FaceRecDataset] = [real]
        for shard in m.shards:
            ds = FaceRecDataset(shard.path, transform=t_syn)
            self._check_source(
                ds,
                shard.labels[0],
                shard.labels[1],
                shard.images,
                f"shard {shard.path}",
                f"shards[{shard.index}].images",
            )
            self.sources.append(ds)

        sizes = np.array([len(s) for s in self.sources], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_real = int(sizes[0])
        self.num_synthetic = int(sizes[1:].sum())
        self.num_image = self.num_real + self.num_synthetic
        if self.num_synthetic != m.num_synthetic_images:
            raise InputError(
                f"{m.path}: the shards hold {self.num_synthetic} images, "
                f"num_synthetic_images says {m.num_synthetic_images}"
            )
        self.pool_labels = np.concatenate([s.labels for s in self.sources]).astype(np.int64)
        if ratio is not None:
            self.num_synthetic_per_epoch = int(round(ratio * self.num_image))
            if self.num_synthetic_per_epoch and not self.num_synthetic:
                raise InputError(f"ratio {ratio} asks for synthetic samples but {m.path} lists no synthetic images")
            if self.num_image - self.num_synthetic_per_epoch and not self.num_real:
                raise InputError(f"ratio {ratio} asks for real samples but {self.real_root} holds no images")
        else:
            self.num_synthetic_per_epoch = self.num_synthetic
        self.epoch = -1
        self._index = np.arange(self.num_image, dtype=np.int64)
        self.set_epoch(0)

    def _check_source(self, ds: FaceRecDataset, lo: int, hi: int, count: int, what: str, count_key: str) -> None:
        check_source(
            ds.labels,
            count,
            lo,
            hi,
            what=what,
            count_key=count_key,
            manifest=self.manifest,
            rec_path=ds.folder.rec_path,
            image_keys=ds.folder.image_keys,
        )

    # Epochs.

    def set_epoch(self, epoch: int) -> None:
        """Fix the index -> image map for ``epoch`` (a no-op without a ratio: every image once)."""
        epoch = int(epoch)
        if epoch == self.epoch:
            return
        self.epoch = epoch
        if self.ratio is None:
            return
        rng = np.random.default_rng([self.seed, epoch])
        n_syn = self.num_synthetic_per_epoch
        real = _draw(self.num_real, self.num_image - n_syn, rng)
        syn = self.num_real + _draw(self.num_synthetic, n_syn, rng)
        self._index = np.concatenate([real, syn])

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label under the current epoch's map (int64, length ``num_image``)."""
        return self.pool_labels[self._index]

    @property
    def is_synthetic(self) -> np.ndarray:
        """Whether each sample of the current epoch comes from a synthetic shard."""
        return self._index >= self.num_real

    # Samples.

    def __len__(self) -> int:
        return self.num_image

    def locate(self, index: int) -> tuple[int, int]:
        """Sample index -> (source number: 0 real, 1.. shards; image number inside that source)."""
        j = int(self._index[index])
        s = int(np.searchsorted(self._starts, j, side="right")) - 1
        return s, j - int(self._starts[s])

    def __getitem__(self, index: int):
        s, i = self.locate(index)
        x, y = self.sources[s][i]
        label = int(y)
        if not 0 <= label < self.num_classes:
            src = self.sources[s]
            raise RecordIOError(
                f"label {label} outside [0, num_classes={self.num_classes})",
                file=src.folder.rec_path,
                key=int(src.folder.image_keys[i]),
            )
        return x, y

    def summary(self) -> Mapping[str, Any]:
        return {
            "num_classes": self.num_classes,
            "num_image": self.num_image,
            "num_real": self.num_real,
            "num_synthetic": self.num_synthetic,
            "ratio": self.ratio,
            "synthetic_per_epoch": self.num_synthetic_per_epoch,
            "shards": len(self.sources) - 1,
        }


def check_source(
    labels,
    count: int,
    lo: int,
    hi: int,
    *,
    what: str,
    count_key: str,
    manifest: Manifest,
    rec_path=None,
    image_keys=None,
) -> None:
    """A folder the manifest describes holds ``count`` images with labels in ``[lo, hi)`` (final labels)."""
    labels = np.asarray(labels)
    if len(labels) != count:
        raise ManifestError(f"{manifest.path}: {count_key} = {count}, but {what} holds {len(labels)} images")
    bad = (labels < lo) | (labels >= hi)
    if bad.any():
        i = int(np.argmax(bad))
        key = None if image_keys is None else int(image_keys[i])
        raise RecordIOError(
            f"label {int(labels[i])} of image {i} is outside [{lo}, {hi}) that the manifest "
            f"{manifest.path} gives {what} (labels are final: no offset is added)",
            file=rec_path,
            key=key,
        )
