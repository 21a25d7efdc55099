"""The fields of a generation manifest (contracts.md) that training and merging use, as typed attributes.

``read_manifest`` reads and (by default) verifies the manifest through
``scoremix_plugin.synthesis.manifest`` and returns a ``ManifestView``: shard folders resolved
against the manifest's folder, counts as ints, and the consistency checks training relies on
(totals add up, shard label ranges lie in ``[C_real, num_classes)`` and do not overlap).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ManifestError(ValueError):
    """A manifest is missing, malformed or disagrees with its shards; the message names the file and key."""


@dataclass(frozen=True)
class ShardView:
    index: int
    path: Path  # absolute
    labels: tuple[int, int]  # [first, last_plus_one), final labels
    images: int


@dataclass(frozen=True)
class ManifestView:
    path: Path
    num_classes: int
    real_num_classes: int
    real_num_image: int
    real_rec: str | None
    num_synthetic_classes: int
    num_synthetic_images: int
    shards: tuple[ShardView, ...]
    raw: dict[str, Any]

    @property
    def num_image(self) -> int:
        """Real + synthetic images: what ``config.num_image`` must equal."""
        return self.real_num_image + self.num_synthetic_images


def _int(d: dict, key: str, where: str, path: Path) -> int:
    v = d.get(key) if isinstance(d, dict) else None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ManifestError(f"{path}: {where}{key} must be a non-negative integer, got {v!r}")
    return v


def _verify(path: Path, raw: dict) -> None:
    """Shards exist and match their checksums (synthesis.manifest's check when present)."""
    try:
        from ..synthesis.manifest import verify_manifest
    except ImportError:
        verify_manifest = None
    if verify_manifest is not None:
        verify_manifest(path)
        return
    # Until synthesis.manifest lands: the same check, kept minimal (sha256 of each shard's files).
    from ..io_utils import sha256_file

    for i, shard in enumerate(raw.get("shards", [])):
        folder = path.parent / shard["path"]
        for name, key in (("train.rec", "rec_sha256"), ("train.idx", "idx_sha256")):
            f = folder / name
            if not f.is_file():
                raise ManifestError(f"{path}: shards[{i}] ({shard['path']}): {f} does not exist")
            if sha256_file(f) != shard.get(key):
                raise ManifestError(f"{path}: shards[{i}].{key} does not match {f} (the shard changed or was "
                                    "only partly copied)")


def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> ManifestView:
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not str(raw.get("format", "")).startswith("scoremix-shards/"):
        raise ManifestError(f"{p}: format must be 'scoremix-shards/1', got {raw.get('format') if isinstance(raw, dict) else raw!r}")
    real = raw.get("real")
    if not isinstance(real, dict):
        raise ManifestError(f"{p}: 'real' must be an object with num_classes, num_image, rec")
    view_shards = []
    shards = raw.get("shards")
    if not isinstance(shards, list):
        raise ManifestError(f"{p}: 'shards' must be a list")
    c_real = _int(real, "num_classes", "real.", p)
    total = _int(raw, "num_classes", "", p)
    for i, s in enumerate(shards):
        if not isinstance(s, dict) or not isinstance(s.get("path"), str):
            raise ManifestError(f"{p}: shards[{i}] must be an object with a 'path'")
        lab = s.get("labels")
        if (not isinstance(lab, list) or len(lab) != 2 or not all(isinstance(v, int) for v in lab)
                or not c_real <= lab[0] < lab[1] <= total):
            raise ManifestError(f"{p}: shards[{i}].labels = {lab!r} must be [first, last_plus_one) inside "
                                f"[real.num_classes={c_real}, num_classes={total}] (labels are final)")
        view_shards.append(ShardView(i, (p.parent / s["path"]).resolve(), (lab[0], lab[1]),
                                     _int(s, "images", f"shards[{i}].", p)))
    ordered = sorted(view_shards, key=lambda s: s.labels)
    for a, b in zip(ordered, ordered[1:]):
        if b.labels[0] < a.labels[1]:
            raise ManifestError(f"{p}: shards[{a.index}].labels {list(a.labels)} and shards[{b.index}].labels "
                                f"{list(b.labels)} overlap")
    view = ManifestView(
        path=p.resolve(), num_classes=total, real_num_classes=c_real, real_num_image=_int(real, "num_image", "real.", p),
        real_rec=real.get("rec"), num_synthetic_classes=_int(raw, "num_synthetic_classes", "", p),
        num_synthetic_images=_int(raw, "num_synthetic_images", "", p), shards=tuple(view_shards), raw=raw,
    )
    if view.real_num_classes + view.num_synthetic_classes != view.num_classes:
        raise ManifestError(f"{p}: num_classes {view.num_classes} != real.num_classes {view.real_num_classes} + "
                            f"num_synthetic_classes {view.num_synthetic_classes}")
    if sum(s.images for s in view.shards) != view.num_synthetic_images:
        raise ManifestError(f"{p}: num_synthetic_images {view.num_synthetic_images} != the sum of shards[].images "
                            f"({sum(s.images for s in view.shards)})")
    if verify:
        _verify(p, raw)
    return view


def check_source(labels, count: int, lo: int, hi: int, *, what: str, count_key: str, manifest: ManifestView,
                 rec_path=None, image_keys=None) -> None:
    """A folder the manifest describes holds ``count`` images with labels in ``[lo, hi)`` (final labels)."""
    import numpy as np

    from ..recordio import RecordIOError

    labels = np.asarray(labels)
    if len(labels) != count:
        raise ManifestError(f"{manifest.path}: {count_key} = {count}, but {what} holds {len(labels)} images")
    bad = (labels < lo) | (labels >= hi)
    if bad.any():
        i = int(np.argmax(bad))
        key = None if image_keys is None else int(image_keys[i])
        raise RecordIOError(f"label {int(labels[i])} of image {i} is outside [{lo}, {hi}) that the manifest "
                            f"{manifest.path} gives {what} (labels are final: no offset is added)",
                            file=rec_path, key=key)

