"""Conversions and checks for RecordIO folders: image folders <-> InsightFace layout, summary, validation.

- ``folder_to_rec``: one sub-folder per identity; sorted sub-folder names become labels 0..C-1.
  Every image is decoded and re-encoded as JPEG q95 (BGR on disk), like InsightFace's tools.
- ``rec_to_folder``: every image's stored bytes, verbatim, under ``OUT/<label>/<key>.<ext>``, label
  folders zero-padded so their sorted order is the numeric order (``folder_to_rec`` on the result
  gives the same labels when the labels are 0..C-1).
- ``rec_info``: a JSON-able summary. ``check_rec``: every record and the index, first problem raised.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MissingInputError
from .folder import FaceRecFolder, read_property, resolve_folder
from .format import RecordIOError, decode_image, decode_image_strict, image_size, read_framed, unpack
from .writer import FaceRecWriter

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


def list_image_folder(src: str | os.PathLike) -> list[tuple[str, list[Path]]]:
    """[(identity name, sorted image files)] for each sub-folder of ``src``, in sorted name order."""
    src = Path(src)
    if not src.is_dir():
        raise MissingInputError(f"image folder not found: {src}")
    classes = []
    for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise RecordIOError(f"{d}: identity folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        classes.append((d.name, files))
    if not classes:
        raise RecordIOError(f"{src}: no identity sub-folders (expected SRC/<identity>/<image>)")
    return classes


DATASET_FILES = ("train.rec", "train.idx", "property")


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that is (inside) the input, or that already holds a dataset unless ``overwrite``."""
    from ..io_utils import refuse_existing_output, refuse_output_overlapping_inputs

    refuse_output_overlapping_inputs(out, {"the input folder": src}, what="output", may_contain=True)
    if not overwrite:
        refuse_existing_output(out, DATASET_FILES, hint="pass --overwrite to replace it", what="output")


