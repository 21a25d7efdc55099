"""The images a dataset report looks at, and their embeddings, cached by content hash.

An :class:`ImageSet` is a RecordIO folder, the shards of a generation manifest, or a verification ``.bin``:
encoded images with a label each (a ``.bin`` has no identities; its labels are image indices).
:func:`embed_set` embeds every image flip-added and normalised (``verification.evaluate.embed_images``,
the ``.bin`` protocol) and keeps them in ``CACHE/<key>.npz``: rows keyed by a 16-byte BLAKE2b digest of the
encoded image and the model's sha256, so a rerun, or a filtered set that shares images with its parent,
embeds only images it has not seen.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scoremix_plugin.errors import InputError
from scoremix_plugin.io_utils import atomic_path

if TYPE_CHECKING:
    from scoremix_plugin.synthesis.manifest import Manifest

DIGEST_SIZE = 16
DECODE_CHUNK = 2048  # decoded images held at once (a whole shard can be gigabytes of pixels)


@dataclass
class ImageSet:
    """Encoded images with labels, from one or more sources (not frozen: it holds open readers)."""

    name: str
    path: Path
    kind: str  # "rec" | "manifest" | "bin"
    labels: np.ndarray  # [N] int64 (final labels; image index for a .bin)
    _jpeg: Callable[[int], bytes] = field(repr=False)
    manifest: Manifest | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def jpeg(self, i: int) -> bytes:
        return self._jpeg(int(i))

    def image(self, i: int) -> np.ndarray:
        """RGB uint8 [112, 112, 3] (a .bin image of another size is resized as the protocol does)."""
        from scoremix_plugin.recordio import decode_image
        from scoremix_plugin.verification.binfile import resize_to_square

        return resize_to_square(decode_image(self.jpeg(i)))


def _folders_set(name: str, path: Path, kind: str, folders: list, manifest=None) -> ImageSet:
    offsets = np.cumsum([0] + [len(f) for f in folders])
    labels = np.concatenate([f.labels for f in folders]) if folders else np.zeros(0, np.int64)

    def jpeg(i: int) -> bytes:
        s = int(np.searchsorted(offsets, i, "right") - 1)
        return folders[s].jpeg(i - int(offsets[s]))

    return ImageSet(name, path, kind, labels.astype(np.int64), jpeg, manifest)


def open_rec(path: str | os.PathLike, name: str | None = None) -> ImageSet:
    from scoremix_plugin.recordio import FaceRecFolder

    p = Path(path)
    return _folders_set(name or p.name, p, "rec", [FaceRecFolder(p)])


def open_manifest(path: str | os.PathLike, name: str | None = None, verify: bool = True) -> ImageSet:
    """The synthetic identities of a COMPLETE generation manifest; ``verify``: every shard's sha256 must match
    the manifest's (a bit flipped after generation is an error naming the shard, not a report on damaged data)."""
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.synthesis.manifest import check_provenance, verify_manifest

    m = verify_manifest(path, check_sha=verify)
    check_provenance(m)
    shards = sorted(m.shards, key=lambda s: s.labels[0])
    return _folders_set(name or m.root.name, m.path, "manifest", [FaceRecFolder(s.path) for s in shards], m)


def open_bin(path: str | os.PathLike, name: str | None = None) -> ImageSet:
    from scoremix_plugin.verification.binfile import load_bin

    p = Path(path)
    images, _ = load_bin(p)
    return ImageSet(name or p.stem, p, "bin", np.arange(len(images), dtype=np.int64), images.__getitem__)


def open_data(path: str | os.PathLike, name: str | None = None, verify: bool = True) -> ImageSet:
    """A manifest (file, or folder holding ``manifest.json``), else a RecordIO folder, else a ``.bin``."""
    p = Path(path)
    if p.suffix == ".json" or (p.is_dir() and (p / "manifest.json").is_file()):
        return open_manifest(p, name, verify=verify)
    if p.suffix == ".bin":
        return open_bin(p, name)
    return open_rec(p, name)


def real_rec_of(manifest: Manifest) -> Path | None:
    """The real RecordIO folder a manifest names, when it still exists."""
    p = manifest.real_rec
    return p.resolve() if p is not None and p.exists() else None


class EmbeddingCache:
    """Embeddings of one model (``key``), by image digest, in ``folder/<key>.npz`` (written atomically)."""

    def __init__(self, folder: str | os.PathLike, key: str):
        self.path = Path(folder) / f"{key}.npz"
        self.rows: dict[bytes, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as z:
                for d, e in zip(z["digests"], z["embeddings"]):
                    self.rows[d.tobytes()] = e
        self.dirty = False

    def get(self, digest: bytes) -> np.ndarray | None:
        return self.rows.get(digest)

    def put(self, digests: list[bytes], emb: np.ndarray) -> None:
        for d, e in zip(digests, emb):
            self.rows[d] = e
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        digests = np.frombuffer(b"".join(self.rows), np.uint8).reshape(-1, DIGEST_SIZE)
        emb = np.stack(list(self.rows.values())).astype(np.float32)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a str name
                np.savez(f, digests=digests, embeddings=emb)
        self.dirty = False


def model_key(model_path: str | os.PathLike, network: str | None, flip: bool = True) -> str:
    """Cache key of a model file: its sha256 (content, so a moved file still hits), backbone and flip."""
    from scoremix_plugin.io_utils import sha256_file

    return f"{sha256_file(model_path)[:24]}-{network or 'onnx'}-{'flip' if flip else 'plain'}"


def embed_set(
    embedder, images: ImageSet, *, cache: EmbeddingCache | None = None, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Flip-added, unit-row float32 embeddings [N, D] of every image of ``images`` (cached by content)."""
    from tqdm.auto import tqdm

    from scoremix_plugin.recordio import decode_image
    from scoremix_plugin.verification.binfile import resize_to_square
    from scoremix_plugin.verification.evaluate import embed_images

    n = len(images)
    digests = [hashlib.blake2b(images.jpeg(i), digest_size=DIGEST_SIZE).digest() for i in range(n)]
    out: np.ndarray | None = None
    todo = []
    for i, d in enumerate(digests):
        e = cache.get(d) if cache is not None else None
        if e is None:
            todo.append(i)
        else:
            if out is None:
                out = np.empty((n, e.shape[0]), np.float32)
            out[i] = e
    with tqdm(total=len(todo), desc=f"embed {images.name}", unit="img", disable=not progress or not todo) as bar:
        for s in range(0, len(todo), DECODE_CHUNK):
            idx = todo[s : s + DECODE_CHUNK]
            batch = np.stack([resize_to_square(decode_image(images.jpeg(i))) for i in idx])
            e, _ = embed_images(embedder, batch, batch_size=batch_size, flip=True)
            if out is None:
                out = np.empty((n, e.shape[1]), np.float32)
            out[idx] = e
            if cache is not None:
                cache.put([digests[i] for i in idx], e)
            bar.update(len(idx))
    if out is None:
        raise InputError(f"{images.path}: no images to embed")
    if cache is not None:
        cache.save()
    return out
