"""Bad RecordIO input: every failure is a RecordIOError naming the file, key and byte offset."""

from __future__ import annotations

import shutil
import struct

import cv2
import numpy as np
import pytest

from scoremix_plugin.cli import main
from scoremix_plugin.recordio import (
    FaceRecFolder,
    FaceRecWriter,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    RecordIOError,
    RecordIOReader,
    encode_jpeg,
    pack,
    unpack,
)
from scoremix_plugin.recordio.convert import check_rec

MAGIC = struct.pack("<I", 0xCED7230A)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A sound InsightFace folder: 6 images (labels 0,0,1,1,2,2), 3 identity records, key 0."""
    out = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    with FaceRecWriter(out) as w:
        for i in range(6):
            w.write(cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (112, 112)), i // 2)
    return out


@pytest.fixture
def bad(good, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(good, d)
    return d


def _offsets(folder) -> dict[int, int]:
    return {int(k): int(o) for k, o in (line.split("\t") for line in (folder / "train.idx").read_text().splitlines())}


def _edit_idx(folder, fn) -> None:
    lines = (folder / "train.idx").read_text().splitlines()
    (folder / "train.idx").write_text("".join(f"{line}\n" for line in fn(lines)))


def test_good_folder_checks(good):
    assert check_rec(good, decode=True, progress=False)["ok"]


def test_wrong_magic(bad):
    off = _offsets(bad)[3]
    data = bytearray((bad / "train.rec").read_bytes())
    data[off : off + 4] = b"\xde\xad\xbe\xef"
    (bad / "train.rec").write_bytes(bytes(data))
    with pytest.raises(RecordIOError, match=rf"train.rec, key 3, offset {off}: bad magic 0xEFBEADDE"):
        FaceRecFolder(bad)
    r = IndexedRecordIOReader(bad / "train.idx", bad / "train.rec")
    with pytest.raises(RecordIOError, match=rf"key 3, offset {off}: bad magic"):
        r.read_idx(3)
    with pytest.raises(RecordIOError, match=rf"offset {off}: bad magic"):
        list(RecordIOReader(bad / "train.rec"))


def test_truncated_record(tmp_path):
    with IndexedRecordIOWriter(tmp_path / "t.idx", tmp_path / "t.rec") as w:
        w.write_idx(0, b"a" * 40)
        w.write_idx(1, b"b" * 400)
    data = (tmp_path / "t.rec").read_bytes()
    (tmp_path / "t.rec").write_bytes(data[:-100])
    r = IndexedRecordIOReader(tmp_path / "t.idx", tmp_path / "t.rec")
    assert r.read_idx(0) == b"a" * 40
    with pytest.raises(RecordIOError, match=r"t.rec, key 1, offset 48: truncated record: needs 400 payload bytes"):
        r.read_idx(1)
    seq = RecordIOReader(tmp_path / "t.rec")
    assert seq.read() == b"a" * 40
    with pytest.raises(RecordIOError, match=r"offset 48: truncated record"):
        seq.read()
    (tmp_path / "t.rec").write_bytes(data[:52])  # the second record's header itself is cut
    with pytest.raises(RecordIOError, match=r"offset 48: truncated record header"):
        list(RecordIOReader(tmp_path / "t.rec"))


def test_index_offset_past_end(bad):
    size = (bad / "train.rec").stat().st_size
    _edit_idx(bad, lambda lines: [f"4\t{size + 64}" if line.startswith("4\t") else line for line in lines])
    with pytest.raises(RecordIOError, match=rf"train.idx, key 4, offset {size + 64}: index offset is past the end"):
        FaceRecFolder(bad)


def test_missing_key0(bad):
    _edit_idx(bad, lambda lines: [line for line in lines if not line.startswith("0\t")])
    with pytest.raises(RecordIOError, match=r"train.idx, key 0: key 0 is missing"):
        FaceRecFolder(bad)


def test_missing_image_key_in_header_range(bad, capsys):
    _edit_idx(bad, lambda lines: [line for line in lines if not line.startswith("2\t")])
    with pytest.raises(RecordIOError, match=r"train.idx, key 2: image key 2 is missing from the index"):
        FaceRecFolder(bad)
    assert main(["rec", "check", str(bad), "--no-progress"]) == 1
    assert "key 2: image key 2 is missing" in capsys.readouterr().err


def test_label_at_or_above_2_pow_24_is_refused(tmp_path):
    img = np.zeros((112, 112, 3), np.uint8)
    with pytest.raises(RecordIOError, match=r"key 1: label 16777216 outside \[0, 2\*\*24\)"):
        with FaceRecWriter(tmp_path / "s") as w:
            w.write(img, 2**24)
    assert not (tmp_path / "s" / "train.rec").exists()
    for label in (2.0**24 + 2, 2.0**24 + 0.5, -(2.0**24), [1.0, 2.0**25]):
        with pytest.raises(RecordIOError, match=r"cannot be stored exactly as float32"):
            pack(IRHeader(0, label, 0, 0), b"")
    assert unpack(pack(IRHeader(0, 2.0**24 - 1, 0, 0), b""))[0].label == 2**24 - 1
    # A file written by another tool with such a label is refused on read, not rounded into training.
    raw = struct.pack("<IfQQ", 0, 2.0**24, 1, 0)
    with IndexedRecordIOWriter(tmp_path / "r" / "train.idx", tmp_path / "r" / "train.rec") as w:
        w.write_idx(0, pack(IRHeader(0, 0.0, 0, 0), b""))
        w.write_idx(1, raw)
    with pytest.raises(RecordIOError, match=r"train.rec, key 1, offset 32: label 16777216.0 is not a whole number in"):
        FaceRecFolder(tmp_path / "r")


def test_bad_labels_on_write(tmp_path):
    img = np.zeros((112, 112, 3), np.uint8)
    w = FaceRecWriter(tmp_path / "s", num_classes=3)
    w.write(img, 0)
    with pytest.raises(RecordIOError, match=r"key 2: label 3 outside \[0, num_classes=3\)"):
        w.write(img, 3)
    with pytest.raises(RecordIOError, match=r"key 2: label 1.5 is not an integer"):
        w.write(img, 1.5)
    w.write(img, 1)
    with pytest.raises(RecordIOError, match=r"key 3: label 0 comes back after other labels"):
        w.write(img, 0)
    w.abort()
    assert not list((tmp_path / "s").iterdir())


def test_non_112_images_are_refused(tmp_path, bad):
    with FaceRecWriter(tmp_path / "s") as w:
        with pytest.raises(RecordIOError, match=r"key 1: image is 100x112, expected 112x112"):
            w.write(np.zeros((100, 112, 3), np.uint8), 0)
        with pytest.raises(RecordIOError, match=r"key 1: image is 64x64, expected 112x112"):
            w.write(encode_jpeg(np.zeros((64, 64, 3), np.uint8)), 0)
        with pytest.raises(RecordIOError, match=r"key 1: image must be RGB uint8"):
            w.write(np.zeros((112, 112), np.uint8), 0)
        w.write(np.zeros((112, 112, 3), np.uint8), 0)
    # A folder whose stored image has another size fails the check, naming key and offset.
    off = _offsets(bad)[5]
    with IndexedRecordIOWriter(bad / "train.idx", bad / "train.rec") as w2:
        good_reader = IndexedRecordIOReader(bad / "train.idx", bad / "train.rec")
        for key in good_reader.keys:
            record = good_reader.read_idx(key)
            if key == 5:
                record = pack(unpack(record)[0], encode_jpeg(np.zeros((96, 112, 3), np.uint8)))
            w2.write_idx(key, record)
    with pytest.raises(RecordIOError, match=rf"key 5, offset {off}: image is 96x112, expected 112x112"):
        check_rec(bad, progress=False)


def test_labels_checked_against_property_and_whole_numbers(bad, tmp_path):
    (bad / "property").write_text("2,112,112\n")
    with pytest.raises(RecordIOError, match=r"key 5, offset \d+: label 2 >= num_classes 2"):
        FaceRecFolder(bad)
    with IndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec") as w:
        w.write_idx(0, pack(IRHeader(0, 1.0, 0, 0), b"x"))
        w.write_idx(1, pack(IRHeader(0, 2.5, 1, 0), b"y"))
    with pytest.raises(
        RecordIOError, match=r"train.rec, key 1, offset 36: label 2.5 is not a whole number in \[0, 2\*\*24\)"
    ):
        FaceRecFolder(tmp_path)


def test_check_finds_index_not_at_record_start_and_trailing_bytes(bad, capsys):
    offs = _offsets(bad)
    _edit_idx(bad, lambda lines: [f"3\t{offs[3] + 8}" if line.startswith("3\t") else line for line in lines])
    assert main(["rec", "check", str(bad), "--no-progress"]) == 1
    assert f"key 3, offset {offs[3] + 8}" in capsys.readouterr().err
    _edit_idx(bad, lambda lines: [f"3\t{offs[3]}" if line.startswith("3\t") else line for line in lines])
    size = (bad / "train.rec").stat().st_size
    with open(bad / "train.rec", "ab") as f:
        f.write(b"\0" * 12)
    with pytest.raises(RecordIOError, match=rf"train.rec, offset {size}: bad magic"):
        check_rec(bad, progress=False)


def test_header_holding_the_magic_is_split_and_read_back(tmp_path):
    # id = the magic value puts the magic word at payload offset 8 (aligned): a multi-part record.
    jpeg = encode_jpeg(np.full((112, 112, 3), 90, np.uint8))
    with IndexedRecordIOWriter(tmp_path / "train.idx", tmp_path / "train.rec") as w:
        w.write_idx(0, pack(IRHeader(0, 4.0, 0xCED7230A, 0), jpeg))
    raw = (tmp_path / "train.rec").read_bytes()
    assert int.from_bytes(raw[4:8], "little") == (1 << 29) | 8  # first part: the 8 bytes before the magic
    assert raw[16:20] == MAGIC and int.from_bytes(raw[20:24], "little") >> 29 == 3
    f = FaceRecFolder(tmp_path)
    assert f.labels.tolist() == [4] and f.read(0)[0].id == 0xCED7230A and f.jpeg(0) == jpeg


def test_malformed_index_and_property(bad):
    (bad / "property").write_text("3,112,112\n6\n")  # insightface's python package adds an image-count line
    assert FaceRecFolder(bad).property == (3, 112, 112)
    (bad / "property").write_text("three,112,112\n")
    with pytest.raises(RecordIOError, match=r"property: expected 'num_classes,height,width'"):
        FaceRecFolder(bad)
    (bad / "property").write_text("3,112,112\n")
    _edit_idx(bad, lambda lines: lines[:2] + ["7\tx12"] + lines[2:])
    with pytest.raises(RecordIOError, match=r"train.idx: line 3 is not 'key<TAB>offset'"):
        FaceRecFolder(bad)
