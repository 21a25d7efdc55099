"""A generation manifest as training and merging read it, and their check of a folder against it.

The manifest type is ``scoremix_plugin.synthesis.manifest.Manifest`` (keys, totals, contiguous
non-overlapping label ranges, shard files and checksums); ``read_manifest`` reads and validates one.
``check_source`` checks a RecordIO folder against what the manifest says about it (image count, final
label range).
"""

from __future__ import annotations

import os

from ..synthesis.manifest import Manifest, ManifestError  # noqa: F401 - ManifestError re-exported


def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> Manifest:
    """A COMPLETE manifest, with (``verify``) its label ranges, shard files, checksums and totals checked."""
    # An interrupted generation is refused: num_classes would count identities that have no images.
    m = Manifest.read(path)
    return m.validate() if verify else m


def check_source(labels, count: int, lo: int, hi: int, *, what: str, count_key: str, manifest: Manifest,
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

