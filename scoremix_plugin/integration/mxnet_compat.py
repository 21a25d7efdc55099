"""A stand-in ``mxnet`` module so the unchanged arcface_torch host runs without mxnet.

The host imports mxnet at the top of ``dataset.py`` and ``eval/verification.py``; mxnet 1.9.1 (its
last release) no longer imports with numpy >= 1.24, and numpy < 1.24 has no Python 3.12 wheels.
The host only uses a handful of mxnet names, all of them RecordIO and image decoding, so
``install()`` registers a module ``mxnet`` (with ``mxnet.recordio``, ``mxnet.image``,
``mxnet.ndarray`` / ``mxnet.nd``) that implements exactly those names on top of
``scoremix_plugin.recordio``:

- ``recordio``: ``MXRecordIO(uri, 'r'|'w')``, ``MXIndexedRecordIO(idx, uri, 'r'|'w')`` (``read``,
  ``write``, ``read_idx``, ``write_idx``, ``keys``, ``seek``, ``tell``, ``reset``, ``close``),
  ``IRHeader``, ``pack``, ``unpack``, ``pack_img``, ``unpack_img``;
- ``image``: ``imdecode`` (RGB by default, like mxnet), ``resize_short``;
- ``ndarray`` / ``nd``: ``array``, ``transpose``, ``flip``, and an ``NDArray`` with ``asnumpy()``.

Anything else raises an AttributeError saying the name is not provided by this shim, rather than
failing somewhere later. A real, importable mxnet always wins: ``install()`` then does nothing.
Importing scoremix never installs the shim; only the ``arcface-train`` launcher (or a test) does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import numpy as np

SHIM_VERSION = "1.9.1+scoremix.shim"
_MARK = "__scoremix_shim__"
_SUBMODULES = ("recordio", "image", "ndarray")


class ShimNotProvided(AttributeError):
    """An mxnet name the host does not use, so the shim does not implement it."""


def _missing(module: str, name: str) -> ShimNotProvided:
    return ShimNotProvided(
        f"{module}.{name} is not provided by scoremix's mxnet shim (scoremix_plugin.integration.mxnet_compat), "
        "which implements only what arcface_torch uses: recordio.MXRecordIO / MXIndexedRecordIO / IRHeader / "
        "pack / unpack / pack_img / unpack_img, image.imdecode / resize_short, nd.array / transpose / flip and "
        "NDArray.asnumpy(). Install a working mxnet if you need more."
    )


def _strict_getattr(module_name: str):
    def __getattr__(name: str):
        if name.startswith("__") and name.endswith("__"):
            # Import machinery and introspection probe dunders; answer them like an ordinary module.
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        raise _missing(module_name, name)

    return __getattr__


# NDArray.


class NDArray:
    """The few NDArray behaviours the host relies on: shape / dtype, ``asnumpy()`` (a copy, as in mxnet)."""

    __slots__ = ("_data",)

    def __init__(self, data: np.ndarray):
        self._data = np.asarray(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    def asnumpy(self) -> np.ndarray:
        return np.array(self._data, copy=True)

    def astype(self, dtype, copy: bool = True) -> NDArray:
        return NDArray(self._data.astype(dtype, copy=copy))

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{self._data!r}\n<NDArray {'x'.join(map(str, self.shape))} (scoremix mxnet shim)>"

    def __getattr__(self, name: str):
        raise _missing("mxnet.ndarray.NDArray", name)


def _np(x) -> np.ndarray:
    return x._data if isinstance(x, NDArray) else np.asarray(x)


def nd_array(source_array, ctx=None, dtype=None) -> NDArray:
    """mxnet.nd.array: numpy inputs keep their dtype, anything else becomes float32 (mxnet's default)."""
    if dtype is None:
        dtype = source_array.dtype if isinstance(source_array, (np.ndarray, NDArray)) else np.float32
    return NDArray(np.array(_np(source_array), dtype=dtype, copy=True))


def nd_transpose(data, axes=(), **_ignored) -> NDArray:
    return NDArray(np.ascontiguousarray(np.transpose(_np(data), axes if axes else None)))


def nd_flip(data, axis, **_ignored) -> NDArray:
    return NDArray(np.ascontiguousarray(np.flip(_np(data), axis=axis)))


# Image.


def imdecode(buf, flag: int = 1, to_rgb: int = 1, out=None) -> NDArray:
    """Encoded bytes -> NDArray HxWxC uint8: RGB (to_rgb=1, mxnet's default), BGR, or grey (flag=0: HxWx1)."""
    import cv2

    from ..recordio import decode_image

    if out is not None:
        raise _missing("mxnet.image.imdecode", "out")
    if isinstance(buf, NDArray):
        buf = buf.asnumpy()
    data = np.frombuffer(bytes(buf), dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.astype(np.uint8)
    if flag == 0:
        img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"mxnet shim imdecode: cannot decode {data.size} bytes")
        return NDArray(img[:, :, None])
    img = decode_image(data.tobytes())  # RGB, the one decoder of the project
    return NDArray(img if to_rgb else np.ascontiguousarray(img[:, :, ::-1]))


def resize_short(src, size: int, interp: int = 2) -> NDArray:
    """Resize so the shorter edge is ``size`` (mxnet's integer arithmetic for the longer edge).

    mxnet hands ``interp`` to OpenCV unchanged (0 nearest, 1 linear, 2 cubic, 3 area, 4 lanczos);
    9 means cubic when enlarging and area when shrinking.
    """
    import cv2

    img = _np(src)
    h, w = img.shape[:2]
    new_h, new_w = (size * h // w, size) if h > w else (size, size * w // h)
    if interp == 9:
        interp = cv2.INTER_CUBIC if new_h * new_w > h * w else cv2.INTER_AREA
    elif interp not in (0, 1, 2, 3, 4):
        raise _missing("mxnet.image.resize_short", f"interp={interp}")
    out = cv2.resize(img, (new_w, new_h), interpolation=int(interp))
    if out.ndim == 2:
        out = out[:, :, None]
    return NDArray(out)


# RecordIO.


def _mx_unpack(s: bytes):
    """mxnet.recordio.unpack: a list label comes back as a float32 numpy array, as in mxnet."""
    from ..recordio import IRHeader, unpack

    header, payload = unpack(s)
    if isinstance(header.label, tuple):
        header = IRHeader(header.flag, np.asarray(header.label, dtype=np.float32), header.id, header.id2)
    return header, payload


def _mx_unpack_img(s: bytes, iscolor: int = -1):
    from ..recordio import unpack_img

    header, img = unpack_img(s, iscolor)
    if isinstance(header.label, tuple):
        header = header._replace(label=np.asarray(header.label, dtype=np.float32))
    return header, img


class MXRecordIO:
    """Sequential `.rec` access with mxnet's interface; writers commit (rename into place) on ``close()``."""

    def __init__(self, uri, flag: str):
        self.uri = str(uri)
        self.flag = flag
        self.is_open = False
        self.open()

    def open(self) -> None:
        from ..recordio import RecordIOReader, RecordIOWriter

        if self.flag == "w":
            self._writer, self._reader, self.writable = RecordIOWriter(self.uri), None, True
        elif self.flag == "r":
            self._reader, self._writer, self.writable = RecordIOReader(self.uri), None, False
        else:
            raise ValueError(f"mxnet shim MXRecordIO: invalid flag {self.flag!r} (expected 'r' or 'w')")
        self.is_open = True

    def close(self) -> None:
        if not self.is_open:
            return
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()
        self.is_open = False

    def __del__(self):
        # mxnet closes (and so keeps) a file whose writer was never closed explicitly; do the same.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing sensible left to report
            pass

    def reset(self) -> None:
        self.close()
        self.open()

    def write(self, buf: bytes) -> None:
        if not self.writable:
            raise ValueError(f"{self.uri}: MXRecordIO opened with flag 'r' cannot write")
        self._writer.write(bytes(buf))

    def read(self) -> bytes | None:
        if self.writable:
            raise ValueError(f"{self.uri}: MXRecordIO opened with flag 'w' cannot read")
        return self._reader.read()

    def tell(self) -> int:
        return (self._writer or self._reader).tell()

    def __getattr__(self, name: str):
        raise _missing("mxnet.recordio.MXRecordIO", name)


class MXIndexedRecordIO(MXRecordIO):
    """`.idx` + `.rec` random access with mxnet's interface (``keys`` in index order, ``idx`` key -> offset)."""

    def __init__(self, idx_path, uri, flag: str, key_type=int):
        self.idx_path = str(idx_path)
        self.key_type = key_type
        super().__init__(uri, flag)

    def open(self) -> None:
        from ..recordio import IndexedRecordIOReader, IndexedRecordIOWriter

        if self.flag == "w":
            self._writer, self._reader, self.writable = IndexedRecordIOWriter(self.idx_path, self.uri), None, True
            self.idx: dict = {}
            self.keys: list = []
        elif self.flag == "r":
            self._reader, self._writer, self.writable = IndexedRecordIOReader(self.idx_path, self.uri), None, False
            self.keys = [self.key_type(k) for k in self._reader.keys]
            self.idx = dict(zip(self.keys, self._reader.offset_array.tolist()))
        else:
            raise ValueError(f"mxnet shim MXIndexedRecordIO: invalid flag {self.flag!r} (expected 'r' or 'w')")
        self._pos: int | None = None
        self.is_open = True

    def seek(self, idx) -> None:
        if self.writable:
            raise ValueError(f"{self.uri}: MXIndexedRecordIO opened with flag 'w' cannot seek")
        self._pos = self._reader.offset(self.key_type(idx))

    def tell(self) -> int:
        return self._writer.tell() if self.writable else (self._pos or 0)

    def read(self) -> bytes | None:
        if self.writable:
            raise ValueError(f"{self.uri}: MXIndexedRecordIO opened with flag 'w' cannot read")
        from ..recordio.format import read_framed

        pos = self._pos or 0
        buf = self._reader.buffer
        if pos >= len(buf):
            return None
        record, self._pos = read_framed(buf, pos, file=self.uri)
        return record

    def read_idx(self, idx) -> bytes:
        if self.writable:
            raise ValueError(f"{self.uri}: MXIndexedRecordIO opened with flag 'w' cannot read")
        return bytes(self._reader.read_idx(self.key_type(idx)))

    def write_idx(self, idx, buf: bytes) -> None:
        if not self.writable:
            raise ValueError(f"{self.uri}: MXIndexedRecordIO opened with flag 'r' cannot write")
        key = self.key_type(idx)
        self.idx[key] = self._writer.tell()
        self.keys.append(key)
        self._writer.write_idx(key, bytes(buf))

    def __getattr__(self, name: str):
        raise _missing("mxnet.recordio.MXIndexedRecordIO", name)


# Installation.


def _new_module(name: str, doc: str, attrs: dict[str, Any]) -> types.ModuleType:
    mod = types.ModuleType(name, doc)
    mod.__dict__.update(attrs)
    mod.__getattr__ = _strict_getattr(name)  # module-level __getattr__ (PEP 562)
    setattr(mod, _MARK, True)
    return mod


def _build() -> dict[str, types.ModuleType]:
    from ..recordio import IRHeader, pack, pack_img

    recordio = _new_module(
        "mxnet.recordio",
        "scoremix shim of mxnet.recordio",
        {
            "MXRecordIO": MXRecordIO,
            "MXIndexedRecordIO": MXIndexedRecordIO,
            "IRHeader": IRHeader,
            "pack": pack,
            "unpack": _mx_unpack,
            "pack_img": pack_img,
            "unpack_img": _mx_unpack_img,
        },
    )
    image = _new_module(
        "mxnet.image",
        "scoremix shim of mxnet.image",
        {
            "imdecode": imdecode,
            "resize_short": resize_short,
        },
    )
    ndarray = _new_module(
        "mxnet.ndarray",
        "scoremix shim of mxnet.ndarray",
        {
            "NDArray": NDArray,
            "array": nd_array,
            "transpose": nd_transpose,
            "flip": nd_flip,
        },
    )
    mxnet = _new_module(
        "mxnet",
        __doc__.splitlines()[0],
        {
            "__version__": SHIM_VERSION,
            "recordio": recordio,
            "image": image,
            "ndarray": ndarray,
            "nd": ndarray,
            "__path__": [],  # a package, so `import mxnet.recordio` / `from mxnet import ndarray` resolve
        },
    )
    return {
        "mxnet": mxnet,
        "mxnet.recordio": recordio,
        "mxnet.image": image,
        "mxnet.ndarray": ndarray,
        "mxnet.nd": ndarray,
    }


def is_installed() -> bool:
    return getattr(sys.modules.get("mxnet"), _MARK, False) is True


def _real_mxnet_importable() -> bool:
    if "mxnet" in sys.modules:
        return True
    if importlib.util.find_spec("mxnet") is None:
        return False
    try:
        importlib.import_module("mxnet")
        return True
    except Exception:  # noqa: BLE001 - mxnet 1.9.1 raises AttributeError (np.bool) under numpy >= 1.24
        # A failed import can leave half-initialised mxnet submodules behind; drop them.
        for name in [m for m in sys.modules if m == "mxnet" or m.startswith("mxnet.")]:
            del sys.modules[name]
        return False


def install() -> bool:
    """Register the shim as ``mxnet`` unless a real mxnet imports. Idempotent. True when the shim is active."""
    if is_installed():
        return True
    if _real_mxnet_importable():
        return False
    sys.modules.update(_build())
    return True


def uninstall() -> None:
    """Remove the shim from ``sys.modules`` (a real mxnet, if loaded, is left alone)."""
    if not is_installed():
        return
    for name in [m for m in sys.modules if m == "mxnet" or m.startswith("mxnet.")]:
        if getattr(sys.modules[name], _MARK, False):
            del sys.modules[name]
