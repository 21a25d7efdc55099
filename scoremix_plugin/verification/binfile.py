"""Verification ``.bin`` files: safe load, atomic write, and builders (pairs list, RecordIO folder).

A ``.bin`` is a pickle of ``(bins, issame)``: 2N encoded images (pair i = ``bins[2i]``, ``bins[2i+1]``)
and N booleans. The published LFW/CFP/AgeDB files are Python 2 pickles whose image strings load in
Python 3 only as bytes (``encoding='bytes'``).

A pickle runs whatever callable it names, so files are loaded by ``safe_unpickle``: a restricted,
budgeted unpickler from which only bytes, lists, bools and small numeric arrays come out.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.io_utils import write_bytes_atomic

from .safe_unpickle import BinFileError, Loaded, UnsafePickleError, describe, restricted_loads

__all__ = [
    "BinFileError",
    "UnsafePickleError",
    "load_bin",
    "loads_bin",
    "write_bin",
    "load_bin_images",
    "decode_bin_images",
    "bin_from_pairs",
    "bin_from_rec",
    "read_pairs",
    "sample_pairs",
]

IMAGE_SIZE = 112


def _as_bytes(obj: Any, path: Path, index: int) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, bytearray):
        return bytes(obj)
    if isinstance(obj, np.ndarray) and obj.dtype == np.uint8 and obj.ndim == 1:
        return obj.tobytes()
    raise BinFileError(f"{path}: image {index} is {type(obj).__name__}, expected encoded image bytes")


def _as_bool(obj: Any, path: Path, index: int) -> bool:
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)) and obj in (0, 1):
        return bool(obj)
    raise BinFileError(f"{path}: issame[{index}] is {describe(obj)} ({type(obj).__name__}), expected a boolean")


def load_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """Read a ``.bin`` (Python 2 or 3 pickle) safely: (2N encoded images, issame bool [N]).

    Raises ``UnsafePickleError`` when the pickle names a callable, dtype or opcode outside the
    allow-list (nothing from it is run) and ``BinFileError`` when the file is truncated, larger inside
    than its size allows, or not the ``(bins, issame)`` layout.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"verification file not found: {p}")
    return loads_bin(p.read_bytes(), p)


def loads_bin(data: bytes, path: str | os.PathLike = "<bytes>") -> tuple[list[bytes], np.ndarray]:
    """``load_bin`` of a ``.bin``'s bytes already in memory; ``path`` names it in errors."""
    p = Path(path)
    loaded = restricted_loads(data, str(p))
    obj = loaded.obj
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        kind = f"{type(obj).__name__} of length {len(obj)}" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise BinFileError(f"{p}: expected a 2-tuple (bins, issame), got a {kind}")
    bins, issame = obj
    if not isinstance(issame, (list, tuple)):
        flags = loaded.value(issame)
        if not isinstance(flags, np.ndarray) or flags.ndim != 1:
            raise BinFileError(f"{p}: issame is {type(issame).__name__}, expected a list or 1-D array of booleans")
        issame = flags.tolist()
    if not isinstance(bins, (list, tuple)):
        raise BinFileError(
            f"{p}: expected (list of images, list of booleans), got ({type(bins).__name__}, {type(obj[1]).__name__})"
        )
    if len(bins) % 2:
        raise BinFileError(f"{p}: odd number of images ({len(bins)}); pairs need 2 images each")
    if len(bins) != 2 * len(issame):
        raise BinFileError(f"{p}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    if not issame:
        raise BinFileError(f"{p}: holds no pairs")
    images = [_image_bytes(loaded, b, p, i) for i, b in enumerate(bins)]
    flags = np.array([_as_bool(loaded.value(s), p, i) for i, s in enumerate(issame)], dtype=bool)
    return images, flags


def _image_bytes(loaded: Loaded, obj, path: Path, index: int) -> bytes:
    data = loaded.as_bytes(obj)
    if data is None:
        raise BinFileError(f"{path}: image {index} is {type(obj).__name__}, expected encoded image bytes")
    return data


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame) -> None:
    """Write ``(list[bytes], list[bool])`` as a protocol-2 pickle (Python 2 and 3 readers), atomically."""
    p = Path(path)
    imgs = [_as_bytes(b, p, i) for i, b in enumerate(images)]
    flags = [_as_bool(s, p, i) for i, s in enumerate(np.asarray(issame).tolist())]
    if len(imgs) != 2 * len(flags):
        raise BinFileError(f"{p}: {len(imgs)} images for {len(flags)} pairs (expected {2 * len(flags)})")
    write_bytes_atomic(p, pickle.dumps((imgs, flags), protocol=2))


