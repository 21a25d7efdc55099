"""Class centres for class selection: from a model's embeddings, or from a trained head's class weights.

- Embedding space: the centre of class c is the mean of its images' L2-normalised, flip-added
  embeddings (the ``.bin`` protocol's embedding), normalised again.
- Head space: the rows of the margin head's class-weight matrix (ours, or the host's
  ``checkpoint_gpu_{rank}.pt`` files: each rank holds a slice of the classes, concatenated in rank
  order), normalised.

    scoremix embed --model model.onnx --data /data/faces --out centres.npz
    scoremix embed --checkpoint work_dirs/run/checkpoint_rank*.pt --out head.npz
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from scoremix_plugin.centres import Centres, save_centres
from scoremix_plugin.errors import CheckpointError, InputError
from scoremix_plugin.io_utils import check_finite_weights, load_torch_safe


def embedding_centres(
    embedder,
    data: str | os.PathLike,
    *,
    batch_size: int = 64,
    chunk: int = 1024,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels [C], centres [C, D] unit rows, counts [C])`` over every image of a RecordIO folder."""
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.verification.evaluate import embed_images

    folder = FaceRecFolder(data)
    try:
        n = len(folder)
        if n == 0:
            raise InputError(f"{data}: the folder holds no images")
        labels_all = np.asarray(folder.labels, dtype=np.int64)
        classes, inverse, counts = np.unique(labels_all, return_inverse=True, return_counts=True)
        sums: np.ndarray | None = None
        starts = range(0, n, chunk)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embed", unit="chunk", total=(n + chunk - 1) // chunk)
        for start in starts:
            idx = range(start, min(n, start + chunk))
            images = np.stack([folder.image(i) for i in idx])
            emb, _ = embed_images(embedder, images, batch_size=batch_size, flip=True)
            if not np.isfinite(emb).all():
                raise InputError(
                    f"{data}: the model gives non-finite embeddings (NaN/inf) for images {start}.."
                    f"{start + len(idx) - 1}: are its weights finite?"
                )
            if sums is None:
                sums = np.zeros((len(classes), emb.shape[1]), dtype=np.float64)
            np.add.at(sums, inverse[start : start + len(idx)], emb.astype(np.float64))
    finally:
        folder.close()
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = classes[(norms[:, 0] == 0)][:5].tolist()
        raise InputError(f"{data}: classes {bad} have a zero mean embedding (images that cancel out)")
    return classes, (sums / norms).astype(np.float32), counts.astype(np.int64)


def _rank_from_name(path: Path) -> int | None:
    m = re.search(r"(?:checkpoint_gpu_|checkpoint_rank)(\d+)\.pt$", path.name)
    return int(m.group(1)) if m else None


def head_centres(checkpoints: list[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [C], class weights [C, D])`` from one checkpoint per rank (ours or the host's), in rank order."""
    import torch

    from scoremix_plugin.recognition.losses import class_slice

    if not checkpoints:
        raise InputError("no checkpoint given")
    slices = []
    for p in map(Path, checkpoints):
        ck = load_torch_safe(p)
        if not isinstance(ck, dict):
            raise CheckpointError(f"{p}: not a checkpoint dict (found {type(ck).__name__})")
        if str(ck.get("format", "")).startswith("scoremix-recogniser/"):
            if not isinstance(ck.get("head"), dict) or "weight" not in ck["head"]:
                raise CheckpointError(f"{p}: scoremix recogniser checkpoint without key 'head.weight'")
            key, w = "head.weight", ck["head"]["weight"]
            meta = (int(ck["rank"]), int(ck["world_size"]), int(ck["num_classes"]), int(ck["class_start"]))
        elif isinstance(ck.get("state_dict_softmax_fc"), dict) and "weight" in ck["state_dict_softmax_fc"]:
            key, w = "state_dict_softmax_fc.weight", ck["state_dict_softmax_fc"]["weight"]
            rank = _rank_from_name(p)
            if rank is None:
                if len(checkpoints) > 1:
                    raise InputError(f"{p}: a host checkpoint among several must be named checkpoint_gpu_{{rank}}.pt")
                rank = 0
            meta = (rank, None, None, None)
        else:
            raise InputError(
                f"{p}: neither a scoremix checkpoint nor a host checkpoint_gpu_*.pt (keys {sorted(ck)[:8]})"
            )
        if not isinstance(w, torch.Tensor) or w.ndim != 2:
            raise CheckpointError(f"{p}: class weights '{key}' must be a 2-d tensor")
        check_finite_weights({key: w}, p)
        slices.append((meta, w.float().cpu().numpy(), p))
    slices.sort(key=lambda s: s[0][0])
    ranks = [m[0] for m, _, _ in slices]
    world = len(slices)
    if ranks != list(range(world)):
        raise InputError(f"checkpoints cover ranks {ranks}; need every rank 0..{max(ranks)} exactly once")
    total = sum(w.shape[0] for _, w, _ in slices)
    for (rank, ck_world, ck_classes, ck_start), w, p in slices:
        if ck_world is not None and (ck_world != world or ck_classes != total):
            raise InputError(
                f"{p}: made by rank {rank} of {ck_world} process(es) with {ck_classes} classes; "
                f"given {world} file(s) holding {total} classes"
            )
        start, num_local = class_slice(total, rank, world)
        if w.shape[0] != num_local or (ck_start is not None and ck_start != start):
            raise InputError(f"{p}: rank {rank} holds {w.shape[0]} classes; expected {num_local} starting at {start}")
    weights = np.concatenate([w for _, w, _ in slices])
    return np.arange(total, dtype=np.int64), weights


def write_embedding_centres(embedder, data, out, **kw) -> Centres:
    labels, centres, counts = embedding_centres(embedder, data, **kw)
    return save_centres(out, labels, centres, counts, space="embedding")


def write_head_centres(checkpoints, out) -> Centres:
    labels, weights = head_centres(checkpoints)
    return save_centres(out, labels, weights, None, space="head")
