"""A restricted unpickler for untrusted ``.bin`` files: plain bytes, lists, bools and small numeric arrays.

A pickle is a program: it names callables and the unpickler calls them. A ``.bin`` from the
internet must therefore not reach any callable that can run code, build objects with pointers from
the file, or allocate more than the file can justify. Three rules keep it so:

1. Globals resolve to a handful of guarded stand-ins, never to the real callables. numpy's array,
   dtype and scalar reconstructors return inert *specs* (``_ArraySpec``, ``_DtypeSpec``) that only
   record their arguments; real arrays are built after loading, from validated specs, by
   ``np.frombuffer`` over bytes the file already holds. So an object dtype (an array of pointers
   read from the file: a segfault waiting to happen) is refused when it is named, whatever global
   names it, and no array of a shape the file does not pay for is ever allocated.
2. Before anything runs, the opcodes are scanned: only those a ``(list, list)`` of bytes, bools and
   numpy arrays needs are allowed (no dicts, sets, INST/OBJ/NEWOBJ, extensions, persistent ids,
   out-of-band buffers), and the Python objects they would create are costed; a pickle whose objects
   would outweigh the budget is refused unrun (a file of 1-byte EMPTY_SET opcodes would otherwise
   build 200 bytes of sets per byte of file).
3. The pure-Python unpickler runs the opcodes (its memo is a dict: a ``LONG_BINPUT 2**31`` costs one
   entry, where C's memo list would grow to 16 GB), reading from memory (a length prefix of 2**40 reads
   what is there, then fails as truncated, instead of allocating 2**40 bytes first). Bytes made at run
   time (``_codecs.encode`` of a memoised string, copies, arrays handed out) are charged to a second
   budget, so referencing one string a thousand times cannot make a thousand copies.

Both budgets are ``OUTPUT_BUDGET_FACTOR`` times the file size (at least ``OUTPUT_BUDGET_MIN``).

Every failure is a ``BinFileError`` (``UnsafePickleError`` for refused globals and dtypes) naming the file.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import reprlib
import struct
import sys
import warnings
from typing import Any

import numpy as np

from scoremix_plugin.errors import ScoreMixError


class BinFileError(ScoreMixError, ValueError):
    """A ``.bin`` file (or its inputs) is malformed; the message names the file and what is wrong."""


class UnsafePickleError(BinFileError):
    """The pickle names a callable, dtype or opcode outside the ``.bin`` allow-list; nothing from it was run."""


# Array element types a .bin may hold: booleans, integers, floats (no objects, records, strings, pointers).
_DTYPES = frozenset({"b1", "?", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"})
_MAX_NDIM = 8
OUTPUT_BUDGET_FACTOR = 4
OUTPUT_BUDGET_MIN = 1 << 20

_short = reprlib.Repr()
_short.maxstring = _short.maxother = _short.maxlong = 60
_short.maxlevel = 2


def describe(obj: Any) -> str:
    """A short repr for error messages; never fails (a huge int's repr can raise), never recurses deeply."""
    try:
        return _short.repr(obj)
    except Exception:  # noqa: BLE001 - only a message is at stake
        return f"<{type(obj).__name__}>"


class _Refused(Exception):
    """Raised inside the unpickler; restricted_loads turns it into UnsafePickleError / BinFileError."""

    def __init__(self, message: str, unsafe: bool = True):
        super().__init__(message)
        self.unsafe = unsafe


class _Budget:
    """Bytes the loader may still create at run time (copies, encoded strings, arrays handed out)."""

    def __init__(self, nbytes: int):
        self.left = nbytes

    def charge(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise _Refused("the pickle builds more data than a .bin of its size can hold", unsafe=False)


# Opcode scan.

# Opcodes a (list, list) of bytes / bools / numpy arrays needs, Python 2 and 3, protocols 0-5 (in-band).
_OPCODES = frozenset(
    {
        "PROTO",
        "FRAME",
        "STOP",
        "MARK",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "FLOAT",
        "BINFLOAT",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "EMPTY_LIST",
        "LIST",
        "APPEND",
        "APPENDS",
        "EMPTY_TUPLE",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "GLOBAL",
        "STACK_GLOBAL",
        "REDUCE",
        "BUILD",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
        "MEMOIZE",
        "GET",
        "BINGET",
        "LONG_BINGET",
    }
)
_SLOT = 8  # a reference on the stack, in a list or a tuple
# Python object sizes (64-bit CPython, rounded up) of what an opcode creates besides its argument.
_CREATES = {
    "EMPTY_LIST": 56 + _SLOT,
    "LIST": 56 + _SLOT,
    "EMPTY_TUPLE": _SLOT,
    "TUPLE": 40 + _SLOT,
    "TUPLE1": 48 + _SLOT,
    "TUPLE2": 56 + _SLOT,
    "TUPLE3": 64 + _SLOT,
    "REDUCE": 96,
    "BUILD": 96,
    "PUT": 112,
    "BINPUT": 112,
    "LONG_BINPUT": 112,
    "MEMOIZE": 112,
    "GET": _SLOT,
    "BINGET": _SLOT,
    "LONG_BINGET": _SLOT,
    "MARK": _SLOT,
    "FLOAT": 24 + _SLOT,
    "BINFLOAT": 24 + _SLOT,
}


def _opcodes(data: bytes):
    """(opcode, argument, position) up to STOP, like ``pickletools.genops`` but with protocol-0 strings raw.

    genops decodes a Python 2 ``STRING`` argument to ASCII text, which refuses the binary image strings
    of a protocol-0 ``.bin``; the raw (still escaped) bytes are an upper bound of the decoded size.
    """
    f = io.BytesIO(data)
    while True:
        pos = f.tell()
        code = f.read(1)
        if not code:
            raise ValueError("pickle exhausted before seeing STOP")
        op = pickletools.code2op.get(code.decode("latin-1"))
        if op is None:
            raise ValueError(f"unknown opcode {code!r} at byte {pos}")
        if op.arg is None:
            arg = None
        elif op.name == "STRING":
            arg = pickletools.read_stringnl(f, decode=False)
        else:
            arg = op.arg.reader(f)
        yield op, arg, pos
        if op.name == "STOP":
            return


def _scan(data: bytes, budget: int) -> None:
    """Refuse opcodes outside the allow-list and pickles whose objects would cost more than ``budget``."""
    cost = 0
    try:
        for op, arg, pos in _opcodes(data):
            if op.name not in _OPCODES:
                raise _Refused(f"opcode {op.name} at byte {pos} is not used by .bin files (refused unrun)")
            # An argument (bytes, str, int) becomes an object of about its own size; then what the op builds.
            cost += (sys.getsizeof(arg) if arg is not None else 0) + _CREATES.get(op.name, _SLOT)
            if cost > budget:
                raise _Refused(
                    f"the pickle's objects would take more than {budget} bytes (at opcode "
                    f"{op.name}, byte {pos}): more than a .bin of its size holds",
                    unsafe=False,
                )
    except _Refused:
        raise
    except (ValueError, TypeError, struct.error, UnicodeError, OverflowError, MemoryError) as e:
        raise _Refused(
            f"not a readable .bin pickle (truncated or corrupt): {describe(str(e))[1:-1]}", unsafe=False
        ) from None


# Guarded stand-ins for the allowed globals.


class _DtypeSpec:
    """What ``numpy.dtype(code, align, copy)`` + BUILD described; checked when named, resolved at the end."""

    __slots__ = ("code", "order", "built")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        if not isinstance(spec, (str, bytes)):
            raise _Refused(f"numpy dtype from {describe(spec)}: only simple numeric type codes are allowed")
        code = spec.decode("latin1") if isinstance(spec, bytes) else spec
        code = code.lstrip("<>|=")
        if code not in _DTYPES:
            raise _Refused(
                f"numpy dtype {describe(code)} is not allowed in a .bin (only bool/int/float; object, "
                "string, void and record dtypes are refused)"
            )
        self.code, self.order, self.built = code, "|", False

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, meta]).
        if self.built:
            raise _Refused("dtype state set twice")
        if (
            not isinstance(state, tuple)
            or len(state) not in (8, 9)
            or state[0] not in (3, 4)
            or state[1] not in ("<", ">", "|", "=", b"<", b">", b"|", b"=")
            or state[2:5] != (None, None, None)
            or state[5:7] != (-1, -1)
            or state[7] != 0
            or (len(state) == 9 and state[8] is not None)
        ):
            raise _Refused(f"numpy dtype state {describe(state)} is not a plain numeric dtype's")
        self.order = state[1].decode() if isinstance(state[1], bytes) else state[1]
        self.built = True

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if dt.itemsize > 1 and self.order in "<>" else dt


