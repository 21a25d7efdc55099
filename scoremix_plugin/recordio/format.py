"""RecordIO bytes as dmlc / mxnet 1.9.1 write them: framing, the IRHeader, image payloads.

A record on disk is ``u32 magic, u32 lrec = cflag << 29 | length, payload, zero padding to 4``.
The dmlc writer looks for the magic word inside the payload at 4-byte-aligned offsets; at each
hit it closes a part (cflag 1 = first, 2 = middle) and drops those 4 bytes; the final part has
cflag 3 (cflag 0 when nothing was split). Readers put the magic back between parts. So a reader
can resynchronise on the magic word, and a payload never shows a spurious record start.

The payload of a face dataset starts with an IRHeader (``<IfQQ``: flag, label, id, id2). A list
label sets ``flag = len(list)`` and follows the header as float32 values; labels are float32,
exact only below 2**24, so integer labels at or above 2**24 are refused rather than rounded.

cv2 is imported only by the image helpers.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
import sys
from typing import NamedTuple

import numpy as np

from scoremix_plugin.errors import ScoreMixError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
MAX_RECORD_LENGTH = 1 << 29  # lrec keeps 29 bits for the length
CFLAG_WHOLE, CFLAG_FIRST, CFLAG_MIDDLE, CFLAG_LAST = 0, 1, 2, 3
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
MAX_EXACT_LABEL = 1 << 24  # float32 holds every integer below this, not all above

_LREC = struct.Struct("<II")
_IR = struct.Struct(IR_FORMAT)


class RecordIOError(ScoreMixError, ValueError):
    """Bad RecordIO input. The message names the file, the key and the byte offset where known."""

    def __init__(self, message: str, *, file=None, key=None, offset=None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if key is not None:
            where.append(f"key {key}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.file, self.key, self.offset, self.reason = file, key, offset, message


class IRHeader(NamedTuple):
    """Image record header. ``label`` is a float, or a tuple of floats when ``flag`` > 0 (as read back)."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


# Framing.


def frame(buf: bytes | bytearray | memoryview) -> bytes:
    """One record's bytes on disk, split into parts exactly as dmlc's RecordIOWriter::WriteRecord does."""
    return b"".join(frame_pieces(buf))


def frame_pieces(buf: bytes | bytearray | memoryview, head: bytes = b"") -> list[bytes]:
    """``frame(head + buf)`` as a list of pieces to write one after the other.

    Passing a header apart (its length a multiple of 4, so alignment in ``buf`` is unchanged) saves
    copying a large payload just to prepend it, in the common case where nothing needs splitting.
    """
    buf = bytes(buf)
    if head:
        n = len(head) + len(buf)
        # No magic anywhere means no aligned one (the exact check runs only when there is one).
        if len(head) % 4 == 0 and n < MAX_RECORD_LENGTH and MAGIC_BYTES not in head and MAGIC_BYTES not in buf:
            return [_LREC.pack(MAGIC, n), head, buf, _PADS[-n % 4]]
        buf = head + buf
    n = len(buf)
    if n >= MAX_RECORD_LENGTH:
        raise RecordIOError(f"record of {n} bytes is too long (RecordIO keeps {MAX_RECORD_LENGTH - 1} at most)")
    hits = aligned_magic(buf)
    if not hits:
        return [_LREC.pack(MAGIC, n), buf, _PADS[-n % 4]]
    out = []
    start = 0
    for i in hits:
        out.append(_LREC.pack(MAGIC, ((CFLAG_FIRST if start == 0 else CFLAG_MIDDLE) << 29) | (i - start)))
        out.append(buf[start:i])
        start = i + 4
    out.append(_LREC.pack(MAGIC, (CFLAG_LAST << 29) | (n - start)))
    out.append(buf[start:])
    out.append(_PADS[-n % 4])
    return out


_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")


def aligned_magic(buf: bytes) -> list[int]:
    """Offsets of the magic word at 4-byte-aligned positions of ``buf`` (where dmlc splits a record)."""
    # bytes.find is one C scan, and the magic is almost never there: measured faster than comparing
    # every aligned word with numpy (frombuffer + compare + nonzero) on image-sized payloads.
    i = buf.find(MAGIC_BYTES)
    if i == -1:
        return []
    out = []
    while i != -1:
        if i % 4 == 0:
            out.append(i)
            i = buf.find(MAGIC_BYTES, i + 4)
        else:
            i = buf.find(MAGIC_BYTES, i + 1)
    return out


