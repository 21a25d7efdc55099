"""Per-source image transforms applied to RGB uint8 images before the host's flip + normalise.

Two kinds, applied in this order by the ScoreMix training data:
- ``DegradeResize(n)``: the demo's down-and-up resize (area down to n x n, back up to 112). The CPU
  demo's generator works at 32 px, so real images go through the same loss of detail; otherwise a
  recogniser could learn "blurry = synthetic" instead of identities.
- An albumentations pipeline per source (``config.scoremix.aug_real`` / ``aug_synthetic``): a name
  from ``AUGMENTATIONS`` or a serialised dict (``albumentations.to_dict`` output, read back with
  ``A.from_dict``). None means no augmentation: flip + normalise only, as the host does.

Every transform here is a small picklable object that builds its albumentations pipeline lazily in
the process that uses it (DataLoader workers under spawn receive the spec, not a live pipeline), and
seeds it from ``torch.initial_seed()``, which the training loader's ``worker_init_fn`` sets, so
augmentation is reproducible per worker. albumentations is imported only when a pipeline is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..config import ConfigError
from ..errors import InputError

Transform = Callable[[np.ndarray], np.ndarray]


def _albumentations():
    # The package otherwise checks PyPI for a newer version on import (a network call per worker).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations as A
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("augmentation needs albumentations: pip install 'scoremix-plugin[augment]'") from e
    return A


# Registered pipelines. No horizontal flip in any of them: the dataset flips afterwards, as the host does.


def _none(A):
    return A.Compose([])


def _light(A):
    # Photometric jitter, a little blur and a small affine jitter: what a face crop varies by between
    # two photos of one person, while keeping the alignment the recogniser relies on.
    return A.Compose(
        [
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.Affine(scale=(0.95, 1.05), translate_percent=(-0.03, 0.03), rotate=(-5, 5), p=0.5),
        ]
    )


def _strong(A):
    return A.Compose(
        [
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=0.8),
            A.ToGray(p=0.1),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=0.3),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.7),
            A.ImageCompression(quality_range=(40, 95), p=0.3),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.2),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25), p=0.2),
        ]
    )


AUGMENTATIONS: dict[str, Callable[[Any], Any]] = {"none": _none, "light": _light, "strong": _strong}


class Augmentation:
    """An albumentations pipeline from a registered name or a serialised dict, as a picklable callable."""

    def __init__(self, spec: str | Mapping[str, Any], *, key: str = "augmentation"):
        if isinstance(spec, str):
            if spec not in AUGMENTATIONS:
                raise ConfigError(
                    f"{key}: unknown augmentation {spec!r}; registered: {sorted(AUGMENTATIONS)} "
                    "(or give a serialised albumentations dict)"
                )
        elif isinstance(spec, Mapping):
            spec = dict(spec)
            # Accept a bare transform dict as well as the {"__version__", "transform"} wrapper to_dict writes.
            if "transform" not in spec:
                if "__class_fullname__" not in spec:
                    raise ConfigError(
                        f"{key}: a serialised albumentations dict needs 'transform' (the output of "
                        "albumentations.to_dict) or '__class_fullname__'"
                    )
                spec = {"transform": spec}
        else:
            raise ConfigError(f"{key}: expected a registered name or a serialised dict, got {type(spec).__name__}")
        self.spec = spec
        self.key = key
        self._pipeline = None
        self._pid = None

    def build(self):
        A = _albumentations()
        if isinstance(self.spec, str):
            pipeline = AUGMENTATIONS[self.spec](A)
        else:
            try:
                pipeline = A.from_dict(self.spec)
            except Exception as e:  # noqa: BLE001 - re-raised naming the config key
                raise ConfigError(f"{self.key}: albumentations could not read the serialised pipeline: {e}") from e
        return pipeline

    def _get(self):
        if self._pipeline is None or self._pid != os.getpid():
            import torch

            self._pipeline = self.build()
            if hasattr(self._pipeline, "set_random_seed"):
                self._pipeline.set_random_seed(int(torch.initial_seed() % (2**32)))
            self._pid = os.getpid()
        return self._pipeline

    def __call__(self, img: np.ndarray) -> np.ndarray:
        out = self._get()(image=img)["image"]
        if out.shape != img.shape or out.dtype != np.uint8:
            raise InputError(
                f"{self.key}: the pipeline must keep RGB uint8 {img.shape}, it returned {out.dtype} {out.shape}"
            )
        return out

    def __getstate__(self):
        return {"spec": self.spec, "key": self.key}

    def __setstate__(self, state):
        self.spec, self.key, self._pipeline, self._pid = state["spec"], state["key"], None, None

    def __repr__(self) -> str:
        return f"Augmentation({self.spec if isinstance(self.spec, str) else 'dict'!r})"


class DegradeResize:
    """Down to ``size`` x ``size`` with INTER_AREA, back to ``out`` x ``out`` (the demo's down-and-up resize)."""

    _UP = {"linear": 1, "cubic": 2}  # cv2.INTER_LINEAR, cv2.INTER_CUBIC

    def __init__(self, size: int, out: int = 112, up: str = "linear"):
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= out:
            raise ConfigError(f"image_degrade must be an integer in 1..{out}, got {size!r}")
        if up not in self._UP:
            raise ConfigError(f"image_degrade upsampling must be one of {sorted(self._UP)}, got {up!r}")
        self.size, self.out, self.up = size, out, up

    def __call__(self, img: np.ndarray) -> np.ndarray:
        import cv2

        small = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (self.out, self.out), interpolation=self._UP[self.up])

    def __repr__(self) -> str:
        return f"DegradeResize({self.size}, out={self.out}, up={self.up!r})"


class Chain:
    """Apply transforms in order (picklable, unlike a closure)."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return f"Chain({self.transforms!r})"


def build_augmentation(spec, *, key: str = "augmentation") -> Transform | None:
    """None -> None; a name or serialised dict -> Augmentation; a callable is used as it is."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        return spec
    return Augmentation(spec, key=key)


def chain(*transforms: Transform | None) -> Transform | None:
    """The non-None transforms in order, or None when there are none."""
    ts = [t for t in transforms if t is not None]
    if not ts:
        return None
    return ts[0] if len(ts) == 1 else Chain(ts)
