"""Writing `.rec` / `.idx` files byte-identical to mxnet 1.9.1, and InsightFace-layout shards.

Every file is written under a temporary name in its folder and renamed on ``close()``; leaving a
``with`` block through an exception, or a ``close()`` that fails (a full disk), removes the temporary
files, so an interrupted writer never leaves a half-written `.rec` under its final name nor a
``.tmp-PID`` file beside it. A failed write (``OSError``) is reported as a RecordIOError naming the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..io_utils import tmp_name, write_text_atomic
from .format import (
    IR_FORMAT,
    IR_SIZE,
    MAGIC,
    MAGIC_BYTES,
    MAX_EXACT_LABEL,
    MAX_RECORD_LENGTH,
    Committing,
    IRHeader,
    RecordIOError,
    encode_jpeg,
    frame_pieces,
    image_size,
    pack,
)

# Record framing (magic, lrec) and the image's IRHeader in one pack: the shard writer's per-image fast path.
_FRAMED_IMAGE_HEADER = struct.Struct("<II" + IR_FORMAT.lstrip("<"))
_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")


def _write_error(e: OSError, path: Path) -> RecordIOError:
    return RecordIOError(f"cannot write ({e.strerror or e}); the temporary files were removed", file=path)


def _sync_close(f) -> None:
    """Flush, fsync and close: the bytes are on disk before the file is renamed to its final name."""
    f.flush()
    os.fsync(f.fileno())
    f.close()


class RecordIOWriter(Committing):
    """Sequential `.rec` writer: ``write(buf)`` appends one record (split like dmlc when needed)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tmp_name(self.path)
        self._f = open(self._tmp, "wb", buffering=1 << 20)
        self._pos = 0
        self.closed = False

    def write(self, buf: bytes) -> None:
        self._write_pieces(frame_pieces(buf))

    def _write_pieces(self, pieces: list[bytes]) -> None:
        write = self._f.write
        try:
            for piece in pieces:
                self._pos += write(piece)
        except OSError as e:
            self.abort()
            raise _write_error(e, self.path) from None

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        """Flush, fsync and rename to the final name (on failure: nothing renamed, temporary file removed)."""
        if self.closed:
            return
        try:
            _sync_close(self._f)
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.abort()
            raise _write_error(e, self.path) from None
        self.closed = True

    def abort(self) -> None:
        """Drop everything written: the temporary file is removed, the final name is untouched."""
        if self.closed:
            return
        try:
            self._f.close()  # a full disk can fail the final flush here too
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)
        self.closed = True