def read_framed(buf, offset: int, *, file=None, key=None) -> tuple[bytes, int]:
    """Read the record starting at ``offset`` of ``buf`` (bytes or mmap) -> (record bytes, next offset).

    Multi-part records are joined with the magic word put back between parts.
    """
    size = len(buf)
    pos = offset
    parts: list[bytes] = []
    while True:
        if pos + 8 > size:
            what = "truncated record header" if parts or pos < size else "offset at or past the end of the file"
            raise RecordIOError(f"{what} (file is {size} bytes)", file=file, key=key, offset=pos)
        magic, lrec = _LREC.unpack_from(buf, pos)
        if magic != MAGIC:
            raise RecordIOError(f"bad magic 0x{magic:08X} (expected 0x{MAGIC:08X})", file=file, key=key, offset=pos)
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        begin = pos + 8
        end = begin + length
        if end > size:
            raise RecordIOError(
                f"truncated record: needs {length} payload bytes, file has {size - begin}",
                file=file,
                key=key,
                offset=pos,
            )
        expected = (CFLAG_WHOLE, CFLAG_FIRST) if not parts else (CFLAG_MIDDLE, CFLAG_LAST)
        if cflag not in expected:
            raise RecordIOError(
                f"unexpected part flag {cflag} (expected one of {expected})", file=file, key=key, offset=pos
            )
        if cflag == CFLAG_WHOLE:
            return bytes(buf[begin:end]), begin + ((length + 3) & ~3)
        parts.append(bytes(buf[begin:end]))
        pos = begin + ((length + 3) & ~3)
        if cflag == CFLAG_LAST:
            return MAGIC_BYTES.join(parts), pos


# IRHeader.


def _check_label_value(v, *, file=None, key=None) -> float:
    if not isinstance(v, numbers.Real):
        raise RecordIOError(f"label value {v!r} is not a number", file=file, key=key)
    f = float(v)
    if not math.isfinite(f):
        # mxnet stores NaN / inf without complaint; every reader then fails (or trains on it) far from here.
        raise RecordIOError(f"label {v!r} is not a finite number", file=file, key=key)
    # Class ids and key ranges at or above 2**24 would silently change in float32 (2**24 + 1 reads back
    # as 2**24), so nothing that large is written.
    if abs(f) >= MAX_EXACT_LABEL:
        raise RecordIOError(
            f"label {v!r} has magnitude >= 2**24: it cannot be stored exactly as float32 (RecordIO labels are "
            "float32; |label| must be < 2**24)",
            file=file,
            key=key,
        )
    return f


def pack(header, payload: bytes = b"") -> bytes:
    """IRHeader + payload as one record buffer (mxnet.recordio.pack semantics).

    A scalar label forces ``flag = 0``; a list label sets ``flag = len(list)``, stores 0.0 in the
    header and prepends the list as float32.
    """
    flag, label, id_, id2 = IRHeader(*header)
    for name, v in (("id", id_), ("id2", id2)):
        # struct would raise struct.error (not a ValueError) for these; IRHeader ids are unsigned 64-bit.
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or not 0 <= v < 1 << 64:
            raise RecordIOError(f"IRHeader {name} {v!r} is not an integer in [0, 2**64)")
    if isinstance(label, numbers.Number) or (isinstance(label, np.ndarray) and label.ndim == 0):
        lab = _check_label_value(label.item() if isinstance(label, np.ndarray) else label)
        return _IR.pack(0, lab, id_, id2) + bytes(payload)
    values = [
        _check_label_value(v.item() if isinstance(v, np.generic) else v) for v in np.asarray(label).ravel().tolist()
    ]
    arr = np.asarray(values, dtype="<f4")
    return _IR.pack(arr.size, 0.0, id_, id2) + arr.tobytes() + bytes(payload)


def unpack(record: bytes | memoryview) -> tuple[IRHeader, bytes]:
    """Record buffer -> (IRHeader, payload). A list label comes back as a tuple of floats."""
    if len(record) < IR_SIZE:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than an IRHeader ({IR_SIZE} bytes)")
    flag, label, id_, id2 = _IR.unpack_from(record, 0)
    if flag > 0:
        end = IR_SIZE + 4 * flag
        if end > len(record):
            raise RecordIOError(
                f"IRHeader flag {flag} needs {4 * flag} label bytes, record has {len(record) - IR_SIZE}"
            )
        label = tuple(struct.unpack_from(f"<{flag}f", record, IR_SIZE))
        return IRHeader(flag, label, id_, id2), bytes(record[end:])
    return IRHeader(flag, label, id_, id2), bytes(record[IR_SIZE:])


def first_label(header: IRHeader) -> float:
    """The sample label the host uses: the header label, or the first value of a list label."""
    lab = header.label
    if isinstance(lab, tuple):
        if not lab:
            raise RecordIOError("empty label list")
        return lab[0]
    return lab


# Images.


