"""Reading `.rec` files: sequentially, or by key through the `.idx` file, memory-mapped.

The indexed reader parses the `.idx` once into numpy arrays (keys, offsets) and a key -> offset
dict; a read is then one dict lookup, one 8-byte header check and one slice of the mmap. The
mmap is opened lazily and dropped when pickled, so a reader can be handed to DataLoader workers
and each process maps the file itself.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from .format import CFLAG_WHOLE, LENGTH_MASK, MAGIC, Closing, RecordIOError, read_framed

_LREC = struct.Struct("<II")
_I64 = 1 << 63


class _MappedFile:
    """A read-only mmap of one file, opened on first use in each process (pickles without it)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._buf = None
        self._pid = None

    @property
    def buf(self):
        if self._buf is None or self._pid != os.getpid():
            self._open()
        return self._buf

    def _open(self) -> None:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # mmap cannot map an empty file; an empty .rec is simply no records.
                self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except FileNotFoundError:
            raise RecordIOError("file not found", file=self.path) from None
        self._pid = os.getpid()

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path, self._buf, self._pid = state["path"], None, None


class RecordIOReader(Closing):
    """Sequential reader of a `.rec` file: ``read()`` returns the next record, or None at the end."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = _MappedFile(self.path)
        _ = self._file.buf  # fail now on a missing file
        self._pos = 0

    def read(self) -> bytes | None:
        buf = self._file.buf
        if self._pos >= len(buf):
            return None
        record, self._pos = read_framed(buf, self._pos, file=self.path)
        return record

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int) -> None:
        self._pos = int(offset)

    def reset(self) -> None:
        self._pos = 0

    def __iter__(self):
        self.reset()
        while (record := self.read()) is not None:
            yield record

    def close(self) -> None:
        self._file.close()


def parse_idx(idx_path: str | os.PathLike, rec_size: int | None = None, rec_path=None) -> tuple[np.ndarray, np.ndarray]:
    """Parse a `.idx` file -> (keys int64, offsets int64) in file order.

    With ``rec_size``, every offset is checked to leave room for a record header in the `.rec`.
    """
    idx_path = Path(idx_path)
    try:
        text = idx_path.read_bytes()
    except FileNotFoundError:
        raise RecordIOError("index file not found", file=idx_path) from None
    k = o = None
    tokens = text.split()
    # Fast path: a well-formed file is exactly two integer tokens per line; numpy parses them at once.
    if len(tokens) % 2 == 0 and text.count(b"\n") + (not text.endswith(b"\n") and bool(text)) == len(tokens) // 2:
        try:
            pairs = np.array(tokens, dtype=np.bytes_).astype(np.int64).reshape(-1, 2)
            k, o = pairs[:, 0].copy(), pairs[:, 1].copy()
        except (ValueError, OverflowError):
            pass
    if k is None:  # the careful path, naming the first bad line
        keys: list[int] = []
        offsets: list[int] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split(b"\t")
            if len(fields) != 2:
                fields = line.split()
            try:
                key, off = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise RecordIOError(f"line {lineno} is not 'key<TAB>offset': {line[:60]!r}", file=idx_path) from None
            if not (-_I64 <= key < _I64 and 0 <= off < _I64):
                # numpy would raise OverflowError below; an offset is a byte position in the .rec.
                raise RecordIOError(
                    f"line {lineno}: key {key} or offset {off} is out of range (a 64-bit key and an "
                    "offset in [0, 2**63))",
                    file=idx_path,
                )
            keys.append(key)
            offsets.append(off)
        k = np.asarray(keys, dtype=np.int64)
        o = np.asarray(offsets, dtype=np.int64)
    if rec_size is not None and o.size:
        # ``o > rec_size - 8``, not ``o + 8 > rec_size``: an offset near 2**63 would wrap around (and numpy warn).
        bad = np.flatnonzero((o < 0) | (o > rec_size - 8) | (o % 4 != 0))
        if bad.size:
            i = int(bad[0])
            off = int(o[i])
            why = (
                "is not 4-byte aligned"
                if 0 <= off <= rec_size - 8
                else f"is past the end of {rec_path} ({rec_size} bytes)"
            )
            raise RecordIOError(f"index offset {why}", file=idx_path, key=int(k[i]), offset=off)
    return k, o


class IndexedRecordIOReader(Closing):
    """Random access by key (``read_idx``) through the `.idx`, over a memory-mapped `.rec`.

    ``keys`` is the list of keys in `.idx` order (as mxnet's ``MXIndexedRecordIO.keys``); with a
    duplicated key the last entry wins, as in mxnet.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        self.idx_path, self.path = Path(idx_path), Path(rec_path)
        self._file = _MappedFile(self.path)
        size = len(self._file.buf)
        self.key_array, self.offset_array = parse_idx(self.idx_path, size, self.path)
        self.keys = self.key_array.tolist()
        self._offset = dict(zip(self.keys, self.offset_array.tolist()))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key) -> bool:
        return key in self._offset

    def offsets_of(self, keys: np.ndarray) -> np.ndarray:
        """Offsets of many keys at once (int64); raises naming the first key not in the index."""
        keys = np.asarray(keys, dtype=np.int64)
        order = np.argsort(self.key_array, kind="stable")
        sorted_keys = self.key_array[order]
        # side="right" - 1 picks the last entry of a duplicated key, as the key -> offset dict does.
        pos = np.searchsorted(sorted_keys, keys, side="right") - 1
        found = (
            (pos >= 0) & (sorted_keys[np.clip(pos, 0, None)] == keys) if len(sorted_keys) else np.zeros(len(keys), bool)
        )
        if not found.all():
            raise RecordIOError("key not in the index", file=self.idx_path, key=int(keys[np.argmin(found)]))
        return self.offset_array[order[pos]]

    def offset(self, key: int) -> int:
        try:
            return self._offset[key]
        except KeyError:
            raise RecordIOError("key not in the index", file=self.idx_path, key=key) from None

    def read_idx(self, key: int) -> bytes:
        """The record stored under ``key`` (multi-part records are joined)."""
        try:
            pos = self._offset[key]
        except KeyError:
            raise RecordIOError("key not in the index", file=self.idx_path, key=key) from None
        buf = self._file.buf
        # Fast path: a whole record (the common case) is one header check and one slice.
        magic, lrec = _LREC.unpack_from(buf, pos)
        end = pos + 8 + (lrec & LENGTH_MASK)
        if magic == MAGIC and lrec >> 29 == CFLAG_WHOLE and end <= len(buf):
            return buf[pos + 8 : end]
        return read_framed(buf, pos, file=self.path, key=key)[0]

    @property
    def buffer(self):
        """The mapped `.rec` bytes (an mmap, or b"" for an empty file)."""
        return self._file.buf

    def close(self) -> None:
        self._file.close()
