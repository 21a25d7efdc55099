"""RecordIO against files written by mxnet 1.9.1 (shared/golden/recordio): bytes, headers, payloads."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from scoremix_plugin.recordio import (
    FaceRecFolder,
    FaceRecWriter,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    decode_image,
    encode_jpeg,
    pack,
    pack_img,
    unpack,
    unpack_img,
)


def _header(d) -> IRHeader:
    label = d["label"]
    return IRHeader(d["flag"], tuple(label) if isinstance(label, list) else label, d["id"], d["id2"])


@pytest.fixture(scope="module")
def gold(golden_dir):
    return golden_dir / "recordio"


def test_edge_writer_is_byte_identical(gold, tmp_path):
    cases = json.loads((gold / "edge" / "cases.json").read_text())["writes_in_file_order"]
    with IndexedRecordIOWriter(tmp_path / "edge.idx", tmp_path / "edge.rec") as w:
        for c in cases:
            w.write_idx(c["key"], pack(_header(c["write_header"]), base64.b64decode(c["payload_b64"])))
    assert (tmp_path / "edge.rec").read_bytes() == (gold / "edge" / "edge.rec").read_bytes()
    assert (tmp_path / "edge.idx").read_bytes() == (gold / "edge" / "edge.idx").read_bytes()
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_edge_reader_gives_back_headers_and_payloads(gold):
    cases = json.loads((gold / "edge" / "cases.json").read_text())["writes_in_file_order"]
    r = IndexedRecordIOReader(gold / "edge" / "edge.idx", gold / "edge" / "edge.rec")
    assert r.keys == [c["key"] for c in cases]
    for c in reversed(cases):  # random order: no dependence on a sequential position
        header, payload = unpack(r.read_idx(c["key"]))
        assert header == _header(c["read_header"]), c["name"]
        assert payload == base64.b64decode(c["payload_b64"]), c["name"]
    seq = [unpack(rec) for rec in RecordIOReader(gold / "edge" / "edge.rec")]
    assert [p for _, p in seq] == [base64.b64decode(c["payload_b64"]) for c in cases]
    # Some payloads really are split into parts on disk (the case the fast path must not get wrong).
    raw = (gold / "edge" / "edge.rec").read_bytes()
    off = r.offset(11)  # magic_at_0
    assert int.from_bytes(raw[off + 4 : off + 8], "little") >> 29 == 1


def test_sequential_raw_records(gold, tmp_path):
    records = [base64.b64decode(s) for s in json.loads((gold / "sequential" / "cases.json").read_text())["records_b64"]]
    with RecordIOWriter(tmp_path / "raw.rec") as w:
        for rec in records:
            w.write(rec)
    assert (tmp_path / "raw.rec").read_bytes() == (gold / "sequential" / "raw.rec").read_bytes()
    r = RecordIOReader(gold / "sequential" / "raw.rec")
    assert list(r) == records
    assert r.read() is None


def test_insightface_writer_and_reader(gold, tmp_path):
    meta = json.loads((gold / "insightface" / "cases.json").read_text())
    cases = meta["writes_in_file_order"]
    src = IndexedRecordIOReader(gold / "insightface" / "train.idx", gold / "insightface" / "train.rec")
    payloads = {}
    for c in cases:
        header, payload = unpack(src.read_idx(c["key"]))
        assert header == _header(c)
        assert len(payload) == c["payload_len"]
        assert hashlib.sha256(payload).hexdigest() == c["payload_sha256"]
        payloads[c["key"]] = payload
    # Generic writer given the same writes.
    with IndexedRecordIOWriter(tmp_path / "a" / "train.idx", tmp_path / "a" / "train.rec") as w:
        for c in cases:
            w.write_idx(c["key"], pack(_header(c), payloads[c["key"]]))
    for name in ("train.rec", "train.idx"):
        assert (tmp_path / "a" / name).read_bytes() == (gold / "insightface" / name).read_bytes()
    # FaceRecWriter given the same JPEG bytes and labels writes the whole folder identically.
    images = [c for c in cases if c["flag"] == 0]
    with FaceRecWriter(tmp_path / "b") as sw:
        for c in images:
            sw.write(payloads[c["key"]], int(c["label"]))
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "b" / name).read_bytes() == (gold / "insightface" / name).read_bytes(), name
    assert sw.num_images == meta["num_images"] and sw.labels_range == (0, meta["num_classes"])


def test_face_rec_folder_insightface(gold):
    meta = json.loads((gold / "insightface" / "cases.json").read_text())
    images = [c for c in meta["writes_in_file_order"] if c["flag"] == 0]
    f = FaceRecFolder(gold / "insightface")
    assert f.layout == "insightface" and len(f) == meta["num_images"] and f.num_classes == meta["num_classes"]
    assert f.image_keys.tolist() == [c["key"] for c in images]
    assert f.labels.dtype == np.int64 and f.labels.tolist() == [int(c["label"]) for c in images]
    assert f.property == (5, 112, 112)
    assert f.identity_ranges == {i: (1 + 4 * i, 5 + 4 * i) for i in range(5)}
    img = f.image(3)
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert hashlib.sha256(f.jpeg(3)).hexdigest() == images[3]["payload_sha256"]
    # decode_image gives RGB: the channel-reversed view of what cv2 (unpack_img) gives.
    _, bgr = unpack_img(f.reader.read_idx(4))
    np.testing.assert_array_equal(img, bgr[:, :, ::-1])


def test_im2rec_layout(tmp_path):
    rng = np.random.default_rng(0)
    with IndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec") as w:
        for key, label in [(0, 2.0), (1, 0.0), (5, 1.0), (3, [2.0, 9.0])]:
            w.write_idx(key, pack_img(IRHeader(0, label, key, 0), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)))
    f = FaceRecFolder(tmp_path)
    assert f.layout == "im2rec" and f.identity_ranges is None and f.property is None
    assert f.image_keys.tolist() == [0, 1, 5, 3] and f.labels.tolist() == [2, 0, 1, 2] and f.num_classes == 3


def test_image_round_trip_is_rgb():
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 0] = 200  # pure red stays red (a BGR mix-up would make it blue)
    out = decode_image(encode_jpeg(img))
    assert out.shape == img.shape and abs(int(out[..., 0].mean()) - 200) <= 2 and out[..., 2].mean() < 3
    header, bgr = unpack_img(pack_img(IRHeader(0, 3.0, 1, 0), img[:, :, ::-1]))
    assert header == IRHeader(0, 3.0, 1, 0) and bgr[..., 2].mean() > 190
