"""A face-recognition RecordIO folder (``train.rec``, ``train.idx``, optional ``property``), read like the host.

Two layouts, told apart by key 0 exactly as arcface_torch's MXFaceDataset does:
- InsightFace: key 0's header has flag > 0; images are keys ``1 .. label[0]-1`` and the records
  ``label[0] .. label[1]-1`` hold one ``[first_key, end_key)`` range per identity.
- im2rec: key 0 has flag 0; every key in the `.idx` (key 0 included) is an image.
A sample's label is its header label (the first value of a list label). Labels are checked to be
whole numbers in ``[0, num_classes)``: a wrong label never reaches training silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .format import (
    IR_SIZE,
    LENGTH_MASK,
    MAGIC,
    MAX_EXACT_LABEL,
    Closing,
    IRHeader,
    RecordIOError,
    decode_image,
    first_label,
    read_framed,
    unpack,
)
from .reader import IndexedRecordIOReader


def read_property(path: str | os.PathLike) -> tuple[int, ...] | None:
    """``property`` file -> (num_classes, height, width); None when the file does not exist."""
    p = Path(path)
    if not p.is_file():
        return None
    first = p.read_text().strip().splitlines()[:1]
    try:
        values = tuple(int(v) for v in first[0].split(","))
        if len(values) != 3 or values[0] <= 0:
            raise ValueError
    except (ValueError, IndexError):
        raise RecordIOError(f"expected 'num_classes,height,width' on the first line, got {first!r}", file=p) from None
    return values


def resolve_folder(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """A folder (or its train.rec / train.idx) -> (folder, rec, idx)."""
    p = Path(path)
    if p.suffix in (".rec", ".idx") and not p.is_dir():
        return p.parent, p.with_suffix(".rec"), p.with_suffix(".idx")
    return p, p / "train.rec", p / "train.idx"


class FaceRecFolder(Closing):
    """Images and labels of an InsightFace-layout or im2rec-layout RecordIO folder (memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.root, self.rec_path, self.idx_path = resolve_folder(path)
        if not self.rec_path.is_file():
            raise RecordIOError("train.rec not found", file=self.rec_path)
        if not self.idx_path.is_file():
            raise RecordIOError("train.idx not found", file=self.idx_path)
        self.reader = IndexedRecordIOReader(self.idx_path, self.rec_path)
        self.check_index()
        self.property = read_property(self.root / "property") if self.root.is_dir() else None
        if 0 not in self.reader:
            raise RecordIOError(
                "key 0 is missing from the index (both layouts need it: it tells them apart)", file=self.idx_path, key=0
            )
        header0, _ = self.read(0)
        self._identity_keys: tuple[int, int] | None = None
        if header0.flag > 0:
            self.layout = "insightface"
            lab = header0.label
            if len(lab) < 2:
                raise RecordIOError(
                    f"key 0 has label {lab}: the InsightFace layout needs [first_identity_key, end_key]",
                    file=self.rec_path,
                    key=0,
                    offset=self.reader.offset(0),
                )
            first_id, end_id = (self._whole(v, 0, "key-0 label") for v in lab[:2])
            if first_id < 1 or end_id < first_id:
                raise RecordIOError(
                    f"key 0 label {lab} is not a valid [first_identity_key, end_key] range",
                    file=self.rec_path,
                    key=0,
                    offset=self.reader.offset(0),
                )
            self.image_keys = np.arange(1, first_id, dtype=np.int64)
            self._check_present(self.image_keys, "image")
            self._identity_keys = (first_id, end_id)
        else:
            self.layout = "im2rec"
            self.image_keys = self.reader.key_array.copy()
        offsets = self.reader.offsets_of(self.image_keys)
        self.labels = self._read_labels(self.image_keys, offsets)
        if self.property is not None:
            self.num_classes = int(self.property[0])
        else:
            self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        if len(self.labels) and self.labels.max() >= self.num_classes:
            i = int(np.argmax(self.labels >= self.num_classes))
            k = int(self.image_keys[i])
            raise RecordIOError(
                f"label {int(self.labels[i])} >= num_classes {self.num_classes} (from {self.root / 'property'})",
                file=self.rec_path,
                key=k,
                offset=self.reader.offset(k),
            )
        self._identity_ranges: dict[int, tuple[int, int]] | None = None
        self.check_identity_records()

    # Checks.

    def check_index(self) -> None:
        """Every reader refuses an index whose keys repeat or share a record (``rec check`` did alone before):
        mxnet's last-entry-wins or a second key on one record gives an image, and its label, twice or not at all."""
        keys, offsets = self.reader.key_array, self.reader.offset_array
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            k = int(uniq[np.argmax(counts > 1)])
            raise RecordIOError("key appears more than once in the index", file=self.idx_path, key=k)
        uniq, counts = np.unique(offsets, return_counts=True)
        if (counts > 1).any():
            off = int(uniq[np.argmax(counts > 1)])
            same = keys[offsets == off][:2].tolist()
            raise RecordIOError(
                f"keys {same[0]} and {same[1]} point at the same record", file=self.idx_path, key=same[1], offset=off
            )

    def check_identity_records(self) -> None:
        """InsightFace identity records cover the image keys in order, one label per range, each label once
        (the labels a reader gives must agree with the ranges a sampler or ``to-folder`` groups by)."""
        records = self.identity_records()
        if records is None:
            return
        expect = 1
        for k, a, b in records:
            if a != expect:
                raise RecordIOError(
                    f"identity range [{a}, {b}) should start at key {expect} (ranges must cover the images in order)",
                    file=self.rec_path,
                    key=k,
                    offset=self.reader.offset(k),
                )
            seg = self.labels[a - 1 : b - 1]
            if (seg != seg[0]).any():
                bad = a + int(np.argmax(seg != seg[0]))
                raise RecordIOError(
                    f"image label {int(self.labels[bad - 1])} inside the identity range [{a}, {b}) "
                    f"of label {int(seg[0])}",
                    file=self.rec_path,
                    key=bad,
                    offset=self.reader.offset(bad),
                )
            expect = b
        if expect != len(self) + 1:
            raise RecordIOError(f"identity ranges end at key {expect}, images at key {len(self)}", file=self.rec_path)
        _ = self.identity_ranges  # a label with two ranges (not contiguous) raises here

    def _whole(self, value: float, key: int, what: str) -> int:
        if not float(value).is_integer() or not 0 <= value < MAX_EXACT_LABEL:
            raise RecordIOError(
                f"{what} {value} is not a whole number in [0, 2**24)",
                file=self.rec_path,
                key=key,
                offset=self.reader.offset(key),
            )
        return int(value)

    def _check_present(self, keys: np.ndarray, what: str) -> None:
        present = np.isin(keys, self.reader.key_array)
        if not present.all():
            k = int(keys[np.argmin(present)])
            raise RecordIOError(
                f"{what} key {k} is missing from the index (key 0 says keys {keys[0]}..{keys[-1]} exist)",
                file=self.idx_path,
                key=k,
            )

    def _read_labels(self, keys: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Every image's label, read straight from the mapped headers (vectorised for whole records)."""
        buf = self.reader.buffer
        size = len(buf)
        n = len(keys)
        values = np.zeros(n, dtype=np.float64)
        fast = np.zeros(n, dtype=bool)
        if n and size >= 8 + IR_SIZE + 4:
            words = np.frombuffer(buf, dtype="<u4", count=size // 4)
            try:
                w = offsets // 4
                inb = offsets + 8 + IR_SIZE + 4 <= size  # room for framing, header and one list value
                wi = np.where(inb, w, 0)
                magic, lrec, flag = words[wi], words[wi + 1], words[wi + 2]
                length = (lrec & LENGTH_MASK).astype(np.int64)
                fast = (
                    inb
                    & (magic == MAGIC)
                    & (lrec >> 29 == 0)
                    & (offsets + 8 + length <= size)
                    & (length >= IR_SIZE + 4 * flag.astype(np.int64))
                )
                fwords = words.view("<f4")
                values = np.where(flag > 0, fwords[wi + 8], fwords[wi + 3]).astype(np.float64)
                del fwords
            finally:
                del words  # an exported numpy view would keep the mmap from closing
        for i in np.flatnonzero(~fast):  # multi-part, truncated or broken records: the careful path
            k = int(keys[i])
            record = read_framed(buf, int(offsets[i]), file=self.rec_path, key=k)[0]
            try:
                values[i] = first_label(unpack(record)[0])
            except RecordIOError as e:
                raise RecordIOError(e.reason, file=self.rec_path, key=k, offset=int(offsets[i])) from None
        bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values)) | (values >= MAX_EXACT_LABEL)
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordIOError(
                f"label {values[i]} is not a whole number in [0, 2**24) (float32 labels are exact only below 2**24)",
                file=self.rec_path,
                key=int(keys[i]),
                offset=int(offsets[i]),
            )
        return values.astype(np.int64)

    # Access.

    def __len__(self) -> int:
        return len(self.image_keys)

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        """(IRHeader, payload) of any key (images, identity records, key 0)."""
        record = self.reader.read_idx(key)
        try:
            return unpack(record)
        except RecordIOError as e:
            raise RecordIOError(e.reason, file=self.rec_path, key=key, offset=self.reader.offset(key)) from None

    def jpeg(self, i: int) -> bytes:
        """Encoded bytes of the i-th image."""
        return self.read(int(self.image_keys[i]))[1]

    def image(self, i: int) -> np.ndarray:
        """The i-th image as RGB uint8 HxWx3."""
        key = int(self.image_keys[i])
        data = self.read(key)[1]
        try:
            return decode_image(data)
        except ValueError as e:
            raise RecordIOError(str(e), file=self.rec_path, key=key, offset=self.reader.offset(key)) from None

    def label(self, i: int) -> int:
        return int(self.labels[i])

    @property
    def identity_key_range(self) -> tuple[int, int] | None:
        """[first, end) keys of the identity records, as key 0 gives them (InsightFace layout), else None."""
        return self._identity_keys

    def identity_records(self) -> list[tuple[int, int, int]] | None:
        """[(record key, first_key, end_key)] of the InsightFace identity records, in key order; else None."""
        if self._identity_keys is None:
            return None
        first_id, end_id = self._identity_keys
        keys = np.arange(first_id, end_id, dtype=np.int64)
        self._check_present(keys, "identity")
        out = []
        n = len(self.image_keys)
        for k in keys.tolist():
            header, _ = self.read(k)
            lab = header.label
            if not isinstance(lab, tuple) or len(lab) < 2:
                raise RecordIOError(
                    f"identity record label {lab} is not [first_key, end_key)",
                    file=self.rec_path,
                    key=k,
                    offset=self.reader.offset(k),
                )
            a, b = self._whole(lab[0], k, "identity first key"), self._whole(lab[1], k, "identity end key")
            if not 1 <= a < b <= n + 1:
                raise RecordIOError(
                    f"identity range [{a}, {b}) is outside the image keys 1..{n}",
                    file=self.rec_path,
                    key=k,
                    offset=self.reader.offset(k),
                )
            out.append((k, a, b))
        return out

    @property
    def identity_ranges(self) -> dict[int, tuple[int, int]] | None:
        """{label: (first_key, end_key)} from the identity records (InsightFace layout), else None."""
        if self._identity_keys is None:
            return None
        if self._identity_ranges is None:
            ranges = {}
            for k, a, b in self.identity_records():
                lab = int(self.labels[a - 1])  # the label of the range's first image
                if lab in ranges:
                    raise RecordIOError(
                        f"label {lab} has two identity ranges {ranges[lab]} and {(a, b)}",
                        file=self.rec_path,
                        key=k,
                        offset=self.reader.offset(k),
                    )
                ranges[lab] = (a, b)
            self._identity_ranges = ranges
        return self._identity_ranges

    def close(self) -> None:
        self.reader.close()
