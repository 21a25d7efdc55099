"""The fields of a generation manifest (contracts.md) that training and merging use, as typed attributes.

Reading and checking the manifest is ``scoremix_plugin.synthesis.manifest``'s job (keys, totals,
contiguous non-overlapping label ranges, shard files and checksums); ``read_manifest`` calls it and
returns a ``ManifestView`` with shard folders resolved. ``check_source`` then checks a RecordIO
folder against what the manifest says about it (image count, final label range).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..synthesis.manifest import ManifestError  # re-exported: one error type for manifests


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
    real_rec: Path | None  # absolute (the manifest records it relative to its own folder)
    num_synthetic_classes: int
    num_synthetic_images: int
    shards: tuple[ShardView, ...]
    raw: dict[str, Any]

    @property
    def num_image(self) -> int:
        """Real + synthetic images: what ``config.num_image`` must equal."""
        return self.real_num_image + self.num_synthetic_images


def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> ManifestView:
    """Load (and with ``verify``, check shards and checksums of) a COMPLETE manifest through synthesis.manifest."""
    from ..synthesis.manifest import load_manifest, shard_dir, verify_manifest

    # An interrupted generation is refused: num_classes would count identities that have no images.
    m = verify_manifest(path) if verify else load_manifest(path)
    real = m["real"]
    return ManifestView(
        path=Path(m["_path"]).resolve(), num_classes=m["num_classes"], real_num_classes=real["num_classes"],
        real_num_image=real["num_image"],
        real_rec=(Path(m["_root"]) / real["rec"]).resolve() if real.get("rec") else None,
        num_synthetic_classes=m["num_synthetic_classes"], num_synthetic_images=m["num_synthetic_images"],
        shards=tuple(ShardView(i, shard_dir(m, s).resolve(), (s["labels"][0], s["labels"][1]), int(s["images"]))
                     for i, s in enumerate(m["shards"])),
        raw={k: v for k, v in m.items() if not k.startswith("_")},
    )


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

