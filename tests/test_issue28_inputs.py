"""Issue 28 checks that are not command lines of the hostile corpus: list paths, labels, ranges, checks."""

from __future__ import annotations

import argparse
from pathlib import Path

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


# A garbled JPEG reaching training: a counted, warned skip (recordio/dataset.py's rule).


def test_a_garbled_jpeg_in_training_is_skipped_counted_and_named(tmp_path, capfd):
    import warnings

    from test_recordio_leaks import _folder, _garbled, _picture

    from scoremix_plugin.recordio.dataset import FaceRecDataset
    from scoremix_plugin.recordio.format import RecordIOWarning

    jpegs = [encode_jpeg(_picture(i)) for i in range(4)]
    d = _folder(tmp_path / "r", [jpegs[0], _garbled(jpegs[3]), jpegs[2], jpegs[3]])  # labels 0, 0, 1, 1
    ds = FaceRecDataset(d, flip=False)
    capfd.readouterr()
    with pytest.warns(
        RecordIOWarning,
        match=rf"file {d / 'train.rec'}, key 2: garbled JPEG .*key 1 of the same "
        r"identity \(label 0\)",
    ):
        x, y = ds[1]
    assert "JPEG" not in capfd.readouterr().err  # libjpeg's bare line no longer reaches the terminal
    assert int(y) == 0 and torch_equal(x, ds[0][0]) and list(ds.garbled) == [2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per key
        ds[1]
        ds[2]
    # An identity whose every image is garbled has nothing to stand in: an error naming the key.
    bad = _folder(tmp_path / "bad", [jpegs[0], jpegs[1], _garbled(jpegs[0]), _garbled(jpegs[2])])
    with pytest.raises(RecordIOError, match=r"key 3, offset \d+: garbled JPEG .*no other image of identity 1"):
        FaceRecDataset(bad, flip=False)[2]


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_the_generator_dataset_skips_garbled_jpegs_too(tmp_path):
    from test_recordio_leaks import _folder, _garbled, _picture

    from scoremix_plugin.generation.train import GeneratorImages
    from scoremix_plugin.recordio.format import RecordIOWarning

    jpegs = [encode_jpeg(_picture(i)) for i in range(4)]
    d = _folder(tmp_path / "r", [jpegs[0], jpegs[1], jpegs[2], _garbled(jpegs[0])])
    with pytest.warns(RecordIOWarning, match="key 4: garbled JPEG"):
        ds = GeneratorImages(d, 16, cache=True)
    assert list(ds.garbled) == [4] and (ds.cache[3] == ds.cache[2]).all()


# RecordIO index values near 2**63: refused by a check, not by an integer overflow.


def test_index_offsets_near_2_63_are_refused_without_numpy_warnings(tmp_path):
    import warnings

    from scoremix_plugin.recordio import FaceRecFolder

    for off in (2**63 - 1, 2**63 - 4, 2**63 - 8):
        d = _insightface(tmp_path / f"o{off}", [0, 0, 1, 1], [(1, 3), (3, 5)])
        rows = [line.split("\t") for line in (d / "train.idx").read_text().splitlines()]
        rows[2][1] = str(off)
        (d / "train.idx").write_text("".join("\t".join(r) + "\n" for r in rows))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's "overflow encountered" would be an error here
            with pytest.raises(RecordIOError, match=rf"train.idx, key 2, offset {off}: index offset is past the end"):
                FaceRecFolder(d)


# The output rule: --overwrite lets a writer replace its own earlier output.


def test_overwrite_replaces_an_earlier_output(tmp_path, capsys):
    from scoremix_plugin.centres import save_centres
    from scoremix_plugin.cli import main

    save_centres(tmp_path / "c.npz", np.arange(6), np.random.default_rng(0).normal(size=(6, 8)), space="embedding")
    argv = ["select", "--centres", str(tmp_path / "c.npz"), "--num-identities", "2", "--out", str(tmp_path / "p.csv")]
    assert main(argv) == 0
    assert main(argv) == 2 and "p.csv already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    d = _insightface(tmp_path / "rec", [0, 0, 1, 1], [(1, 3), (3, 5)])
    argv = ["rec", "to-folder", str(d), str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 2 and "already holds 0, 1" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert (
        main(
            [
                "align",
                "--a",
                str(tmp_path / "c.npz"),
                "--b",
                str(tmp_path / "c.npz"),
                "--json",
                str(tmp_path / "c.npz"),
                "--overwrite",
            ]
        )
        == 2
    )  # never over an input
    assert "is --a" in capsys.readouterr().err


# The manifest records the real folder's train.idx sha256: a moved real folder is still verified.


def test_manifest_real_idx_sha256_verifies_a_moved_real_folder(tmp_path):
    import json
    import shutil

    from scoremix_plugin.io_utils import sha256_file
    from scoremix_plugin.synthesis.manifest import Manifest, ManifestError, check_provenance

    real = _insightface(tmp_path / "real", [0, 0, 1, 1], [(1, 3), (3, 5)])
    other = _insightface(tmp_path / "other", [0, 0, 1, 1, 1], [(1, 3), (3, 6)])  # another dataset
    (tmp_path / "syn").mkdir()
    m = Manifest(
        path=tmp_path / "syn" / "manifest.json",
        real_num_classes=2,
        real_num_image=4,
        real_rec=real,
        num_synthetic_classes=0,
        num_synthetic_images=0,
        generator={},
        selection={},
        sampler={},
        real_idx_sha256=sha256_file(real / "train.idx"),
    )
    m.write()
    on_disk = json.loads(m.path.read_text())
    assert on_disk["real"]["idx_sha256"] == m.real_idx_sha256
    m = Manifest.read(m.path)
    assert m.real_idx_sha256 == sha256_file(real / "train.idx")
    moved = Path(shutil.move(real, tmp_path / "moved"))  # the recorded folder is gone
    check_provenance(m, real_dir=moved)  # the same data, elsewhere: fine
    with pytest.raises(ManifestError, match=r"--real .*other holds other data"):
        check_provenance(m, real_dir=other)  # before: unverifiable once the recorded folder was gone
    # Without the key (older manifests): today's rule, nothing to compare once the recorded folder is gone.
    del on_disk["real"]["idx_sha256"]
    m.path.write_text(json.dumps(on_disk))
    old = Manifest.read(m.path)
    assert old.real_idx_sha256 is None and "idx_sha256" not in old.to_json()["real"]
    check_provenance(old, real_dir=other)
    on_disk["real"]["idx_sha256"] = "not a hash"
    m.path.write_text(json.dumps(on_disk))
    with pytest.raises(ManifestError, match="real.idx_sha256"):
        Manifest.read(m.path)
