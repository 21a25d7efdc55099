"""Bad RecordIO input that used to leak a foreign exception or give a silent result (issue 18, part A).

Each case must end in a RecordIOError (a ValueError) naming the file, key, offset or line, or, for
the commands, a non-zero exit with one ``error:`` line and no traceback.
"""

from __future__ import annotations

import errno
import shutil
import sys

import cv2
import numpy as np
import pytest

from scoremix_plugin.cli import main
from scoremix_plugin.errors import OutputExistsError
from scoremix_plugin.recordio import (
    FaceRecFolder,
    FaceRecWriter,
    IRHeader,
    RecordIOError,
    encode_jpeg,
    pack,
    unpack_img,
)
from scoremix_plugin.recordio import writer as writer_module
from scoremix_plugin.recordio.convert import check_rec, folder_to_rec, rec_to_folder
from scoremix_plugin.recordio.dataset import FaceRecDataset
from scoremix_plugin.recordio.format import decode_image, decode_image_strict


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC)


def _folder(path, payloads: list[bytes]):
    """An InsightFace folder with the given stored payloads (labels 0, 0, 1, 1, ...), sizes unchecked."""
    with FaceRecWriter(path, image_size=None) as w:
        for i, p in enumerate(payloads):
            w.write(p, i // 2)
    return path


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return [encode_jpeg(_picture(i)) for i in range(4)]


def _garbled(jpeg: bytes) -> bytes:
    # One byte flipped inside the entropy-coded data: libjpeg decodes it with only a warning.
    b = bytearray(jpeg)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _cli_fails(args, capsys, *needles):
    """The command fails with a one-line error naming ``needles`` (however the CLI ends: return or SystemExit)."""
    try:
        rc = main(args)
    except SystemExit as e:
        rc, msg = e.code, e.code
        if isinstance(msg, str):
            print(msg if "error:" in msg else f"error: {msg}", file=sys.stderr)
            rc = 2
    err = capsys.readouterr().err
    assert rc != 0, args
    assert "Traceback" not in err and "error:" in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# Leaks of foreign exceptions.


def test_idx_offset_beyond_int64_names_file_and_line(tmp_path, jpegs, capsys):
    d = _folder(tmp_path / "r", jpegs)
    lines = (d / "train.idx").read_text().splitlines()
    lines[2] = lines[2].split("\t")[0] + "\t" + str(1 << 63)
    (d / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        RecordIOError, match=r"train\.idx: line 3: key \d+ or offset 9223372036854775808 is out of range"
    ):
        FaceRecFolder(d)
    _cli_fails(["rec", "check", str(d), "--no-progress"], capsys, "line 3")


@pytest.mark.parametrize(
    "payload", [b"", b"not an image at all", b"\xff\xd8\xff\xe0 garbage"], ids=["empty", "text", "jpeg-head"]
)
def test_undecodable_payload_names_key_and_offset(tmp_path, jpegs, payload, capsys):
    d = _folder(tmp_path / "r", [jpegs[0], payload, jpegs[2], jpegs[3]])
    ds = FaceRecDataset(d)
    with pytest.raises(RecordIOError, match=r"train\.rec, key 2, offset \d+: cannot decode"):
        ds[1]
    with pytest.raises(RecordIOError, match=r"key 2, offset \d+"):
        check_rec(d, decode=True, progress=False)
    _cli_fails(["rec", "check", str(d), "--decode", "--no-progress"], capsys, "key 2")
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(payload)
    with pytest.raises(RecordIOError):
        unpack_img(pack(IRHeader(0, 1.0, 1, 0), payload))


def test_from_folder_on_an_empty_jpg_names_the_file(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    cv2.imwrite(str(src / "a" / "0.jpg"), _picture(0))
    (src / "a" / "1.jpg").write_bytes(b"")
    _cli_fails(["rec", "from-folder", str(src), str(tmp_path / "out"), "--no-progress"], capsys, "1.jpg")
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("header", [IRHeader(0, 1.0, -1, 0), IRHeader(0, 1.0, 0, 1 << 64), IRHeader(0, 1.0, 1.5, 0)])
def test_pack_refuses_ids_outside_uint64(header):
    with pytest.raises(RecordIOError, match="IRHeader id"):
        pack(header, b"x")


@pytest.mark.parametrize("label", [float("nan"), float("inf"), -float("inf"), [1.0, float("nan")], np.float32("nan")])
def test_pack_refuses_non_finite_labels(label):
    with pytest.raises(RecordIOError, match="not a finite number"):
        pack(IRHeader(0, label, 1, 0), b"x")


# Silent results.


def test_check_fails_two_keys_on_one_record(tmp_path, jpegs, capsys):
    d = _folder(tmp_path / "r", jpegs)
    lines = (d / "train.idx").read_text().splitlines()
    k2_off = lines[1].split("\t")[1]  # key 2's record
    lines[2] = lines[2].split("\t")[0] + "\t" + k2_off  # key 3 -> key 2's record
    (d / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordIOError, match="keys 2 and 3 point at the same record"):
        FaceRecFolder(d)  # every reader refuses it now (issue 28), not only the check
    with pytest.raises(
        RecordIOError, match=rf"keys 2 and 3 point at the same record.*|train\.idx, key 3, offset {k2_off}"
    ):
        check_rec(d, progress=False)
    _cli_fails(["rec", "check", str(d), "--no-progress"], capsys, "same record")


def test_check_decode_reports_garbled_and_truncated_jpegs(tmp_path, jpegs, capsys):
    good = _folder(tmp_path / "good", jpegs)
    assert check_rec(good, decode=True, progress=False)["ok"]
    assert main(["rec", "check", str(good), "--decode", "--no-progress"]) == 0
    garbled = _garbled(jpegs[0])  # (not every flipped byte is visible to libjpeg: this one is)
    decode_image(garbled)  # the plain decoder accepts it (what training sees) ...
    with pytest.raises(ValueError, match="corrupt JPEG data"):
        decode_image_strict(garbled)  # ... the strict one does not
    d = _folder(tmp_path / "garbled", [jpegs[0], garbled, jpegs[2], jpegs[3]])
    check_rec(d, progress=False)  # headers are fine: only --decode can tell
    with pytest.raises(RecordIOError, match=r"key 2, offset \d+: image: corrupt JPEG data"):
        check_rec(d, decode=True, progress=False)
    _cli_fails(["rec", "check", str(d), "--decode", "--no-progress"], capsys, "corrupt JPEG")
    cut = _folder(tmp_path / "cut", [jpegs[0], jpegs[1], jpegs[2][:-300], jpegs[3]])
    with pytest.raises(RecordIOError, match=r"key 3, offset \d+: image: truncated JPEG"):
        check_rec(cut, decode=True, progress=False)


@pytest.mark.parametrize("bad", [b"", b"garbage bytes", "cut"], ids=["empty", "garbage", "truncated"])
def test_to_folder_never_writes_a_bad_image(tmp_path, jpegs, bad, capsys):
    bad = jpegs[1][:-300] if bad == "cut" else bad
    d = _folder(tmp_path / "r", [jpegs[0], bad, jpegs[2], jpegs[3]])
    out = tmp_path / "out"
    with pytest.raises(RecordIOError, match=r"key 2, offset \d+: stored"):
        rec_to_folder(d, out, progress=False)
    assert not out.exists()  # checked before any file is written
    _cli_fails(["rec", "to-folder", str(d), str(out), "--no-progress"], capsys, "key 2")
    assert not out.exists()


# Writers: no overwriting, no writing into the input, no temporary files left behind.


@pytest.fixture
def image_src(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b"):
        (src / name).mkdir(parents=True)
        for j in range(2):
            cv2.imwrite(str(src / name / f"{j}.jpg"), _picture(j + 10 * len(name)))
    return src


def test_from_folder_refuses_an_existing_dataset_unless_overwrite(image_src, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["rec", "from-folder", str(image_src), str(out), "--no-progress"]) == 0
    before = (out / "train.rec").read_bytes()
    (out / "train.rec").write_bytes(b"the user's data")
    _cli_fails(["rec", "from-folder", str(image_src), str(out), "--no-progress"], capsys, "--overwrite", "train.rec")
    assert (out / "train.rec").read_bytes() == b"the user's data"
    assert main(["rec", "from-folder", str(image_src), str(out), "--overwrite", "--no-progress"]) == 0
    assert (out / "train.rec").read_bytes() == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_from_folder_never_writes_into_its_input(image_src, where, capsys):
    out = image_src if where == "same" else image_src / "a" / "rec"
    before = sorted(p.relative_to(image_src) for p in image_src.rglob("*"))
    relation = "is" if where == "same" else "lies inside"
    with pytest.raises(OutputExistsError, match=f"{relation} the input folder"):
        folder_to_rec(image_src, out, progress=False, overwrite=True)
    _cli_fails(
        ["rec", "from-folder", str(image_src), str(out), "--overwrite", "--no-progress"],
        capsys,
        f"{relation} the input folder",
    )
    assert sorted(p.relative_to(image_src) for p in image_src.rglob("*")) == before


def test_from_folder_may_write_beside_its_input(image_src):
    """An output folder that HOLDS the image folder is fine: train.rec / .idx go beside it, not into it."""
    out = image_src.parent
    folder_to_rec(image_src, out, progress=False)
    assert (out / "train.rec").is_file() and not list(image_src.rglob("train.*"))


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes were written (or whose flush fails)."""

    def __init__(self, f, room: int, fail_flush: bool):
        self._f, self._room, self._fail_flush = f, room, fail_flush

    def write(self, b):
        self._room -= len(b)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(b)

    def flush(self):
        if self._fail_flush:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._f.flush()

    def fileno(self):
        return self._f.fileno()

    def close(self):
        self._f.close()


@pytest.mark.parametrize("room,fail_flush", [(5_000, False), (10**9, True)], ids=["during-writes", "at-close"])
def test_full_disk_leaves_no_temporary_files(image_src, tmp_path, monkeypatch, room, fail_flush, capsys):
    real_open = open
    monkeypatch.setattr(
        writer_module, "open", lambda *a, **k: _FullDisk(real_open(*a, **k), room, fail_flush), raising=False
    )
    out = tmp_path / "out"
    with pytest.raises(RecordIOError, match="No space left on device"):
        folder_to_rec(image_src, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []
    _cli_fails(["rec", "from-folder", str(image_src), str(out), "--no-progress"], capsys, "No space left")
    assert sorted(p.name for p in out.iterdir()) == []
    shutil.rmtree(out)


def test_make_bin_from_rec_refuses_a_bad_stored_image(tmp_path, jpegs, capsys):
    from scoremix_plugin.verification.binfile import bin_from_rec

    d = _folder(tmp_path / "r", [jpegs[0], jpegs[1], b"", jpegs[3]])
    with pytest.raises(RecordIOError, match=r"key 3, offset \d+: stored image"):
        bin_from_rec(d, tmp_path / "x.bin", num_pairs=2, seed=0)
    assert not (tmp_path / "x.bin").exists()
    _cli_fails(["make-bin", "--rec", str(d), "--num-pairs", "2", "--out", str(tmp_path / "x.bin")], capsys, "key 3")
