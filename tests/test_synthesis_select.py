"""Selection (far / near / random pairs and K-tuples) and alignment metrics."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from scoremix_plugin.centres import normalise_rows, save_centres
from scoremix_plugin.synthesis.align import alignment, linear_cka, mutual_knn, rbf_cka
from scoremix_plugin.synthesis.select import SelectionError, read_pairs, select, select_pairs_bruteforce


def _random_centres(c, d, seed):
    return normalise_rows(np.random.default_rng(seed).normal(size=(c, d)))


def _as_set(pairs):
    return [tuple(sorted(p)) for p in np.asarray(pairs).tolist()]


def test_known_answer_far_near():
    # Three antipodal couples on the axes of R^3 plus a slightly tilted copy: the farthest pairs are the
    # antipodes (distance 2), the nearest are each axis with its tilted twin.
    e = np.eye(3, dtype=np.float32)
    tilt = normalise_rows(e + 0.05)
    x = np.concatenate([e, -e, tilt])  # rows 0-2: +axes, 3-5: -axes, 6-8: tilted +axes
    far, dist = select(x, 3, "far", max_uses=1, chunk_size=2, margin=1)
    assert _as_set(far) == [(0, 3), (1, 4), (2, 5)]  # distance exactly 2, ties broken by (a, b)
    np.testing.assert_allclose(dist, 2.0)
    near, _ = select(x, 3, "near", max_uses=1, chunk_size=4, margin=1)
    assert sorted(_as_set(near)) == [(0, 6), (1, 7), (2, 8)]


@pytest.mark.parametrize("cap", [1, 2])
@pytest.mark.parametrize("strategy", ["far", "near"])
def test_chunked_equals_bruteforce(cap, strategy):
    for c, d, seed in [(97, 8, 0), (160, 3, 1)]:  # d = 3: many near-ties, lists run out often
        x = _random_centres(c, d, seed)
        for n in (7, c // 3, c * cap // 2 - 4):
            ref = select_pairs_bruteforce(x, n, strategy, cap)
            for chunk in (5, 64, 512):
                got, dist = select(x, n, strategy, max_uses=cap, chunk_size=chunk, margin=1)
                assert _as_set(got) == _as_set(ref), (c, n, chunk)
                # cap and no-repeat
                assert np.bincount(got.reshape(-1), minlength=c).max() <= cap
                assert len(set(_as_set(got))) == n
                # ranked order: far = non-increasing distance, near = non-decreasing
                step = np.diff(dist)
                assert (step <= 1e-12).all() if strategy == "far" else (step >= -1e-12).all()


def test_random_cap_no_repeat_seeded():
    x = _random_centres(40, 4, 3)
    a, _ = select(x, 40, "random", max_uses=2, seed=5)
    b, _ = select(x, 40, "random", max_uses=2, seed=5)
    c, _ = select(x, 40, "random", max_uses=2, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(a.reshape(-1), minlength=40).max() <= 2
    assert len(set(_as_set(a))) == 40  # 40 = 40 * 2 / 2: every class used exactly twice


def test_impossible_errors():
    x = _random_centres(10, 4, 0)
    with pytest.raises(SelectionError, match="at most 5 pairs"):
        select(x, 6, "far", max_uses=1)
    with pytest.raises(SelectionError, match="need 12 class uses"):
        select(x, 4, "far", max_uses=1, k=3)


def test_triplets_and_pairs_file(tmp_path):
    from scoremix_plugin.synthesis.select import run_selection

    x = _random_centres(30, 6, 2)
    labels = np.arange(100, 130)
    save_centres(tmp_path / "c.npz", labels, x, space="head")
    sel = run_selection(tmp_path / "c.npz", tmp_path / "p.csv", strategy="far", num_identities=6, k=3, progress=False)
    assert sel.classes.shape == (6, 3) and sel.classes.min() >= 100
    assert np.bincount(sel.classes.reshape(-1) - 100, minlength=30).max() == 1
    with open(tmp_path / "p.csv") as f:
        assert next(csv.reader(f)) == [
            "new_label",
            "class_a",
            "class_b",
            "class_c",
            "weight_a",
            "weight_b",
            "weight_c",
            "distance",
        ]
    back = read_pairs(tmp_path / "p.csv")
    assert np.array_equal(back.classes, sel.classes)
    np.testing.assert_allclose(back.weights.sum(1), 1.0)
    # the third class is the eligible one farthest on average from the seed pair
    cx = x[sel.classes[0] - 100]
    seed_mean = cx[:2].mean(0)
    used = set(sel.classes.reshape(-1).tolist()) - {int(sel.classes[0, 2])}
    free = [i for i in range(30) if i + 100 not in used]
    assert sel.classes[0, 2] - 100 == free[int(np.argmin(x[free] @ seed_mean))]

    bad = tmp_path / "bad.csv"
    bad.write_text("new_label,class_a,class_b,weight_a,weight_b,distance\n0,1,2,0.7,0.7,0.5\n")
    with pytest.raises(ValueError, match="bad.csv:2: weights"):
        read_pairs(bad)
    bad.write_text("label,a,b\n0,1,2\n")
    with pytest.raises(ValueError, match="bad header"):
        read_pairs(bad)


def test_select_cli(tmp_path):
    from scoremix_plugin.cli import main

    save_centres(tmp_path / "c.npz", np.arange(20), _random_centres(20, 5, 0), space="embedding")
    assert (
        main(
            [
                "select",
                "--centres",
                str(tmp_path / "c.npz"),
                "--strategy",
                "near",
                "--num-identities",
                "4",
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    assert len(read_pairs(tmp_path / "p.csv")) == 4
    assert (
        main(
            ["select", "--centres", str(tmp_path / "c.npz"), "--num-identities", "11", "--out", str(tmp_path / "q.csv")]
        )
        == 2
    )
    assert not (tmp_path / "q.csv").exists()


def test_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    assert rbf_cka(x, x @ q) == pytest.approx(1.0)  # distances are unchanged by a rotation
    noise = rng.normal(size=(300, 20))
    assert linear_cka(x, noise) < 0.12
    assert rbf_cka(x, noise) < 0.12
    assert mutual_knn(x, x @ q, k=5) == pytest.approx(1.0)
    # the shuffled baseline relabels neighbour lists instead of searching again: same number as searching
    from scoremix_plugin.synthesis.align import _overlap, knn_indices

    y = x + 0.5 * rng.normal(size=x.shape)
    p = rng.permutation(300)
    inv = np.empty_like(p)
    inv[p] = np.arange(300)
    assert _overlap(knn_indices(x, 5), inv[knn_indices(y, 5)[p]]) == pytest.approx(mutual_knn(x, y[p], k=5))
    res = alignment(x, x @ q, k=5, permutations=2)
    assert res["linear_cka"] == pytest.approx(1.0) and res["linear_cka_shuffled"] < 0.12
    assert res["mutual_knn_shuffled"] < 0.2


def test_align_cli(tmp_path):
    from scoremix_plugin.cli import main

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    save_centres(tmp_path / "a.npz", np.arange(50), x, space="condition")
    # b: the same classes (plus extra labels) in another order, rotated
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    order = rng.permutation(50)
    lb = np.concatenate([order, np.arange(50, 60)])
    xb = np.concatenate([(x @ q)[order], rng.normal(size=(10, 8))])
    save_centres(tmp_path / "b.npz", lb, xb, space="embedding")
    assert (
        main(
            [
                "align",
                "--a",
                str(tmp_path / "a.npz"),
                "--b",
                str(tmp_path / "b.npz"),
                "--out",
                str(tmp_path / "al"),
                "--json",
                str(tmp_path / "al.json"),
            ]
        )
        == 0
    )
    import json

    res = json.loads((tmp_path / "al.json").read_text())
    assert res["num_matched"] == 50
    # centres are normalised rows: a rotation of unit rows stays a rotation
    assert res["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "al" / "alignment.png").stat().st_size > 1000


def test_mixing_weights_are_numbers_checked_once(tmp_path):
    from scoremix_plugin.synthesis.select import convex_weights, parse_weights, run_selection

    save_centres(tmp_path / "c.npz", np.arange(8), _random_centres(8, 4, 0), space="embedding")
    sel = run_selection(
        tmp_path / "c.npz",
        tmp_path / "p.csv",
        strategy="far",
        num_identities=2,
        weights=np.array([0.25, 0.75]),
        progress=False,
    )
    assert np.array_equal(read_pairs(tmp_path / "p.csv").weights, np.tile([0.25, 0.75], (2, 1)))
    assert np.array_equal(sel.weights, np.tile([0.25, 0.75], (2, 1)))
    assert np.array_equal(parse_weights("0.25,0.75", 2), convex_weights([0.25, 0.75], 2))
    with pytest.raises(TypeError, match="not text"):
        run_selection(tmp_path / "c.npz", tmp_path / "q.csv", num_identities=2, weights="0.5,0.5", progress=False)
    with pytest.raises(ValueError, match="summing to 1"):
        convex_weights([0.5, 0.6], 2)
    with pytest.raises(ValueError, match="--weights 'a,b'"):
        parse_weights("a,b", 2)
