"""Embed verification images with a model (ONNX or torch) and score ``.bin`` sets.

An embedder is any callable ``float32 [B, 3, 112, 112] in [-1, 1] -> np.ndarray [B, D]`` (not
normalised). As in the host's ``eval/verification.py``, each image and its horizontal flip are embedded,
the two embeddings are ADDED and the sum is L2-normalised; XNorm is the mean norm of the individual
(un-added, un-normalised) embeddings, flipped ones included.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.errors import InputError, MissingInputError
from scoremix_plugin.verification.protocol import DEFAULT_FARS, VerificationResult, evaluate_embeddings

Embedder = Callable[[np.ndarray], np.ndarray]


def _to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """RGB uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1] (the host's (x/255 - 0.5)/0.5)."""
    x = images_uint8.astype(np.float32).transpose(0, 3, 1, 2)
    return (x / 255.0 - 0.5) / 0.5


class OnnxEmbedder:
    """An ONNX recogniser through onnxruntime (CUDA when available, else CPU).

    Input scaling follows insightface's ``ArcFaceONNX``: a graph whose first 8 nodes include both a
    Sub-named and a Mul-named node normalises inside (converted mxnet models) and takes raw 0..255
    pixels; any other graph takes (pixel - 127.5) / 127.5, which is our [-1, 1] convention.
    Models exported with a fixed batch size are run chunk by chunk.
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        import onnx
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise MissingInputError(f"ONNX model not found: {self.path}")
        try:
            graph = onnx.load(str(self.path), load_external_data=False).graph
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise InputError(f"{self.path}: not a readable ONNX model: {e}") from e
        names = [n.name for n in graph.node[:8]]
        has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
        has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
        self.raw_pixels = has_sub and has_mul

        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as e:  # noqa: BLE001 - a CUDA provider that cannot start falls back to CPU
            if providers == ["CPUExecutionProvider"]:
                raise InputError(f"{self.path}: onnxruntime cannot load the model: {e}") from e
            warnings.warn(f"{self.path}: providers {providers} failed ({e}); using CPUExecutionProvider", stacklevel=2)
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.providers = self.session.get_providers()

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(f"{self.path}: expected one input, the model has {len(inputs)}")
        inp = inputs[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or any(isinstance(s, int) and s != 112 for s in shape[2:]):
            raise InputError(f"{self.path}: input '{inp.name}' has shape {shape}, expected [batch, 3, 112, 112]")
        # A fixed integer batch dimension (e.g. exported with batch 1) means chunks of exactly that size.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_name = self.session.get_outputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x.astype(self.input_dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.raw_pixels:
            x = x * 127.5 + 127.5
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self._run(x)
        k = self.fixed_batch
        outs = []
        for start in range(0, x.shape[0], k):
            chunk = x[start : start + k]
            n = chunk.shape[0]
            if n < k:  # pad the last chunk by repeating its final image; the padding is dropped
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], k - n, axis=0)])
            outs.append(self._run(chunk)[:n])
        return np.concatenate(outs)


class TorchEmbedder:
    """A torch recogniser in eval mode, run without autograd."""

    def __init__(self, module: Any, device: Any = None):
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return out.float().reshape(out.shape[0], -1).cpu().numpy()


def load_embedder(model_path: str | os.PathLike, network: str | None = None, device: Any = None) -> Embedder:
    """An embedder for ``.onnx`` (onnxruntime) or ``.pt``/``.pth`` (state dict into ``get_backbone(network)``)."""
    p = Path(model_path)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        providers = ["CPUExecutionProvider"] if device is not None and str(device).startswith("cpu") else None
        return OnnxEmbedder(p, providers=providers)
    if suffix in (".pt", ".pth"):
        if not network:
            raise InputError(f"{p}: a torch state dict needs --network (the backbone name, e.g. r50)")
        from scoremix_plugin.backbones import load_backbone

        return TorchEmbedder(load_backbone(p, network), device)
    raise InputError(f"{p}: unknown model format '{suffix}' (expected .onnx, .pt or .pth)")


def embed_images(
    embedder: Embedder,
    images: np.ndarray,
    batch_size: int = 64,
    flip: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip-added, L2-normalised embeddings of RGB uint8 [N, 112, 112, 3]: (float32 [N, D], norms [N]).

    ``norms[i]`` is the mean norm of image i's raw embeddings (the image and, with ``flip``, its mirror),
    so ``norms.mean()`` is the host's XNorm, which averages every individual embedding's norm.
    """
    emb, norms = _embed_float64(embedder, images, batch_size, flip, progress)
    return emb.astype(np.float32), norms


def _embed_float64(
    embedder: Embedder, images: np.ndarray, batch_size: int, flip: bool, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    # float64 like the host (its embedding buffers are np.zeros, i.e. float64): distances near a
    # threshold then compare the same way as the host's.
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise InputError(f"images must be RGB uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    n = images.shape[0]
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, total=(n + batch_size - 1) // batch_size, desc="embed", unit="batch", leave=False)
    summed: np.ndarray | None = None
    norms = np.zeros(n, dtype=np.float64)
    for start in starts:
        x = _to_unit_range(images[start : start + batch_size])
        views = [np.asarray(embedder(x), dtype=np.float64)]
        if flip:
            views.append(np.asarray(embedder(np.ascontiguousarray(x[..., ::-1])), dtype=np.float64))
        for v in views:
            if v.ndim != 2 or v.shape[0] != x.shape[0]:
                raise InputError(f"embedder returned shape {v.shape} for a batch of {x.shape[0]}")
        if summed is None:
            summed = np.zeros((n, views[0].shape[1]), dtype=np.float64)
        summed[start : start + x.shape[0]] = sum(views)
        norms[start : start + x.shape[0]] = np.mean([np.linalg.norm(v, axis=1) for v in views], axis=0)
    if summed is None:
        raise InputError("no images to embed")
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    normalised = summed / np.maximum(length, 1e-12)  # sklearn's normalize leaves zero rows at zero too
    return normalised, norms


def verify_bins(
    embedder: Embedder,
    bins: dict[str, str | os.PathLike],
    batch_size: int = 64,
    progress: bool = True,
    fars=DEFAULT_FARS,
    flip: bool = True,
) -> dict[str, VerificationResult]:
    """Score each ``{target: path.bin}``: accuracy (10 folds), TAR@FAR, ROC and XNorm per target."""
    from scoremix_plugin.verification.binfile import load_bin_images

    results: dict[str, VerificationResult] = {}
    for target, path in bins.items():
        images, issame = load_bin_images(path, progress=progress)
        emb, norms = _embed_float64(embedder, images, batch_size, flip, progress)
        results[target] = evaluate_embeddings(emb, issame, fars=fars, xnorm=float(np.mean(norms)))
    return results
