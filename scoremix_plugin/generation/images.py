"""Sampler outputs as pictures: [-1, 1] float tensors to RGB uint8, and PNG grids."""

from __future__ import annotations

import os

import numpy as np
import torch

from scoremix_plugin.io_utils import write_bytes_atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B,3,R,R] in [-1,1] -> RGB uint8 [B,R,R,3]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def image_grid(rows: list, pad: int = 2) -> np.ndarray:
    """Rows of equal-sized RGB uint8 images as one RGB uint8 picture on white, ``pad`` px apart (short rows
    leave white space at their end)."""
    r = rows[0][0].shape[0]
    ncol = max(len(row) for row in rows)
    grid = np.full((len(rows) * (r + pad) + pad, ncol * (r + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (r + pad), pad + j * (r + pad)
            grid[y : y + r, x : x + r] = img
    return grid


def save_grid(path: str | os.PathLike, images: torch.Tensor, ncol: int, pad: int = 2) -> None:
    """Row-major grid of ``images`` ([N,3,R,R] in [-1,1]) with ``ncol`` columns, written as a PNG atomically."""
    rgb = list(to_uint8(images))
    write_png(path, image_grid([rgb[i : i + ncol] for i in range(0, len(rgb), ncol)], pad))


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """An RGB uint8 ``HxWx3`` image as a PNG file, atomically; an encoder failure is an error, not an empty file."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # cv2 writes BGR
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    write_bytes_atomic(path, buf.tobytes())
