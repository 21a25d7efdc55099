"""Hostile ``.bin`` files: known exploits, 10,000+ random byte mutations, grammar-built hostile pickles.

Whatever the bytes, ``loads_bin`` either returns plain values (a list of bytes, a bool array) or raises
``BinFileError`` (``UnsafePickleError`` for refused globals / dtypes / opcodes): never another exception,
never a crash, never an allocation beyond ``bound(len(file))`` (tracemalloc peak, numpy included).
Corpora are seeded, so a failure names a case that reproduces.
"""

from __future__ import annotations

import pickle
import random
import struct
import tracemalloc

import numpy as np
import pytest

from scoremix_plugin.verification.binfile import BinFileError, UnsafePickleError, load_bin, loads_bin
from scoremix_plugin.verification.safe_unpickle import OUTPUT_BUDGET_FACTOR, OUTPUT_BUDGET_MIN

NUM_MUTATIONS = 10_000
NUM_GRAMMAR = 3_000


def bound(n: int) -> int:
    """The allocation bound the loader keeps: the file's copy plus its two budgets (scan, run time)."""
    return n + 2 * max(OUTPUT_BUDGET_MIN, OUTPUT_BUDGET_FACTOR * n) + (256 << 10)


def _load_peak(data: bytes, label: str) -> tuple[str, int]:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        images, issame = loads_bin(data, label)
    except BinFileError:
        outcome = "error"
    except Exception as e:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{label}: {type(e).__name__} escaped: {e}") from e
    else:
        # Only plain values come out.
        assert isinstance(images, list) and all(type(b) is bytes for b in images), label
        assert isinstance(issame, np.ndarray) and issame.dtype == bool and issame.ndim == 1, label
        assert len(images) == 2 * len(issame), label
        outcome = "ok"
    return outcome, tracemalloc.get_traced_memory()[1] - before


def run_case(data: bytes, label: str) -> str:
    """Load hostile bytes under tracemalloc; 'ok' or 'error'. Any other exception or too much memory fails.

    tracemalloc's peak is process-wide, so a thread left by an earlier test can add to it: a case over
    the bound is measured twice more, and fails only if it is over every time (a real blow-up is).
    """
    outcome, peak = _load_peak(data, label)
    for _ in range(2):
        if peak <= bound(len(data)):
            break
        peak = min(peak, _load_peak(data, label)[1])
    assert peak <= bound(len(data)), f"{label}: peak allocation {peak} bytes > bound {bound(len(data))}"
    return outcome


@pytest.fixture(scope="module")
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


# Known exploits (the two files and their relatives).