def _shape(value: Any) -> tuple[int, ...]:
    dims = value if isinstance(value, tuple) else (value,)
    if len(dims) > _MAX_NDIM or not all(type(d) is int and 0 <= d < 1 << 62 for d in dims):
        raise _Refused(f"array shape {describe(value)} is not up to {_MAX_NDIM} non-negative integers", unsafe=False)
    return dims


class _ArraySpec:
    """An array described by ``_reconstruct`` + BUILD (or ``_frombuffer``): shape, dtype, raw bytes.

    Nothing is allocated for the shape: the array is a view of bytes the pickle already holds, whose
    length must match shape x itemsize exactly.
    """

    __slots__ = ("shape", "dtype", "data", "fortran")

    def __init__(
        self, shape: tuple[int, ...], dtype: _DtypeSpec | None = None, data: bytes | None = None, fortran: bool = False
    ):
        self.shape, self.dtype, self.data, self.fortran = shape, dtype, data, fortran
        if data is not None:
            self._check()

    def __setstate__(self, state: Any) -> None:
        # ndarray state: (version, shape, dtype, is_fortran, raw bytes) (version may be absent).
        if self.data is not None:
            raise _Refused("array state set twice")
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise _Refused(f"array state {describe(state)} is not (shape, dtype, fortran, data)", unsafe=False)
        shape, dtype, fortran, data = state
        if not isinstance(dtype, _DtypeSpec):
            raise _Refused(f"array dtype {describe(dtype)} is not a numpy dtype")
        if isinstance(data, list):
            raise _Refused("array data is a list of Python objects (an object array)")
        if not isinstance(data, (bytes, bytearray)):
            raise _Refused(f"array data is {type(data).__name__}, expected raw bytes", unsafe=False)
        if not isinstance(fortran, bool):
            raise _Refused(f"array order flag {describe(fortran)} is not a bool", unsafe=False)
        self.shape, self.dtype, self.fortran, self.data = _shape(shape), dtype, fortran, data
        self._check()

    def _check(self) -> None:
        need = math.prod(self.shape) * self.dtype.resolve().itemsize
        if need != len(self.data):
            raise _Refused(
                f"array of shape {describe(self.shape)} and dtype {self.dtype.code} needs {need} bytes, "
                f"the pickle gives {len(self.data)}",
                unsafe=False,
            )

    def build(self) -> np.ndarray:
        if self.data is None:
            raise _Refused("array without data (its state was never set)", unsafe=False)
        arr = np.frombuffer(self.data, dtype=self.dtype.resolve())  # a read-only view: nothing allocated
        return arr.reshape(self.shape, order="F" if self.fortran else "C")


