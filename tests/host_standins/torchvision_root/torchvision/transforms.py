"""The four transforms MXFaceDataset composes, with torchvision's documented semantics."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToPILImage:
    """HxWxC uint8 numpy array -> PIL image (RGB for 3 channels)."""

    def __call__(self, pic):
        arr = np.asarray(pic)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise TypeError(f"stand-in ToPILImage takes HxWx3 uint8, got {arr.dtype} {arr.shape}")
        return Image.fromarray(arr, mode="RGB")


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img):
        # One draw from torch's global generator per call, as torchvision does.
        if torch.rand(1) < self.p:
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img


class ToTensor:
    """PIL RGB image -> float32 [C, H, W] in [0, 1]."""

    def __call__(self, pic):
        t = torch.from_numpy(np.array(pic, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        return t.to(dtype=torch.get_default_dtype()).div(255)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, tensor):
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype)[:, None, None]
        std = torch.as_tensor(self.std, dtype=tensor.dtype)[:, None, None]
        return tensor.clone().sub_(mean).div_(std)
