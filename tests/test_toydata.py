"""The embedded toy identity dataset: layout, determinism, held-out identities, learnability."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from scoremix_plugin import cli
from scoremix_plugin.recordio import FaceRecFolder
from scoremix_plugin.toydata import NORMAL, STRONG, make_identities, render_face, write_toy_dataset
from scoremix_plugin.verification.binfile import load_bin, load_bin_images

TINY = dict(num_identities=3, images_per_identity=2, num_test_identities=3, num_pairs=6)


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _files_after(tmp_path / "a", seed=3)
    b = _files_after(tmp_path / "b", seed=3)
    c = _files_after(tmp_path / "c", seed=4)
    assert set(a) == {"train.rec", "train.idx", "property", "toy_lfw.bin", "toy_cfp_fp.bin", "toy_meta.json"}
    assert a == b
    assert a["train.rec"] != c["train.rec"] and a["toy_lfw.bin"] != c["toy_lfw.bin"]


def _files_after(d, seed):
    write_toy_dataset(d, seed=seed, **TINY)
    return _files(d)


def test_layout_reads_back_with_labels_and_counts(toy_data):
    folder = FaceRecFolder(toy_data)
    assert folder.layout == "insightface"
    assert len(folder) == 12 * 8 and folder.num_classes == 12
    np.testing.assert_array_equal(folder.labels, np.repeat(np.arange(12), 8))
    assert folder.property[0] == 12
    img = folder.image(5)
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert img.std() > 10  # a drawn picture, not a flat fill
    meta = json.loads((toy_data / "toy_meta.json").read_text())
    assert meta["train"] == {"rec": "train.rec", "num_classes": 12, "num_image": 96, "images_per_identity": 8}


@pytest.mark.parametrize("name", ["toy_lfw", "toy_cfp_fp"])
def test_bins_balanced_and_fold_balanced(toy_data, name):
    images, issame = load_bin(toy_data / f"{name}.bin")
    assert len(images) == 120 and issame.shape == (60,)
    assert issame.sum() == 30
    # Each of the protocol's 10 unshuffled folds holds both kinds of pair.
    for fold in np.array_split(issame, 10):
        assert 0 < fold.sum() < len(fold)


def test_held_out_identities_are_disjoint_from_training(toy_data):
    meta = json.loads((toy_data / "toy_meta.json").read_text())
    train = np.array(meta["train_identities"])
    test = np.array(meta["test_identities"])
    assert train.shape == (12, len(meta["identity_fields"])) and test.shape[0] == 10
    # No held-out identity equals a training one (not even a twin copied across the groups).
    d = np.abs(train[:, None, :] - test[None, :, :]).sum(-1)
    assert d.min() > 0.5


def test_render_is_a_function_of_identity_and_rng():
    idt = make_identities(2, seed=0)[0]
    a = render_face(idt, np.random.default_rng(1))
    b = render_face(idt, np.random.default_rng(1))
    c = render_face(idt, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 3  # nuisance changes the picture
    assert render_face(idt, np.random.default_rng(1), STRONG, size=64).shape == (64, 64, 3)


def _pixel_features(images: np.ndarray) -> np.ndarray:
    x = np.stack([cv2.resize(i, (16, 16), interpolation=cv2.INTER_AREA) for i in images]).astype(np.float32)
    x = x.reshape(len(x), -1)
    x -= x.mean(1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identity_is_learnable_but_not_trivially(toy_data):
    # Nearest neighbour on 16x16 pixels: well above chance on training identities, far from perfect.
    folder = FaceRecFolder(toy_data)
    x = _pixel_features(np.stack([folder.image(i) for i in range(len(folder))]))
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn_acc = (folder.labels[sim.argmax(1)] == folder.labels).mean()
    assert 2.5 / 12 < nn_acc < 0.9, nn_acc
    # Held-out pairs: pixel similarity separates same from different better than chance, not perfectly.
    for name in ("toy_lfw", "toy_cfp_fp"):
        images, issame = load_bin_images(toy_data / f"{name}.bin")
        z = _pixel_features(images)
        s = (z[0::2] * z[1::2]).sum(1)
        best = max(((s >= t) == issame).mean() for t in s)
        assert 0.6 < best < 0.97, (name, best)


def test_nuisance_presets_order():
    assert STRONG.yaw > NORMAL.yaw and STRONG.roll > NORMAL.roll and STRONG.light > NORMAL.light


def test_cli_writes_the_folder(tmp_path):
    out = tmp_path / "cli"
    rc = cli.main(
        [
            "toy-data",
            "--out",
            str(out),
            "--identities",
            "2",
            "--images-per-identity",
            "2",
            "--test-identities",
            "2",
            "--pairs",
            "4",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    assert FaceRecFolder(out).num_classes == 2
    assert load_bin(out / "toy_lfw.bin")[1].tolist() == [True, False, True, False]


def test_bad_sizes_are_named(tmp_path):
    with pytest.raises(ValueError, match="num_test_identities"):
        write_toy_dataset(tmp_path, num_identities=2, images_per_identity=1, num_test_identities=1, num_pairs=2)
    with pytest.raises(ValueError, match="images_per_identity"):
        write_toy_dataset(tmp_path, num_identities=2, images_per_identity=0, num_test_identities=2, num_pairs=2)