class _Global:
    """A guarded stand-in for an allowed global: callable, with no state a pickle could change.

    BUILD on an ordinary function would update its ``__dict__`` (or ``__defaults__`` through slot
    state) for the rest of the process; these objects refuse it. Each load has its own, bound to its budget.
    """

    __slots__ = ("name", "fn", "budget")

    def __init__(self, name: str, fn, budget: _Budget):
        self.name, self.fn, self.budget = name, fn, budget

    def __call__(self, *args):
        return self.fn(self.budget, *args)

    def __setstate__(self, state):
        raise _Refused(f"the pickle tries to set state on {self.name}")


def _latin1_encode(budget: _Budget, text: Any = None, encoding: Any = "latin1", *rest) -> bytes:
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(str, 'latin1'); any other codec is refused
    # because codec lookup can import modules by name.
    if rest or encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode called with encoding {describe(encoding)}: only 'latin1' of a str is allowed")
    budget.charge(len(text))
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise _Refused("_codecs.encode: text outside latin1", unsafe=False) from None


def _bytes(budget: _Budget, *args) -> bytes:
    # bytes() and bytes(b"...") only: bytes(10**9) would allocate a gigabyte of zeros from five bytes of file.
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        budget.charge(len(args[0]))
        return bytes(args[0])
    raise _Refused(f"bytes{describe(args)}: only bytes() or bytes(<bytes>) are allowed")


def _dtype(budget: _Budget, *args) -> _DtypeSpec:
    return _DtypeSpec(*args)


def _ndarray(budget: _Budget, *args):
    raise _Refused("numpy.ndarray called directly (it may only be named as the type of a reconstructed array)")


def _reconstruct(budget: _Budget, subtype: Any = None, shape: Any = None, dtype: Any = None, *rest) -> _ArraySpec:
    if not (isinstance(subtype, _Global) and subtype.fn is _ndarray) or rest:
        raise _Refused(f"_reconstruct of {describe(subtype)}: only numpy.ndarray")
    return _ArraySpec(_shape(shape))  # numpy passes a placeholder dtype; the real one comes with BUILD


def _frombuffer(
    budget: _Budget, buf: Any = None, dtype: Any = None, shape: Any = None, order: Any = "C", *rest
) -> _ArraySpec:
    if rest or not isinstance(dtype, _DtypeSpec) or order not in ("C", "F"):
        raise _Refused(f"_frombuffer with dtype {describe(dtype)} and order {describe(order)}")
    if not isinstance(buf, (bytes, bytearray)):
        raise _Refused(f"_frombuffer of {type(buf).__name__}, expected bytes", unsafe=False)
    return _ArraySpec(_shape(shape), dtype, buf, order == "F")


