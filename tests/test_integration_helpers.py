"""Helpers for the integration tests: small real synthetic shards + a generation manifest.

The shards are written with the project's FaceRecWriter (real RecordIO files) and the manifest with the
fields and checksums `synthesis/manifest.py` checks, so the ScoreMix data, the loader and merge are exercised on
the same kind of files `scoremix generate` writes. Collected by pytest, but holds no tests itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scoremix_plugin.io_utils import sha256_file, write_json_atomic
from scoremix_plugin.recordio import FaceRecFolder, FaceRecWriter


def synthetic_image(label: int, index: int, size: int = 112) -> np.ndarray:
    """A smooth, label-coloured RGB image (compresses small; each (label, index) differs)."""
    rng = np.random.default_rng([label, index])
    base = np.array([(label * 53) % 256, (label * 101) % 256, (label * 197) % 256], np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = base + 60 * np.sin(6.28 * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_shards(
    out_dir: Path, real_dir: Path, num_synthetic_classes: int, images_per_class: int, classes_per_shard: int
) -> Path:
    """Shards of synthetic identities with FINAL labels ``C_real + n``; returns the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    real = FaceRecFolder(real_dir)
    c_real, n_real = real.num_classes, len(real)
    real.close()
    total = c_real + num_synthetic_classes
    shards, n_syn = [], 0
    for s, first in enumerate(range(0, num_synthetic_classes, classes_per_shard)):
        last = min(first + classes_per_shard, num_synthetic_classes)
        folder = out_dir / f"shard-{s:05d}"
        with FaceRecWriter(folder, num_classes=total) as w:
            for n in range(first, last):
                for i in range(images_per_class):
                    w.write(synthetic_image(c_real + n, i), c_real + n)
        shards.append(
            {
                "path": folder.name,
                "labels": [c_real + first, c_real + last],
                "images": w.num_images,
                "rec_sha256": sha256_file(folder / "train.rec"),
                "idx_sha256": sha256_file(folder / "train.idx"),
            }
        )
        n_syn += w.num_images
    manifest = {
        "format": "scoremix-shards/1",
        "real": {"num_classes": c_real, "num_image": n_real, "rec": str(real_dir)},
        "num_classes": total,
        "num_synthetic_classes": num_synthetic_classes,
        "num_synthetic_images": n_syn,
        "generator": {"checkpoint": "none", "sha256": "0" * 64},
        "selection": {"file": "pairs.csv", "sha256": "0" * 64, "strategy": "far", "space": "embedding"},
        "sampler": {"solver": "heun", "steps": 4, "guidance": "none", "mix_window": [0.0, 80.0], "seed": 0},
        "shards": shards,
    }
    path = out_dir / "manifest.json"
    write_json_atomic(path, manifest)
    return path


def edit_manifest(path: Path, **changes) -> None:
    m = json.loads(path.read_text())
    m.update(changes)
    write_json_atomic(path, m)


def write_recogniser_config(path: Path, **keys) -> Path:
    """An arcface_torch-style job config file (``config = edict(...)``) with the given keys."""
    lines = ["from easydict import EasyDict as edict", "config = edict()"]
    lines += [f"config.{k} = {v!r}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
