"""Verification: the host's protocol on golden embeddings, safe .bin files, TAR@FAR, builders."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from scoremix_plugin.verification.binfile import (
    BinFileError,
    UnsafePickleError,
    bin_from_pairs,
    bin_from_rec,
    load_bin,
    load_bin_images,
    read_pairs,
    sample_pairs,
    write_bin,
)
from scoremix_plugin.verification.protocol import (
    evaluate_embeddings,
    kfold_test_slices,
    roc_curve,
    tar_at_far,
)

GOLDEN_SETS = ("easy", "hard", "odd_count")


@pytest.fixture(scope="module")
def expected(golden_dir):
    return json.loads((golden_dir / "verification" / "expected.json").read_text())


# Protocol.


@pytest.mark.parametrize("name", GOLDEN_SETS)
def test_protocol_reproduces_golden_numbers(golden_dir, expected, name):
    z = np.load(golden_dir / "verification" / f"embeddings_{name}.npz")
    r = evaluate_embeddings(z["embeddings"], z["issame"])
    e = expected[name]
    np.testing.assert_allclose(r.accuracy_per_fold, e["accuracy_per_fold"], rtol=0, atol=1e-9)
    assert abs(r.accuracy_mean - e["accuracy_mean"]) < 1e-9
    assert abs(r.accuracy_std - e["accuracy_std"]) < 1e-9
    assert abs(float(np.sum(r.tpr)) - e["tpr_sum"]) < 1e-9
    assert abs(float(np.sum(r.fpr)) - e["fpr_sum"]) < 1e-9
    d = r.to_dict()
    assert d["accuracy_per_fold"] == r.accuracy_per_fold and len(d["tpr"]) == 400
    json.dumps(d)  # JSON-ready


def _naive_protocol(dist, issame, nfolds=10):
    """The protocol spelled out loop by loop (the host's eval/verification.py), to check the vectorised version
    on ties."""
    thresholds = np.arange(0, 4, 0.01)
    n = len(dist)
    sizes = [n // nfolds + (1 if i < n % nfolds else 0) for i in range(nfolds)]
    bounds = np.cumsum([0] + sizes)
    accs, tprs, fprs = [], [], []

    def acc_at(t, d, s):
        p = d < t
        tp, fp = np.sum(p & s), np.sum(p & ~s)
        tn, fn = np.sum(~p & ~s), np.sum(~p & s)
        return (0 if tp + fn == 0 else tp / (tp + fn)), (0 if fp + tn == 0 else fp / (fp + tn)), (tp + tn) / d.size

    for i in range(nfolds):
        test = np.arange(bounds[i], bounds[i + 1])
        train = np.setdiff1d(np.arange(n), test)
        train_acc = [acc_at(t, dist[train], issame[train])[2] for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        curves = [acc_at(t, dist[test], issame[test])[:2] for t in thresholds]
        tprs.append([c[0] for c in curves])
        fprs.append([c[1] for c in curves])
        accs.append(acc_at(best, dist[test], issame[test])[2])
    return np.array(accs), np.mean(tprs, 0), np.mean(fprs, 0)


@pytest.mark.parametrize("seed,n", [(0, 37), (1, 103), (2, 20)])
def test_vectorised_protocol_equals_naive_loops_with_ties(seed, n):
    rng = np.random.default_rng(seed)
    # Embeddings on a coarse grid: many exactly tied distances, some exactly on a threshold value.
    emb = rng.integers(-2, 3, size=(2 * n, 3)).astype(np.float64)
    emb[np.all(emb == 0, axis=1)] = 1.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    issame = rng.random(n) < 0.5
    r = evaluate_embeddings(emb, issame)
    dist = np.sum((emb[0::2] - emb[1::2]) ** 2, 1)
    accs, tpr, fpr = _naive_protocol(dist, issame)
    np.testing.assert_array_equal(r.accuracy_per_fold, accs)
    np.testing.assert_allclose(r.tpr, tpr, atol=1e-12)
    np.testing.assert_allclose(r.fpr, fpr, atol=1e-12)
    assert r.accuracy_std == pytest.approx(np.std(accs), abs=1e-15)


def test_fold_sizes_follow_kfold():
    sizes = [s.stop - s.start for s in kfold_test_slices(457, 10)]
    assert sizes == [46] * 7 + [45] * 3
    assert kfold_test_slices(457)[0].start == 0 and kfold_test_slices(457)[-1].stop == 457
    with pytest.raises(ValueError, match="folds"):
        kfold_test_slices(5, 10)


def test_evaluate_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="pairs"):
        evaluate_embeddings(np.zeros((20, 4)), np.ones(9, bool))
    with pytest.raises(ValueError, match="interleaved"):
        evaluate_embeddings(np.zeros((21, 4)), np.ones(10, bool))


def test_tar_at_far_exact_flagged_and_duplicates():
    rng = np.random.default_rng(0)
    neg = rng.permutation(np.linspace(1.0, 2.0, 2000))
    pos = np.array([0.5, 1.0 + 0.5e-3, 1.0 + 1.5e-3, 1.9])
    dist = np.r_[neg, pos]
    issame = np.r_[np.zeros(2000, bool), np.ones(4, bool)]
    # 2 false accepts allowed: threshold = third-smallest negative (1.001...), strict "<".
    t = tar_at_far(dist, issame, [1e-3, 0.5])
    assert t[1e-3].tar == pytest.approx(2 / 4) and not t[1e-3].few_negatives
    assert t[0.5].tar == pytest.approx(3 / 4)
    # Too few negatives for 1e-3: reported with the flag, not a crash.
    few = tar_at_far(np.r_[neg[:100], pos], np.r_[np.zeros(100, bool), np.ones(4, bool)], [1e-3])
    assert few[1e-3].few_negatives and 0.0 <= few[1e-3].tar <= 1.0
    # All negatives tied (the FAR curve repeats values): no interpolation, no error, nothing accepted at a tie.
    tied = tar_at_far(
        np.r_[np.ones(3000), [0.2, 1.0, 3.0]], np.r_[np.zeros(3000, bool), np.ones(3, bool)], [1e-3, 1e-2]
    )
    assert tied[1e-3].tar == pytest.approx(1 / 3) and tied[1e-2].tar == pytest.approx(1 / 3)
    far, tar, thr = roc_curve(np.r_[np.ones(3000), [0.2, 1.0, 3.0]], np.r_[np.zeros(3000, bool), np.ones(3, bool)])
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0) and far[-1] == tar[-1] == 1.0
    assert len(np.unique(thr)) == len(thr)  # one point per distinct distance


def test_results_with_duplicate_distances_evaluate(golden_dir):
    z = np.load(golden_dir / "verification" / "embeddings_easy.npz")
    emb = np.round(z["embeddings"], 1)  # many tied distances
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = evaluate_embeddings(emb, z["issame"], fars=[1e-3, 1e-2, 1e-1])
    assert set(r.tar_at_far) == {1e-3, 1e-2, 1e-1}
    assert r.tar_at_far[1e-3].few_negatives and not r.tar_at_far[1e-1].few_negatives


# .bin files.


def test_golden_bins_py2_and_py3_agree(golden_dir):
    img2, same2 = load_bin(golden_dir / "verification" / "toy_py2.bin")
    img3, same3 = load_bin(golden_dir / "verification" / "toy_py3.bin")
    assert len(img2) == 120 and same2.shape == (60,) and same2.dtype == bool
    assert img2 == img3 and np.array_equal(same2, same3)
    assert all(isinstance(b, bytes) for b in img2)
    decoded, _ = load_bin_images(golden_dir / "verification" / "toy_py2.bin")
    assert decoded.shape == (120, 112, 112, 3) and decoded.dtype == np.uint8 and decoded.std() > 1


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.bin"
    bad.write_bytes(pickle.dumps(([b"x", _Evil(marker)], [True]), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"evil\.bin.*(posix|os)\.system"):
        load_bin(bad)
    assert not marker.exists()
    # Also through the allowed _codecs.encode: only latin1 is accepted (codec lookup imports by name).
    codec = tmp_path / "codec.bin"
    codec.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(UnsafePickleError, match="latin1"):
        load_bin(codec)


def test_truncated_and_malformed_files(tmp_path, golden_dir):
    data = (golden_dir / "verification" / "toy_py2.bin").read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BinFileError, match=r"cut\.bin.*truncated"):
        load_bin(cut)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(BinFileError, match=r"odd\.bin: odd number of images \(3\)"):
        load_bin(odd)
    mismatch = tmp_path / "mismatch.bin"
    mismatch.write_bytes(pickle.dumps(([b"a", b"b", b"c", b"d"], [True])))
    with pytest.raises(BinFileError, match="4 images for 1 pairs"):
        load_bin(mismatch)
    notuple = tmp_path / "notuple.bin"
    notuple.write_bytes(pickle.dumps([[], [], []]))
    with pytest.raises(BinFileError, match="2-tuple"):
        load_bin(notuple)
    # A dict is no part of a .bin: its opcodes are refused before anything runs.
    notuple.write_bytes(pickle.dumps({"bins": []}))
    with pytest.raises(UnsafePickleError, match="opcode EMPTY_DICT at byte 11"):
        load_bin(notuple)


def test_write_round_trip_and_host_compatible(tmp_path, golden_dir):
    images, issame = load_bin(golden_dir / "verification" / "toy_py3.bin")
    out = tmp_path / "rt.bin"
    write_bin(out, images, issame)
    images2, issame2 = load_bin(out)
    assert images2 == images and np.array_equal(issame2, issame)
    # The host's plain pickle.load reads it (protocol 2: Python 2 readers too).
    with open(out, "rb") as f:
        host_images, host_flags = pickle.load(f)
    assert host_images == images and host_flags == issame.tolist()
    assert out.read_bytes()[:2] == b"\x80\x02"
    # numpy booleans, as some converted files hold them, load through the allow-list.
    npb = tmp_path / "np.bin"
    npb.write_bytes(pickle.dumps((images[:4], [np.bool_(True), np.bool_(False)]), protocol=2))
    assert load_bin(npb)[1].tolist() == [True, False]


def test_undecodable_image_is_named_by_index(tmp_path, golden_dir):
    images, issame = load_bin(golden_dir / "verification" / "toy_py3.bin")
    images[5] = b"not an image"
    bad = tmp_path / "bad.bin"
    write_bin(bad, images, issame)
    with pytest.raises(BinFileError, match=r"bad\.bin: image 5 cannot be decoded"):
        load_bin_images(bad)


# Builders.


def test_sample_pairs_balanced_distinct_and_seeded():
    labels = np.repeat(np.arange(6), [1, 3, 4, 2, 5, 1])
    pairs, issame = sample_pairs(labels, 30, seed=3)
    assert len(pairs) == 30 and issame.sum() == 15
    assert np.array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], issame)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 30
    p2, s2 = sample_pairs(labels, 30, seed=3)
    assert np.array_equal(pairs, p2) and np.array_equal(issame, s2)
    with pytest.raises(ValueError, match="same pairs"):
        sample_pairs(labels, 60, seed=0)  # only 3+6+1+10 = 20 same pairs exist


def test_bin_from_rec_via_cli(tmp_path):
    from scoremix_plugin import cli
    from scoremix_plugin.recordio import FaceRecWriter

    rng = np.random.default_rng(0)
    rec = tmp_path / "rec"
    with FaceRecWriter(rec) as w:
        for label in range(5):
            for _ in range(3):
                w.write(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), label)
    out_a, out_b = tmp_path / "a.bin", tmp_path / "b.bin"
    for out in (out_a, out_b):
        assert cli.main(["make-bin", "--rec", str(rec), "--num-pairs", "20", "--seed", "7", "--out", str(out)]) == 0
    assert out_a.read_bytes() == out_b.read_bytes()  # seeded
    images, issame = load_bin(out_a)
    assert len(images) == 40 and issame.sum() == 10
    decoded, _ = load_bin_images(out_a)
    # Same pairs: both images come from one class; the rec stores each image once, so equal bytes
    # identify the image and its label.
    from scoremix_plugin.recordio import FaceRecFolder

    folder = FaceRecFolder(rec)
    label_of = {folder.jpeg(i): folder.label(i) for i in range(len(folder))}
    same = [label_of[images[2 * i]] == label_of[images[2 * i + 1]] for i in range(20)]
    assert same == issame.tolist() and decoded.shape == (40, 112, 112, 3)
    assert bin_from_rec(rec, tmp_path / "c.bin", num_pairs=20, seed=8) == 20


def test_bin_from_pairs_lfw_and_csv(tmp_path):
    import cv2

    rng = np.random.default_rng(1)
    root = tmp_path / "aligned"
    for name in ("Ann_A", "Bob_B"):
        (root / name).mkdir(parents=True)
        for k in (1, 2):
            cv2.imwrite(str(root / name / f"{name}_{k:04d}.jpg"), rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    lfw = tmp_path / "pairs.txt"
    lfw.write_text("1 2\nAnn_A 1 2\nAnn_A 1 Bob_B 2\n")
    assert read_pairs(lfw) == [
        ("Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", True),
        ("Ann_A/Ann_A_0001.jpg", "Bob_B/Bob_B_0002.jpg", False),
    ]
    assert bin_from_pairs(lfw, root, tmp_path / "lfw.bin") == 2
    images, issame = load_bin(tmp_path / "lfw.bin")
    assert issame.tolist() == [True, False]
    assert images[3] == (root / "Bob_B" / "Bob_B_0002.jpg").read_bytes()  # stored verbatim
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        "path_a,path_b,same\nAnn_A/Ann_A_0001.jpg,Ann_A/Ann_A_0002.jpg,1\nAnn_A/Ann_A_0002.jpg,Bob_B/Bob_B_0001.jpg,0\n"
    )
    assert bin_from_pairs(csv_file, root, tmp_path / "csv.bin") == 2
    assert load_bin(tmp_path / "csv.bin")[1].tolist() == [True, False]
    cv2.imwrite(str(root / "Bob_B" / "Bob_B_0003.jpg"), np.zeros((100, 90, 3), np.uint8))
    lfw.write_text("Bob_B 1 3\n")
    with pytest.raises(BinFileError, match=r"Bob_B_0003\.jpg: expected an aligned 112x112"):
        bin_from_pairs(lfw, root, tmp_path / "bad.bin")
    lfw.write_text("Bob_B 1 9\n")
    with pytest.raises(FileNotFoundError, match="Bob_B_0009"):
        bin_from_pairs(lfw, root, tmp_path / "bad.bin")