def _scalar(budget: _Budget, dtype: Any = None, data: Any = None, *rest) -> bool | int | float:
    if rest or not isinstance(dtype, _DtypeSpec):
        raise _Refused(f"numpy scalar of dtype {describe(dtype)}: only numeric dtypes")
    dt = dtype.resolve()
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise _Refused(f"numpy scalar data {describe(data)} is not {dt.itemsize} bytes", unsafe=False)
    return np.frombuffer(bytes(data), dtype=dt)[0].item()  # a plain Python bool / int / float


_ALLOWED: dict[tuple[str, str], tuple[str, Any]] = {
    ("_codecs", "encode"): ("_codecs.encode", _latin1_encode),
    ("__builtin__", "bytes"): ("bytes", _bytes),
    ("builtins", "bytes"): ("bytes", _bytes),
    ("numpy", "dtype"): ("numpy.dtype", _dtype),
    ("numpy", "ndarray"): ("numpy.ndarray", _ndarray),
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = ("numpy _reconstruct", _reconstruct)
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = ("numpy scalar", _scalar)
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = ("numpy _frombuffer", _frombuffer)


class _Unpickler(pickle._Unpickler):  # the pure-Python one on purpose: see the module docstring
    def __init__(self, file, budget: _Budget):
        super().__init__(file, encoding="bytes")
        self._globals = {key: _Global(name, fn, budget) for key, (name, fn) in _ALLOWED.items()}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(
                f"refusing to load global '{describe(module)[1:-1]}.{describe(name)[1:-1]}' "
                "(a .bin holds only image bytes and booleans; this pickle would run other code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"refusing a persistent id {describe(pid)}")


class Loaded:
    """The unpickled top-level object, and the way to turn its leaves into plain values."""

    def __init__(self, obj: Any, where: str, budget: _Budget):
        self.obj, self.where, self._budget = obj, where, budget
        self._arrays: dict[int, np.ndarray] = {}
        self._bytes: dict[int, bytes] = {}

    def array(self, spec: _ArraySpec) -> np.ndarray:
        """The array a spec describes (built once however often the pickle refers to it)."""
        arr = self._arrays.get(id(spec))
        if arr is None:
            try:
                arr = spec.build()
            except _Refused as e:
                raise BinFileError(f"{self.where}: {e}") from None
            self._arrays[id(spec)] = arr
        return arr

    def value(self, obj: Any) -> Any:
        """A leaf of the layout: bytes / bytearray / bool / int / float as they are, specs as arrays."""
        if isinstance(obj, _ArraySpec):
            return self.array(obj)
        if isinstance(obj, (bytes, bytearray, bool, int, float)):
            return obj
        raise BinFileError(f"{self.where}: unexpected {type(obj).__name__} {describe(obj)} in the pickle")

    def as_bytes(self, obj: Any) -> bytes | None:
        """Encoded-image bytes from bytes, a bytearray or a 1-D uint8 array (copies made once, charged)."""
        if type(obj) is bytes:
            return obj
        got = self._bytes.get(id(obj))
        if got is None:
            v = self.value(obj)
            if isinstance(v, bytearray):
                pass
            elif isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 1:
                pass
            else:
                return None
            try:
                self._budget.charge(len(v) if isinstance(v, bytearray) else v.nbytes)
            except _Refused as e:
                raise BinFileError(f"{self.where}: {e}") from None
            got = self._bytes[id(obj)] = bytes(v) if isinstance(v, bytearray) else v.tobytes()
        return got


def restricted_loads(data: bytes, where: str) -> Loaded:
    """Unpickle ``data`` under the allow-list and budgets (see the module docstring)."""
    limit = max(OUTPUT_BUDGET_MIN, OUTPUT_BUDGET_FACTOR * len(data))
    budget = _Budget(limit)
    f = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            # Protocol-0 strings with bad escapes warn (an error under -W error): the file is reported instead.
            warnings.simplefilter("ignore", DeprecationWarning)
            _scan(data, limit)
            obj = _Unpickler(f, budget).load()
    except _Refused as e:
        raise (UnsafePickleError if e.unsafe else BinFileError)(f"{where}: {e}") from None
    except (EOFError, struct.error) as e:
        raise BinFileError(f"{where}: truncated .bin file (the pickle ends early: {e or 'EOF'})") from None
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
        RecursionError,
        UnicodeError,
    ) as e:
        raise BinFileError(
            f"{where}: not a readable .bin pickle (truncated or corrupt): {type(e).__name__}: {describe(str(e))[1:-1]}"
        ) from None
    if f.tell() != len(data):
        raise BinFileError(f"{where}: unexpected data after the end of the pickle")
    return Loaded(obj, where, budget)