def decode_bin_images(
    images: Sequence[bytes], path: str | os.PathLike = "<memory>", image_size: int = IMAGE_SIZE, progress: bool = False
) -> np.ndarray:
    """Decode every image to RGB uint8 [2N, S, S, 3] (resized when needed); a bad image is named by index."""
    from scoremix_plugin.recordio import decode_image

    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    it = range(len(images))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"decode {Path(path).name}", unit="img", leave=False)
    for i in it:
        try:
            img = decode_image(images[i])
        except Exception as e:  # noqa: BLE001 - re-raised with file and index
            raise BinFileError(f"{path}: image {i} cannot be decoded: {e}") from e
        if img is None or img.ndim != 3 or img.shape[2] != 3:
            raise BinFileError(
                f"{path}: image {i} decodes to shape {None if img is None else img.shape}, expected HxWx3"
            )
        out[i] = resize_to_square(img, image_size)
    return out


def resize_to_square(img: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize the short side to ``size`` and centre-crop (the host resizes the short side when needed)."""
    h, w = img.shape[:2]
    if h == size and w == size:
        return img
    import cv2

    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[top : top + size, left : left + size]


def load_bin_images(
    path: str | os.PathLike, image_size: int = IMAGE_SIZE, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``load_bin`` then decode every image: (RGB uint8 [2N, S, S, 3], issame bool [N])."""
    images, issame = load_bin(path)
    return decode_bin_images(images, path, image_size, progress), issame


# Builders.


def read_pairs(pairs_file: str | os.PathLike) -> list[tuple[str, str, bool]]:
    """Pairs as (relative path a, relative path b, same).

    Two formats: LFW ``pairs.txt`` (optional header ``folds n``; ``name i j`` is a same pair,
    ``name1 i name2 j`` a different pair; images at ``name/name_{i:04d}.jpg``) and CSV
    ``path_a,path_b,same`` (``.csv`` files, optional header; same is 1/0/true/false).
    """
    p = Path(pairs_file)
    if not p.is_file():
        raise FileNotFoundError(f"pairs file not found: {p}")
    pairs: list[tuple[str, str, bool]] = []
    if p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                if not row or all(not c.strip() for c in row):
                    continue
                if lineno == 1 and [c.strip().lower() for c in row] == ["path_a", "path_b", "same"]:
                    continue
                if len(row) != 3:
                    raise BinFileError(f"{p}:{lineno}: expected path_a,path_b,same, got {len(row)} columns")
                same = row[2].strip().lower()
                if same not in ("1", "0", "true", "false"):
                    raise BinFileError(f"{p}:{lineno}: 'same' must be 1/0/true/false, got {row[2]!r}")
                pairs.append((row[0].strip(), row[1].strip(), same in ("1", "true")))
        return pairs

    def lfw_path(name: str, num: str, lineno: int) -> str:
        if not num.isdigit():
            raise BinFileError(f"{p}:{lineno}: image number {num!r} is not an integer")
        return f"{name}/{name}_{int(num):04d}.jpg"

    with open(p) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
                continue  # "10 300": folds and pairs per fold
            if len(parts) == 3:
                pairs.append((lfw_path(parts[0], parts[1], lineno), lfw_path(parts[0], parts[2], lineno), True))
            elif len(parts) == 4:
                pairs.append((lfw_path(parts[0], parts[1], lineno), lfw_path(parts[2], parts[3], lineno), False))
            else:
                raise BinFileError(f"{p}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {line.strip()!r}")
    return pairs


def _read_aligned(root: Path, rel: str, cache: dict[str, bytes]) -> bytes:
    if rel in cache:
        return cache[rel]
    from scoremix_plugin.io_utils import check_inside
    from scoremix_plugin.recordio import decode_image

    path = check_inside(root, rel, "pairs file")  # never open (nor quote) a file outside --images
    if not path.is_file() and path.suffix.lower() == ".jpg" and path.with_suffix(".png").is_file():
        path = path.with_suffix(".png")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = path.read_bytes()
    try:
        img = decode_image(data)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise BinFileError(f"{path}: cannot be decoded as an image ({type(e).__name__})") from e
    if img is None or img.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        raise BinFileError(
            f"{path}: expected an aligned {IMAGE_SIZE}x{IMAGE_SIZE} image, got {None if img is None else img.shape}"
        )
    cache[rel] = data  # stored verbatim: the .bin keeps the original encoding, as the published ones do
    return data


def bin_from_pairs(pairs_file: str | os.PathLike, images_root: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write a ``.bin`` from a pairs list and a folder of aligned 112x112 images; returns the pair count."""
    root = Path(images_root)
    if not root.is_dir():
        raise FileNotFoundError(f"images folder not found: {root}")
    pairs = read_pairs(pairs_file)
    if not pairs:
        raise BinFileError(f"{pairs_file}: no pairs")
    cache: dict[str, bytes] = {}
    images: list[bytes] = []
    for a, b, _ in pairs:
        images += [_read_aligned(root, a, cache), _read_aligned(root, b, cache)]
    write_bin(out, images, [s for _, _, s in pairs])
    return len(pairs)


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded balanced pairs of image indices: (pairs int64 [P, 2], issame bool [P]).

    ``num_pairs // 2`` same pairs (two distinct images of a class with >= 2 images) and the rest
    different pairs (images of two distinct classes), no pair twice, then shuffled so that every
    unshuffled fold of the protocol sees both kinds.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if num_pairs < 2:
        raise BinFileError(f"num_pairs must be >= 2, got {num_pairs}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    by_label = np.argsort(labels, kind="stable")
    members = dict(zip(classes.tolist(), np.split(by_label, np.cumsum(counts)[:-1])))
    n_same = num_pairs // 2
    n_diff = num_pairs - n_same
    multi = classes[counts >= 2]
    possible_same = int(sum(n * (n - 1) // 2 for n in counts))
    if multi.size == 0 or possible_same < n_same:
        raise BinFileError(
            f"{n_same} same pairs asked but only {possible_same} exist ({multi.size} classes with >= 2 images)"
        )
    possible_diff = (labels.size**2 - int(np.sum(counts.astype(np.int64) ** 2))) // 2
    if classes.size < 2 or possible_diff < n_diff:
        raise BinFileError(f"{n_diff} different pairs asked but only {possible_diff} exist ({classes.size} classes)")

    def draw(make, n, kind, possible):
        seen: set[tuple[int, int]] = set()
        # Rejection sampling with a bound: close to exhausting the possible pairs it would crawl.
        for _ in range(50 * n + 1000):
            if len(seen) == n:
                break
            a, b = make()
            seen.add((min(a, b), max(a, b)))
        if len(seen) < n:
            raise BinFileError(f"could not draw {n} distinct {kind} pairs out of {possible}; ask for fewer pairs")
        return sorted(seen)

    def make_same():
        c = int(multi[rng.integers(multi.size)])
        a, b = rng.choice(members[c], size=2, replace=False)
        return int(a), int(b)

    def make_diff():
        ca, cb = rng.choice(classes, size=2, replace=False)
        return int(rng.choice(members[int(ca)])), int(rng.choice(members[int(cb)]))

    same = draw(make_same, n_same, "same", possible_same)
    diff = draw(make_diff, n_diff, "different", possible_diff)
    pairs = np.array(same + diff, dtype=np.int64)
    issame = np.r_[np.ones(len(same), bool), np.zeros(len(diff), bool)]
    order = rng.permutation(len(pairs))
    return pairs[order], issame[order]


def bin_from_rec(rec_dir: str | os.PathLike, out: str | os.PathLike, num_pairs: int, seed: int = 0) -> int:
    """Write a ``.bin`` of seeded balanced pairs drawn from a RecordIO folder; returns the pair count."""
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.recordio.convert import stored_image_ext

    folder = FaceRecFolder(rec_dir)
    pairs, issame = sample_pairs(folder.labels, num_pairs, seed)
    images: list[bytes] = []
    for i in pairs.ravel().tolist():
        data = folder.jpeg(i)
        key = int(folder.image_keys[i])
        # Stored verbatim, so an empty or cut-off record would reach every later evaluation unnoticed.
        stored_image_ext(data, file=folder.rec_path, key=key, offset=folder.reader.offset(key))
        images.append(data)
    write_bin(out, images, issame)
    return len(pairs)