def folder_to_rec(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    resize: bool = False,
    quality: int = 95,
    image_size: int = 112,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write ``out`` (train.rec, train.idx, property, classes.txt) from an image folder; returns a summary.

    An ``out`` that already holds a dataset is refused unless ``overwrite``; one inside ``src`` always.
    """
    import cv2

    out = Path(out)
    _check_output(Path(src), out, overwrite)
    classes = list_image_folder(src)
    total = sum(len(files) for _, files in classes)
    items = ((label, f) for label, (_, files) in enumerate(classes) for f in files)
    with FaceRecWriter(out, num_classes=len(classes), quality=quality, image_size=image_size) as w:
        for label, f in _progress(items, total, "from-folder", progress):
            try:
                img = decode_image(f.read_bytes())
            except ValueError as e:
                raise RecordIOError(str(e), file=f) from None
            if img.shape[:2] != (image_size, image_size):
                if not resize:
                    raise RecordIOError(
                        f"image is {img.shape[0]}x{img.shape[1]}, expected {image_size}x"
                        f"{image_size} (pass --resize to resize)",
                        file=f,
                    )
                shrink = img.shape[0] > image_size or img.shape[1] > image_size
                img = cv2.resize(
                    img, (image_size, image_size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                )
            w.write(img, label)
    from ..io_utils import write_text_atomic

    try:
        write_text_atomic(out / "classes.txt", "".join(f"{name}\n" for name, _ in classes))
    except OSError as e:
        raise RecordIOError(f"cannot write: {e.strerror or e}", file=out / "classes.txt") from None
    return {"out": str(out), "images": w.num_images, "classes": len(classes)}


def stored_image_ext(data: bytes, *, file, key, offset) -> str:
    """``.jpg`` / ``.png`` for a stored image whose header parses (and a JPEG that ends); else RecordIOError."""
    try:
        image_size(data)
    except ValueError as e:
        raise RecordIOError(
            f"stored image is not a readable JPEG/PNG ({len(data)} bytes): {e}", file=file, key=key, offset=offset
        ) from None
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise RecordIOError(
            f"stored JPEG is truncated (no end-of-image marker, {len(data)} bytes)", file=file, key=key, offset=offset
        )
    return ".png" if data[:4] == b"\x89PNG" else ".jpg"


def rec_to_folder(
    rec_dir: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True, overwrite: bool = False
) -> dict:
    """Write every image's stored bytes to ``out/<label>/<key>.<ext>``; returns a summary.

    ``out`` must not lie inside ``rec_dir``, and must be empty or new unless ``overwrite`` (its files are
    not ours to mix into). Every stored image is checked first (header, JPEG end marker), so a bad record
    fails the command before any file is written instead of leaving an empty or garbage ``.jpg`` behind.
    """
    from ..io_utils import refuse_output_folder

    refuse_output_folder(
        out, ("*",), overwrite=overwrite, inputs={"the input folder": rec_dir}, what="output", may_contain=True
    )
    folder = FaceRecFolder(rec_dir)
    out = Path(out)
    width = max(1, len(str(max(folder.num_classes - 1, 0))))
    exts = []
    for i in range(len(folder)):
        key = int(folder.image_keys[i])
        exts.append(stored_image_ext(folder.jpeg(i), file=folder.rec_path, key=key, offset=folder.reader.offset(key)))
    for i in _progress(range(len(folder)), len(folder), "to-folder", progress):
        d = out / f"{folder.label(i):0{width}d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{int(folder.image_keys[i])}{exts[i]}").write_bytes(folder.jpeg(i))
    return {"out": str(out), "images": len(folder), "classes": len(np.unique(folder.labels))}


def rec_info(rec_dir: str | os.PathLike) -> dict:
    """Summary of a RecordIO folder (counts, layout, label range, property, image size of the first image)."""
    folder = FaceRecFolder(rec_dir)
    labels = folder.labels
    info = {
        "path": str(folder.root),
        "layout": folder.layout,
        "images": len(folder),
        "classes": folder.num_classes,
        "classes_present": int(len(np.unique(labels))),
        "label_range": [int(labels.min()), int(labels.max()) + 1] if len(labels) else None,
        "index_keys": len(folder.reader),
        "identity_records": (
            folder.identity_key_range[1] - folder.identity_key_range[0]
            if folder.identity_key_range is not None
            else None
        ),
        "property": list(folder.property) if folder.property is not None else None,
        "rec_bytes": folder.rec_path.stat().st_size,
    }
    if len(folder):
        try:
            info["image_size"] = list(image_size(folder.jpeg(0)))
        except ValueError:
            info["image_size"] = None
    folder.close()
    return info


def check_rec(rec_dir: str | os.PathLike, *, decode: bool = False, progress: bool = True) -> dict:
    """Validate a RecordIO folder; raises RecordIOError (file, key, offset) at the first problem.

    Checks: the `.rec` parses record by record to its end; every `.idx` offset is a record start and
    its record holds a valid IRHeader; the layout opens as the host opens it (key 0, image keys,
    whole labels in [0, num_classes)); InsightFace identity records cover the images in order with
    one label per range; no two keys share a record; every image's size matches ``property`` (or
    112x112); with ``decode``, every image decodes without the decoder having to repair it
    (``decode_image_strict``: corrupt or truncated JPEG data).
    """
    root, rec_path, idx_path = resolve_folder(rec_dir)
    folder = FaceRecFolder(rec_dir)  # index offsets, key 0, image keys, labels
    buf = folder.reader.buffer
    # 1. The .rec from start to end, record by record.
    starts = []
    pos = 0
    while pos < len(buf):
        starts.append(pos)
        _, pos = read_framed(buf, pos, file=rec_path)
    if pos != len(buf):
        raise RecordIOError("trailing bytes after the last record", file=rec_path, offset=pos)
    # 2. Every index entry points at a record start and holds an IRHeader.
    starts_arr = np.asarray(starts, dtype=np.int64)
    keys, offsets = folder.reader.key_array, folder.reader.offset_array
    not_start = ~np.isin(offsets, starts_arr)
    if not_start.any():
        i = int(np.argmax(not_start))
        raise RecordIOError(
            "index offset is not the start of a record", file=idx_path, key=int(keys[i]), offset=int(offsets[i])
        )
    # (duplicated keys and keys sharing a record: refused by FaceRecFolder, folder.check_index)
    for k, off in zip(keys.tolist(), offsets.tolist()):
        record = read_framed(buf, off, file=rec_path, key=k)[0]
        try:
            unpack(record)
        except RecordIOError as e:
            raise RecordIOError(e.reason, file=rec_path, key=k, offset=off) from None
    # 3. Identity records (InsightFace layout): consecutive ranges covering keys 1..N, one label each.
    # (checked by FaceRecFolder when it opens the folder: folder.check_identity_records)
    # 4. Image sizes (from the JPEG/PNG headers), optionally a full decode.
    prop = read_property(root / "property") if root.is_dir() else None
    want = (prop[1], prop[2]) if prop is not None else (112, 112)
    for i in _progress(range(len(folder)), len(folder), "check", progress):
        key = int(folder.image_keys[i])
        data = folder.jpeg(i)
        try:
            hw = decode_image_strict(data).shape[:2] if decode else image_size(data)
        except ValueError as e:
            raise RecordIOError(f"image: {e}", file=rec_path, key=key, offset=folder.reader.offset(key)) from None
        if tuple(hw) != want:
            raise RecordIOError(
                f"image is {hw[0]}x{hw[1]}, expected {want[0]}x{want[1]}",
                file=rec_path,
                key=key,
                offset=folder.reader.offset(key),
            )
    summary = {
        "path": str(root),
        "records": len(starts),
        "index_keys": len(keys),
        "images": len(folder),
        "layout": folder.layout,
        "ok": True,
    }
    folder.close()
    return summary


__all__ = [
    "folder_to_rec",
    "rec_to_folder",
    "rec_info",
    "check_rec",
    "list_image_folder",
    "stored_image_ext",
    "IMAGE_EXTENSIONS",
]