class IndexedRecordIOWriter(RecordIOWriter):
    """`.rec` + `.idx` writer: ``write_idx(key, buf)`` records ``"{key}\\t{offset}\\n"`` like mxnet.

    A key written twice is refused (mxnet would accept it and its reader would keep the last one).
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        super().__init__(rec_path)
        self.idx_path = Path(idx_path)
        self._idx_tmp = tmp_name(self.idx_path)
        self._idx = open(self._idx_tmp, "w", encoding="ascii", buffering=1 << 16)
        self._keys: set[int] = set()

    def write_idx(self, key: int, buf: bytes) -> None:
        key = int(key)
        if key in self._keys:
            raise RecordIOError("key written twice", file=self.idx_path, key=key, offset=self._pos)
        self._keys.add(key)
        self._write_idx_parts(key, b"", buf)

    def _write_idx_parts(self, key: int, head: bytes, payload: bytes) -> None:
        # No duplicate check here: the shard writer's keys are sequential by construction, and a set of
        # millions of keys would cost hundreds of MB.
        try:
            self._idx.write(f"{key}\t{self._pos}\n")
        except OSError as e:
            self.abort()
            raise _write_error(e, self.idx_path) from None
        self._write_pieces(frame_pieces(payload, head))

    def _write_image(self, key: int, label: int, payload: bytes) -> None:
        """``IRHeader(0, label, key, 0) + payload`` under ``key``: the bytes ``write_idx(key, pack(...))`` writes.

        No magic word anywhere in the header or the payload (the common case) means no split, so the
        record is one packed 32-byte head, the payload and the padding; otherwise the general framing.
        """
        n = IR_SIZE + len(payload)
        head = _FRAMED_IMAGE_HEADER.pack(MAGIC, n, 0, label, key, 0)
        if n >= MAX_RECORD_LENGTH or head.find(MAGIC_BYTES, 8) != -1 or MAGIC_BYTES in payload:
            self._write_idx_parts(key, head[8:], payload)
            return
        pad = _PADS[-n % 4]
        try:
            self._idx.write(f"{key}\t{self._pos}\n")
            write = self._f.write
            write(head)
            write(payload)
            if pad:
                write(pad)
        except OSError as e:
            self.abort()
            raise _write_error(e, self.path) from None
        self._pos += 8 + n + len(pad)

    def close(self) -> None:
        if self.closed:
            return
        try:
            _sync_close(self._idx)
        except OSError as e:
            self.abort()
            raise _write_error(e, self.idx_path) from None
        # The .rec lands first: an .idx under its final name always describes a complete .rec.
        super().close()
        try:
            os.replace(self._idx_tmp, self.idx_path)
        except OSError as e:
            self._idx_tmp.unlink(missing_ok=True)
            raise _write_error(e, self.idx_path) from None

    def abort(self) -> None:
        if self.closed:
            return
        try:
            self._idx.close()
        except OSError:
            pass
        self._idx_tmp.unlink(missing_ok=True)
        super().abort()


class FaceRecWriter(Committing):
    """Writes one whole InsightFace-layout folder (``train.rec``, ``train.idx``, ``property``); the writer
    of what ``FaceRecFolder`` reads. It never rolls over to another folder: a generation run opens one per
    shard.

    Images go to keys 1..N with ``IRHeader(0, label, key, 0)``; ``close()`` adds one identity record
    per label at keys N+1..N+C (label ``[first_key, end_key)``, empty payload) and then key 0 =
    ``IRHeader(0, [N+1, N+C+1], 0, 1)``, the order mxnet-based tools write them in. Each label's
    images must come contiguously, since an identity record is a key range.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        num_classes: int | None = None,
        quality: int = 95,
        image_size: int | None = 112,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.num_classes = None if num_classes is None else int(num_classes)
        if self.num_classes is not None and not 0 < self.num_classes <= MAX_EXACT_LABEL:
            raise RecordIOError(f"num_classes {num_classes} must be in 1..2**24", file=self.out_dir)
        self.quality = int(quality)
        self.image_size = image_size
        self.rec_path, self.idx_path = self.out_dir / "train.rec", self.out_dir / "train.idx"
        self._w = IndexedRecordIOWriter(self.idx_path, self.rec_path)
        self._ranges: list[tuple[int, int]] = []  # (label, first_key); a range ends where the next starts
        self._seen: set[int] = set()
        self._cur_label: int | None = None
        self._key = 1
        self.num_images = 0
        self.labels_range: tuple[int, int] | None = None
        self.closed = False

    def _check_label(self, label) -> int:
        if isinstance(label, (float, np.floating)) and not float(label).is_integer():
            raise RecordIOError(f"label {label!r} is not an integer", file=self.rec_path, key=self._key)
        try:
            lab = int(label)
        except (TypeError, ValueError):
            raise RecordIOError(f"label {label!r} is not an integer", file=self.rec_path, key=self._key) from None
        if lab < 0 or lab >= MAX_EXACT_LABEL:
            raise RecordIOError(
                f"label {lab} outside [0, 2**24): float32 labels would corrupt it", file=self.rec_path, key=self._key
            )
        if self.num_classes is not None and lab >= self.num_classes:
            raise RecordIOError(
                f"label {lab} outside [0, num_classes={self.num_classes})", file=self.rec_path, key=self._key
            )
        if lab != self._cur_label:
            if lab in self._seen:
                raise RecordIOError(
                    f"label {lab} comes back after other labels: each label's images must be written contiguously",
                    file=self.rec_path,
                    key=self._key,
                )
        return lab

    def _payload(self, image) -> bytes:
        size = self.image_size
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            if size is not None:
                try:
                    hw = image_size(data)
                except ValueError as e:
                    raise RecordIOError(f"image bytes: {e}", file=self.rec_path, key=self._key) from None
                if hw != (size, size):
                    raise RecordIOError(
                        f"image is {hw[0]}x{hw[1]}, expected {size}x{size}", file=self.rec_path, key=self._key
                    )
            return data
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise RecordIOError(
                f"image must be RGB uint8 HxWx3, got {img.dtype} {img.shape}", file=self.rec_path, key=self._key
            )
        if size is not None and img.shape[:2] != (size, size):
            raise RecordIOError(
                f"image is {img.shape[0]}x{img.shape[1]}, expected {size}x{size}", file=self.rec_path, key=self._key
            )
        return encode_jpeg(img, self.quality)

    def write(self, image, label) -> int:
        """Add one image (RGB uint8 HxWx3, or encoded JPEG/PNG bytes kept verbatim); returns its key."""
        if self.closed:
            raise RecordIOError("write after close", file=self.rec_path)
        # Fast path: the same identity as the previous image was already checked.
        lab = label if label.__class__ is int and label == self._cur_label else self._check_label(label)
        payload = self._payload(image)
        key = self._key
        # Keys are stored as float32 labels in the identity / key-0 records: refuse before they round.
        if key + len(self._ranges) + 2 >= MAX_EXACT_LABEL:
            raise RecordIOError("too many records for float32 key ranges (2**24)", file=self.rec_path, key=key)
        # The label is already checked to be a whole number below 2**24: pack the header directly.
        self._w._write_image(key, lab, payload)
        if lab != self._cur_label:
            self._ranges.append((lab, key))
            self._seen.add(lab)
            self._cur_label = lab
        self._key += 1
        self.num_images += 1
        return key

    def close(self) -> None:
        if self.closed:
            return
        if not self._ranges:
            self.abort()
            raise RecordIOError("no images were written", file=self.rec_path)
        n, c = self.num_images, len(self._ranges)
        ends = [first for _, first in self._ranges[1:]] + [n + 1]
        try:
            for i, ((_, first), end) in enumerate(zip(self._ranges, ends)):
                key = n + 1 + i
                self._w.write_idx(key, pack(IRHeader(0, [float(first), float(end)], key, 0), b""))
            self._w.write_idx(0, pack(IRHeader(0, [float(n + 1), float(n + c + 1)], 0, 1), b""))
        except BaseException:
            self.abort()
            raise
        self._w.close()
        labels = [r[0] for r in self._ranges]
        self.labels_range = (min(labels), max(labels) + 1)
        if self.num_classes is None:
            self.num_classes = self.labels_range[1]
        side = self.image_size or 112
        self.closed = True
        try:
            write_text_atomic(self.out_dir / "property", f"{self.num_classes},{side},{side}\n")
        except OSError as e:
            raise _write_error(e, self.out_dir / "property") from None

    def abort(self) -> None:
        self._w.abort()
        self.closed = True