def encode_jpeg(img_rgb: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 HxWx3 -> JPEG bytes, encoded by cv2 from BGR like mxnet's pack_img."""
    import cv2

    img = np.asarray(img_rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_jpeg expects an RGB uint8 HxWx3 array, got {img.dtype} {img.shape}")
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cv2.imencode failed to encode a JPEG")
    return buf.tobytes()


def _imdecode(data, flag: int) -> np.ndarray | None:
    """cv2.imdecode that returns None for empty bytes instead of raising cv2.error (not a ValueError)."""
    import cv2

    arr = np.frombuffer(data, dtype=np.uint8)
    if arr.size == 0:
        return None
    try:
        return cv2.imdecode(arr, flag)
    except cv2.error:  # OpenCV asserts on some malformed headers rather than returning None
        return None


def decode_image(data: bytes | memoryview) -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 HxWx3 (grey images are expanded to 3 channels).

    Raises ValueError when the bytes do not decode (empty, garbage, truncated where the codec says so).
    """
    import cv2

    flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    img = _imdecode(data, flag if flag is not None else cv2.IMREAD_COLOR)
    if img is None:
        head = bytes(memoryview(data)[:4])
        raise ValueError(f"cannot decode image bytes ({len(data)} bytes, starting {head!r})")
    if flag is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


class RecordIOWarning(UserWarning):
    """A RecordIO record the reader used differently from what it stores (the message names file and key)."""


_JPEG_PIPE: tuple[int, int, int] | None = None  # (pid, read end, write end): one pipe per process, reused


def _jpeg_pipe() -> tuple[int, int]:
    global _JPEG_PIPE
    if _JPEG_PIPE is None or _JPEG_PIPE[0] != os.getpid():  # a forked DataLoader worker makes its own
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)  # a full pipe drops text instead of blocking the decoder
        _JPEG_PIPE = (os.getpid(), r, w)
    return _JPEG_PIPE[1], _JPEG_PIPE[2]


def decode_image_warned(data: bytes | memoryview) -> tuple[np.ndarray, str | None]:
    """``decode_image``, and the first line libjpeg printed while decoding (None when it printed none).

    libjpeg decodes corrupt entropy-coded data and truncated files with only a line on stderr ("Corrupt
    JPEG data: ...", "Premature end of JPEG file") and fills in grey; that line is the only sign. So the
    decode runs with file descriptor 2 pointed at a pipe (a few system calls per image), and the line is
    returned instead of printed. Text that is not libjpeg's (another thread's, in that instant) is passed
    on to stderr. Raises ValueError as ``decode_image`` does.
    """
    if bytes(memoryview(data)[:2]) != b"\xff\xd8":
        return decode_image(data), None
    r, w = _jpeg_pipe()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(w, 2)
    try:
        img = decode_image(data)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    chunks = []
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    lines = b"".join(chunks).decode("utf-8", "replace").splitlines()
    ours = [x for x in lines if "JPEG" in x or "JFIF" in x or "marker" in x]
    others = [x for x in lines if x not in ours and x.strip()]
    if others:
        os.write(2, ("\n".join(others) + "\n").encode())
    return img, (ours[0].strip()[:160] if ours else None)


def decode_image_strict(data: bytes | memoryview) -> np.ndarray:
    """``decode_image``, but a JPEG the codec had to repair is an error too (for checks, not for training).

    A JPEG must end with its EOI marker, and libjpeg must decode it without a warning
    (:func:`decode_image_warned`). Corruption that decodes without any warning stays undetectable here.
    """
    data = bytes(data)
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise ValueError(f"truncated JPEG: no end-of-image marker ({len(data)} bytes)")
    img, warned = decode_image_warned(data)
    if warned:
        raise ValueError(f"corrupt JPEG data (the decoder warned: {warned[:120]})")
    return img


def pack_img(header, img_bgr: np.ndarray, quality: int = 95, img_fmt: str = ".jpg") -> bytes:
    """IRHeader + image encoded by cv2 (BGR array, like mxnet.recordio.pack_img)."""
    import cv2

    fmt = img_fmt.lower()
    if fmt in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(quality)]
    else:
        params = []
    ok, buf = cv2.imencode(img_fmt, np.asarray(img_bgr), params)
    if not ok:
        raise ValueError(f"cv2.imencode failed for format {img_fmt}")
    return pack(header, buf.tobytes())


def unpack_img(record: bytes, iscolor: int = -1) -> tuple[IRHeader, np.ndarray]:
    """Record buffer -> (IRHeader, image as cv2 decodes it: BGR)."""
    header, payload = unpack(record)
    img = _imdecode(payload, iscolor)
    if img is None:
        raise RecordIOError(f"cannot decode the image payload ({len(payload)} bytes)")
    return header, img


def image_size(data: bytes | memoryview) -> tuple[int, int]:
    """(height, width) of JPEG or PNG bytes from their headers, without decoding the pixels."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack_from(">II", data, 16)
        return h, w
    raise ValueError(f"not a JPEG or PNG (starts with {bytes(data[:8])!r})")


# SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset({0xD8, 0x01, *range(0xD0, 0xD8)})  # markers without a length field


def _jpeg_size(data) -> tuple[int, int]:
    # Integer indexing, not struct: this walk runs for every image a FaceRecWriter stores.
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _NO_LENGTH:
            pos += 2
        elif marker in _SOF:
            if pos + 9 > n:
                break
            return (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8]
        else:
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    raise ValueError("corrupt JPEG: no frame header (SOF) found")


class Closing:
    """``with`` support for readers: leaving the block closes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Committing:
    """``with`` support for writers: a clean exit closes (the files get their final names), an exception
    aborts (the temporary files are removed)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.abort() if exc_type is not None else self.close()
