"""Issue 28 checks that are not command lines of the hostile corpus: list paths, labels, ranges, checks."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from scoremix_plugin.checks import check_number, number_arg
from scoremix_plugin.errors import InputError, OutputWriteError
from scoremix_plugin.recordio import FaceRecFolder, IndexedRecordIOWriter, RecordIOError, encode_jpeg, pack


def _insightface(path, labels, ranges):
    """An InsightFace-layout folder: images with ``labels``, identity records with ``ranges`` [(a, b)]."""
    path.mkdir()
    n = len(labels)
    img = encode_jpeg(np.zeros((112, 112, 3), np.uint8))
    w = IndexedRecordIOWriter(path / "train.idx", path / "train.rec")
    w.write_idx(0, pack((2, [n + 1, n + 1 + len(ranges)], 0, 0)))
    for k, lab in enumerate(labels, 1):
        w.write_idx(k, pack((0, float(lab), k, 0), img))
    for j, (a, b) in enumerate(ranges):
        w.write_idx(n + 1 + j, pack((2, [a, b], 0, 0)))
    w.close()
    return path


def test_identity_ranges_that_contradict_the_labels_are_refused_by_every_reader(tmp_path):
    from scoremix_plugin.cli import main

    ok = _insightface(tmp_path / "ok", [0, 0, 1, 1], [(1, 3), (3, 5)])
    assert FaceRecFolder(ok).identity_ranges == {0: (1, 3), 1: (3, 5)}
    bad = _insightface(tmp_path / "bad", [0, 1, 1, 1], [(1, 3), (3, 5)])  # key 2 says label 1 inside label 0's range
    with pytest.raises(RecordIOError, match="key 2.*inside the identity range"):
        FaceRecFolder(bad)
    assert main(["rec", "to-folder", str(bad), str(tmp_path / "out"), "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()


def test_pack_names_the_magnitude_rule_for_negative_labels():
    with pytest.raises(RecordIOError, match=r"magnitude >= 2\*\*24"):
        pack((0, -(2**24), 0, 0))


def test_ijb_meta_paths_must_stay_under_the_root(tmp_path):
    from scoremix_plugin.verification.ijb_meta import read_tid_mid

    for name in ("../../x.jpg", "/etc/passwd"):
        f = tmp_path / "t_face_tid_mid.txt"
        f.write_text(f"1.jpg 1 1\n{name} 2 2\n")
        with pytest.raises(InputError, match=r"t_face_tid_mid.txt:2: image path"):
            read_tid_mid(f)


def test_number_checks_name_the_flag_and_refuse_nan_inf_bool():
    for bad in (float("nan"), float("inf"), True, "3", -1):
        with pytest.raises(InputError, match="recipe.x"):
            check_number(bad, "recipe.x", lo=0)
    assert check_number(3.0, "k", integer=True, lo=1) == 3
    with pytest.raises(InputError):
        check_number(2.5, "k", integer=True)
    with pytest.raises(argparse.ArgumentTypeError, match="must be an integer >= 1"):
        number_arg("--genuine-cap", integer=True, lo=1)("-5")


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    import torch

    from scoremix_plugin.io_utils import save_torch_atomic

    p = tmp_path / "ck.pt"
    save_torch_atomic({"a": 1}, p)
    before = p.read_bytes()

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputWriteError, match="No space left on device"):
        save_torch_atomic({"a": 2}, p)
    assert p.read_bytes() == before and [x.name for x in tmp_path.iterdir()] == ["ck.pt"]
