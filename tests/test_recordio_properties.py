"""Property-based round trips: framing (magic word anywhere), IRHeaders, indexed files, shards."""

from __future__ import annotations

import random
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scoremix_plugin.recordio import (
    FaceRecFolder,
    FaceRecWriter,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    RecordIOReader,
    encode_jpeg,
    pack,
    unpack,
)
from scoremix_plugin.recordio.format import frame, frame_pieces, read_framed

MAGIC = struct.pack("<I", 0xCED7230A)
SETTINGS = settings(max_examples=60, deadline=None)


def dmlc_parts(buf: bytes) -> list[bytes]:
    """The spec, written as plainly as possible: split at every 4-byte-aligned magic word."""
    parts, start = [], 0
    for i in range(0, len(buf) - len(buf) % 4, 4):
        if buf[i : i + 4] == MAGIC:
            parts.append(buf[start:i])
            start = i + 4
    parts.append(buf[start:])
    return parts


@st.composite
def payloads(draw):
    """Random bytes with the magic word spliced in at random (aligned and unaligned) offsets."""
    # Small and image-sized (>= 256 bytes: the writer's vectorised scan) payloads.
    data = bytearray(draw(st.one_of(st.binary(max_size=64), st.binary(min_size=250, max_size=700))))
    for pos in draw(st.lists(st.integers(0, 720), max_size=5)):
        pos = min(pos, len(data))
        data[pos:pos] = MAGIC
    return bytes(data)


@SETTINGS
@given(payloads())
def test_frame_matches_dmlc_and_reads_back(buf):
    parts = dmlc_parts(buf)
    framed = frame(buf)
    assert len(framed) % 4 == 0
    # Layout: one 8-byte header per part, each part padded only at the very end.
    expect_len = 8 * len(parts) + sum(len(p) for p in parts) + (-len(parts[-1]) % 4)
    assert len(framed) == expect_len
    flags = [int.from_bytes(framed[p + 4 : p + 8], "little") >> 29 for p in _part_starts(framed, parts)]
    assert flags == ([0] if len(parts) == 1 else [1] + [2] * (len(parts) - 2) + [3])
    record, end = read_framed(framed, 0)
    assert record == buf and end == len(framed)
    # A header passed apart (the shard writer's path) frames exactly like the joined buffer.
    cut = len(buf) // 4 * 4 // 2 // 4 * 4
    assert b"".join(frame_pieces(buf[cut:], buf[:cut])) == framed


def _part_starts(framed: bytes, parts: list[bytes]) -> list[int]:
    starts, pos = [], 0
    for p in parts:
        starts.append(pos)
        pos += 8 + len(p)
    return starts


labels = st.one_of(
    st.integers(0, 2**24 - 1).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, width=32).filter(lambda f: not f.is_integer()),
    st.lists(st.integers(0, 2**24 - 1).map(float), min_size=1, max_size=4),
)


@SETTINGS
@given(st.integers(0, 2**32 - 1), labels, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), payloads())
def test_irheader_round_trip(flag, label, id_, id2, payload):
    header, back = unpack(pack(IRHeader(flag, label, id_, id2), payload))
    assert back == payload and header.id == id_ and header.id2 == id2
    if isinstance(label, list):
        assert header.flag == len(label) and header.label == tuple(label)
    else:  # mxnet: a scalar label always means flag 0
        assert header.flag == 0 and header.label == float(np.float32(label))


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 10**6), payloads()), max_size=12, unique_by=lambda kv: kv[0]),
    st.randoms(use_true_random=False),
)
def test_indexed_files_round_trip_in_any_order(items, rnd: random.Random):
    with tempfile.TemporaryDirectory() as d:
        idx, rec = Path(d) / "x.idx", Path(d) / "x.rec"
        with IndexedRecordIOWriter(idx, rec) as w:
            for key, buf in items:
                w.write_idx(key, buf)
        r = IndexedRecordIOReader(idx, rec)
        assert r.keys == [k for k, _ in items]
        order = list(items)
        rnd.shuffle(order)
        for key, buf in order:
            assert r.read_idx(key) == buf
        assert list(RecordIOReader(rec)) == [b for _, b in items]
        r.close()


_JPEGS = [encode_jpeg(np.full((112, 112, 3), v, np.uint8)) for v in (0, 120, 255)]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 2**24 - 10), st.integers(1, 4)), min_size=1, max_size=6, unique_by=lambda t: t[0]
    ),
    st.integers(0, 2),
)
def test_shard_round_trip(groups, which):
    with tempfile.TemporaryDirectory() as d:
        written = []
        with FaceRecWriter(d) as w:
            for label, count in groups:
                for j in range(count):
                    data = _JPEGS[(which + j) % 3]
                    w.write(data, label)
                    written.append((label, data))
        f = FaceRecFolder(d)
        assert f.layout == "insightface" and f.labels.tolist() == [lab for lab, _ in written]
        assert f.num_classes == max(lab for lab, _ in groups) + 1
        assert [f.jpeg(i) for i in range(len(f))] == [data for _, data in written]
        key, ranges = 1, {}
        for label, count in groups:
            ranges[label] = (key, key + count)
            key += count
        assert f.identity_ranges == ranges
        assert w.labels_range == (min(ranges), max(ranges) + 1)
        f.close()