NUMPY_MA = b"cnumpy.core.multiarray\n"
RECONSTRUCT_1E9 = NUMPY_MA + b"_reconstruct\ncnumpy\nndarray\nJ\x00\xca\x9a;\x85C\x01b\x87R"
DTYPE_U1 = (
    b"cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff"
    b"\xff\xffK\x00tb"
)
EXPLOITS = {
    # ndarray((1,), 'O', b'AAAAAAAA'): an object array whose 8 pointer bytes come from the file (segfault).
    "object_array_55_bytes": (b"((S'a'\nS'b'\nlcnumpy\nndarray\n((I1\ntS'O'\nS'AAAAAAAA'\ntRt.", UnsafePickleError),
    # _reconstruct(ndarray, (10**9,), b'b'): a 1 GB array allocated from a few dozen bytes.
    "reconstruct_1e9": (b"\x80\x02](" + RECONSTRUCT_1E9 + b"q\x00h\x00e]\x88a\x86.", BinFileError),
    "reconstruct_1e9_short_data": (
        b"\x80\x02]("
        + RECONSTRUCT_1E9
        + b"(K\x01J\x00\xca\x9a;\x85"
        + DTYPE_U1
        + b"\x89C\x03abctbq\x00h\x00e]\x88a\x86.",
        BinFileError,
    ),
    "frombuffer_1e9": (
        b"\x80\x02](cnumpy._core.numeric\n_frombuffer\n(C\x03abc"
        + DTYPE_U1
        + b"J\x00\xca\x9a;\x85X\x01\x00\x00\x00CtRq\x00h\x00e]\x88a\x86.",
        BinFileError,
    ),
    "scalar_object_dtype": (
        b"\x80\x02]](" + NUMPY_MA + b"scalar\ncnumpy\ndtype\nX\x01\x00\x00\x00O\x89\x88\x87RC\x08AAAAAAAA\x86Re\x86.",
        UnsafePickleError,
    ),
    # ndarray(shape=(10**9,)) called directly (no buffer): 8 GB of float64.
    "ndarray_direct_1e9": (b"\x80\x02(]cnumpy\nndarray\nJ\x00\xca\x9a;\x85\x85Rat.", UnsafePickleError),
    # dtype('O8') named through numpy.dtype, and an object array through _reconstruct + BUILD with list data.
    "dtype_object": (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R.", UnsafePickleError),
    "setstate_object_list": (
        b"\x80\x02(]" + NUMPY_MA + b"_reconstruct\ncnumpy\nndarray\nK\x01\x85C\x01b\x87R"
        b"(K\x01K\x01\x85cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R\x89]tbat.",
        UnsafePickleError,
    ),
    # a plain dtype whose state sets the has-object flag (0x3f).
    "dtype_flags_object": (
        b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00V8\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ"
        b"\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb.",
        UnsafePickleError,
    ),
    "dtype_u8_flags": (
        b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00u8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ"
        b"\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb.",
        UnsafePickleError,
    ),
    # bytes(10**9): a gigabyte of zeros.
    "bytes_1e9": (b"\x80\x02c__builtin__\nbytes\nJ\x00\xca\x9a;\x85R.", UnsafePickleError),
    # C unpickler memo: LONG_BINPUT 2**31 grows a 16 GB list.
    "memo_2_31": (b"\x80\x02]r\x00\x00\x00\x80]]\x86.", BinFileError),
    # Length prefixes far beyond the file.
    "binbytes8_2_40": (b"\x80\x04\x8e\x00\x00\x00\x00\x00\x01\x00\x00abc.", BinFileError),
    "binstring_4g": (b"\x80\x02T\xff\xff\xff\x7fabc.", BinFileError),
    "frame_huge": (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x01].", BinFileError),
    # 200 bytes of set per byte of file.
    "empty_set_bomb": (b"\x80\x04" + b"\x8f" * 50_000 + b".", UnsafePickleError),
    "empty_list_bomb": (b"\x80\x02" + b"]" * 200_000 + b".", BinFileError),
    "memoize_bomb": (b"\x80\x04]" + b"\x94" * 100_000 + b".", BinFileError),
    # _codecs.encode of one memoised 1 MB string, 100,000 times.
    "encode_amplification": (
        b"\x80\x02(c_codecs\nencode\nq\x00X\x00\x00\x10\x00"
        + b"a" * (1 << 20)
        + b"q\x01"
        + b"h\x00h\x01X\x06\x00\x00\x00latin1\x86R" * 100
        + b"l.",
        BinFileError,
    ),
    # Code execution and codec lookup.
    "os_system": (b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.", UnsafePickleError),
    "codec_rot13": (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", UnsafePickleError),
    "build_on_allowed_global": (b"\x80\x02c_codecs\nencode\nK\x01b.", UnsafePickleError),
    "slotstate_on_global": (b"\x80\x02c_codecs\nencode\nN)\x86b.", UnsafePickleError),
    "newobj_on_global": (b"\x80\x02cnumpy\ndtype\n)\x81.", UnsafePickleError),
    "persistent_id": (b"\x80\x02X\x01\x00\x00\x00xQ.", UnsafePickleError),
    "ext_code": (b"\x80\x02\x82\x01.", UnsafePickleError),
    # Deep nesting (repr of it in an error message must not recurse).
    "deep_nesting": (b"\x80\x02](C\x01aC\x01be" + b"]" * 5_000 + b"a" * 4_999 + b"\x86.", BinFileError),
    "huge_int_issame": (b"\x80\x02](C\x01aC\x01be]\x8b\x00\x00\x01\x00" + b"\x01" * 65_536 + b"a\x86.", BinFileError),
    "no_pairs": (b"\x80\x02]]\x86.", BinFileError),
}


@pytest.mark.parametrize("name", sorted(EXPLOITS))
def test_known_exploits_are_refused_within_bounds(name, traced, tmp_path):
    data, expected = EXPLOITS[name]
    with pytest.raises(expected):
        loads_bin(data, name)
    assert run_case(data, name) == "error"
    path = tmp_path / f"{name}.bin"
    path.write_bytes(data)
    with pytest.raises(expected, match=rf"{name}\.bin"):  # the message names the file
        load_bin(path)


def test_numpy_pickles_still_load(traced):
    # What numpy itself writes, protocols 2-5: uint8 image arrays, a bool array, numpy bool scalars.
    imgs = [np.frombuffer(b"\xff\xd8 jpeg %d" % i, np.uint8) for i in range(4)]
    for proto in (2, 3, 4, 5):
        for issame in ([True, False], np.array([True, False]), [np.bool_(True), np.bool_(False)]):
            data = pickle.dumps((imgs, issame), protocol=proto)
            assert run_case(data, f"numpy p{proto}") == "ok"
            images, flags = loads_bin(data)
            assert images == [a.tobytes() for a in imgs] and flags.tolist() == [True, False]


# Random byte mutations.


def _bases(golden_dir) -> list[bytes]:
    """Small well-formed .bin files in every flavour (Python 2 / 3 pickles, numpy arrays), plus the golden ones."""
    images = [b"\xff\xd8\xff\xe0" + bytes(range(i, i + 12)) for i in range(4)]
    issame = [True, False]
    out = [pickle.dumps((images, issame), protocol=p) for p in range(6)]
    arrays = [np.frombuffer(b, np.uint8) for b in images]
    out += [pickle.dumps((arrays, np.array(issame)), protocol=p) for p in (2, 4, 5)]
    out += [pickle.dumps((images, [np.bool_(s) for s in issame]), protocol=2)]
    py2 = (golden_dir / "verification" / "toy_py2.bin").read_bytes()
    out += [py2]
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        n = len(buf)
        # Structure lives in the first and last bytes and around the opcodes; bias positions there.
        pos = rng.choice(
            (
                rng.randrange(max(1, min(n, 64))),
                max(0, n - 1 - rng.randrange(max(1, min(n, 64)))),
                rng.randrange(max(1, n)),
            )
        )
        op = rng.randrange(9)
        if not buf:
            buf = bytearray(rng.randbytes(rng.randrange(1, 8)))
        elif op == 0:
            buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos % len(buf)] = rng.randrange(256)
        elif op == 2:
            buf[pos % len(buf)] = rng.choice(b"\x00\xff\x7f\x80()]}tRb.cKJMB\x8e\x94\x95hqr")
        elif op == 3:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        elif op == 4:
            del buf[pos : pos + rng.randrange(1, 16)]
        elif op == 5:
            a = rng.randrange(len(buf))
            buf[pos:pos] = buf[a : a + rng.randrange(1, 64)]
        elif op == 6:
            del buf[rng.randrange(len(buf)) :]
        elif op == 7:  # a length or integer field made huge or negative
            buf[pos : pos + 4] = struct.pack("<I", rng.choice((0x7FFFFFFF, 0xFFFFFFFF, 1 << 30, 10**9, 0x80000000)))
        else:
            buf[pos : pos + 8] = struct.pack("<Q", rng.choice((1 << 40, 1 << 63, (1 << 64) - 1)))
    return bytes(buf)


def test_random_byte_mutations(golden_dir, traced):
    bases = _bases(golden_dir)
    rng = random.Random(20261202)
    outcomes = {"ok": 0, "error": 0}
    for i in range(NUM_MUTATIONS):
        # The golden file is large (image bytes); mutating it mostly changes pictures, so it gets few cases.
        base = bases[-1] if i % 50 == 0 else bases[rng.randrange(len(bases) - 1)]
        data = _mutate(base, rng)
        outcomes[run_case(data, f"mutation {i}")] += 1
    assert sum(outcomes.values()) == NUM_MUTATIONS
    assert outcomes["error"] > NUM_MUTATIONS // 4 and outcomes["ok"] > 100, outcomes  # both paths exercised


# Grammar-built hostile pickles.

GLOBALS = [
    ("os", "system"),
    ("builtins", "eval"),
    ("__builtin__", "getattr"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("numpy", "frombuffer"),
    ("copyreg", "_reconstructor"),
    ("numpy", "load"),
    ("pickle", "loads"),
    ("builtins", "bytearray"),
]
DTYPE_CODES = ["O", "O8", "|O", "V8", "S10", "U4", "b1", "u1", "<f4", ">i8", "f8", "M8", "c16", "?", "i1"]


class _Asm:
    """Builds a random pickle program from a small grammar of values, calls and state settings."""

    def __init__(self, rng: random.Random):
        self.rng, self.memo = rng, 0

    def int_(self) -> bytes:
        v = self.rng.choice((0, 1, 2, 3, -1, 255, 65_535, 10**9, 2**31 - 1, 2**40, 2**63, -(2**63), 10**30))
        if 0 <= v < 256:
            return b"K" + bytes([v])
        if -(2**31) <= v < 2**31:
            return b"J" + struct.pack("<i", v)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw

    def str_(self) -> bytes:
        s = self.rng.choice(DTYPE_CODES + ["latin1", "rot13", "C", "F", "b", "\x01", "x" * 300])
        raw = s.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def bytes_(self) -> bytes:
        raw = self.rng.randbytes(self.rng.choice((0, 1, 8, 16, 300)))
        return b"C" + bytes([len(raw)]) + raw if len(raw) < 256 else b"B" + struct.pack("<I", len(raw)) + raw

    def lie(self) -> bytes:
        return self.rng.choice(
            (
                b"B\xff\xff\xff\x7fab",
                b"\x8e" + struct.pack("<Q", 1 << 40) + b"ab",
                b"r\x00\x00\x00\x80",
                b"j\x00\x00\x00\x80",
                b"h\xff",
                b"\x95" + struct.pack("<Q", 1 << 50),
                b"\x8f",
                b"}",
                b"\x91",
                b"(\x91",
                b"i__builtin__\nbytes\n",
                b"\x82\x01",
                b"\x97",
                b"0",
            )
        )

    def tuple_(self, depth: int) -> bytes:
        n = self.rng.randrange(5)
        items = b"".join(self.expr(depth + 1) for _ in range(n))
        return items + (b")", b"\x85", b"\x86", b"\x87")[n] if n < 4 else b"(" + items + b"t"

    def expr(self, depth: int = 0) -> bytes:
        r = self.rng.random()
        if depth > 4 or r < 0.3:
            return self.rng.choice(
                (
                    self.int_,
                    self.str_,
                    self.bytes_,
                    lambda: b"N",
                    lambda: b"\x88",
                    lambda: b"\x89",
                    lambda: self.global_(),
                )
            )()
        if r < 0.45:
            return self.tuple_(depth)
        if r < 0.55:
            n = self.rng.randrange(4)
            return b"]" + (b"(" + b"".join(self.expr(depth + 1) for _ in range(n)) + b"e" if n else b"")
        if r < 0.8:
            return self.global_() + self.tuple_(depth) + b"R"
        if r < 0.9:
            return self.expr(depth + 1) + self.tuple_(depth) + b"b"
        if r < 0.95:
            self.memo += 1
            return self.expr(depth + 1) + b"\x94h" + bytes([self.rng.randrange(self.memo + 1) % 256])
        return self.lie()

    def global_(self) -> bytes:
        mod, name = self.rng.choice(GLOBALS)
        return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"

    def program(self) -> bytes:
        proto = b"\x80" + bytes([self.rng.choice((2, 4, 5))])
        if self.rng.random() < 0.5:  # shaped like a .bin: (list of images, list of flags)
            body = (
                b"]("
                + b"".join(self.expr(1) for _ in range(2))
                + b"e]("
                + b"".join(self.expr(1) for _ in range(1))
                + b"e\x86"
            )
        else:
            body = self.expr()
        return proto + body + b"."


def test_grammar_built_hostile_pickles(traced):
    rng = random.Random(7)
    outcomes = {"ok": 0, "error": 0}
    for i in range(NUM_GRAMMAR):
        data = _Asm(rng).program()
        outcomes[run_case(data, f"grammar {i}")] += 1
    assert outcomes["error"] > NUM_GRAMMAR // 2, outcomes


def test_python2_protocol0_bin_with_binary_strings_loads():
    # cPickle.dump((bins, issame), f) at protocol 0: image strings as escaped text, bools as I01 / I00.
    images = [b"\xff\xd8\x00\x01jpeg", b"\xff\xd8\x7f\x80\xfe", b"\xff\xd8\n\\x", b"\xff\xd8"]

    def s(b: bytes) -> bytes:
        return b"S'" + repr(b)[2:-1].replace("'", "\\'").encode() + b"'\n"

    data = b"((lp0\n" + b"".join(s(b) + b"a" for b in images) + b"(lp1\nI01\naI00\natp2\n."
    got, issame = loads_bin(data, "py2_p0.bin")
    assert got == images and issame.tolist() == [True, False]
