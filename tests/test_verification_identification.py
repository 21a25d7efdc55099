"""Identification: TinyFace and IJB 1:N reproduce their references' golden numbers; chunked search == full matrix;
bad input gives one-line errors naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scoremix_plugin import cli
from scoremix_plugin.errors import InputError
from scoremix_plugin.verification.identification import cmc_counts, open_set_thresholds, search, tpir_at_fpir
from scoremix_plugin.verification.ijb_1n import evaluate_ijb_1n_features
from scoremix_plugin.verification.ijb_meta import IJBError, read_ijb_1n_meta
from scoremix_plugin.verification.report import avg_h, format_table
from scoremix_plugin.verification.tinyface import evaluate_tinyface_features, load_features, read_tinyface

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
TINY = GOLDEN / "tinyface"
IJB1N = GOLDEN / "ijb1n"


def test_tinyface_matches_adaface():
    expected = json.loads((TINY / "expected.json").read_text())
    layout = read_tinyface(TINY / "root")
    result = evaluate_tinyface_features(layout, load_features(TINY / "features.npz", layout), expected["ranks"])
    assert result.num_probes == expected["probes"]
    assert result.num_matches + result.num_distractors == expected["gallery"]
    assert result.num_distractors == expected["distractors"]
    # The reference's shares are float32 means of 0/1: the counts behind them are exact.
    assert result.cmc_count == [int(round(c * expected["probes"])) for c in expected["cmc"]]
    np.testing.assert_allclose([result.cmc[r] for r in expected["ranks"]], expected["cmc"], rtol=0, atol=1e-7)
    assert result.tied_probes == 0


def test_ijb_1n_matches_insightface():
    expected = json.loads((IJB1N / "expected.json").read_text())["galleries"]
    meta, sets = read_ijb_1n_meta(IJB1N, "IJBC")
    result = evaluate_ijb_1n_features(meta, sets, np.load(IJB1N / "img_feats.npy"))
    assert set(result.galleries) == {"G1", "G2", "G1+G2"}
    for name, e in expected.items():
        g = result.galleries[name]
        assert (g.num_probes, g.num_gallery) == (e["num_probes"], e["num_gallery"])
        assert g.rank_count == [e["top1_count"], e["top5_count"], e["top10_count"]]
        assert [t["tpir_count"] for t in g.tpir] == [f["pr_count"] for f in e["far"]]
        np.testing.assert_allclose([t["threshold"] for t in g.tpir], [f["th"] for f in e["far"]], atol=1e-10)
    assert result.mean["rank"][0] == pytest.approx((expected["G1"]["top1"] + expected["G2"]["top1"]) / 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_search_equals_the_full_matrix(dtype):
    rng = np.random.default_rng(1)
    probes, gallery = rng.standard_normal((97, 16)).astype(dtype), rng.standard_normal((403, 16)).astype(dtype)
    p_lab = rng.integers(0, 30, 97)
    g_lab = np.r_[np.arange(30), rng.integers(0, 30, 73), np.full(300, -5)]  # every identity enrolled + distractors
    full = probes @ gallery.T
    mated = p_lab[:, None] == g_lab[None, :]
    best = np.where(mated, full, -np.inf).max(1)
    nonmate = np.where(mated, -np.inf, full)
    # argsort ranks as the references compute them (descending; no ties in random data)
    order = np.argsort(-full, axis=1, kind="stable")
    first_mate = np.argmax(mated[np.arange(97)[:, None], order], axis=1) + 1
    k = int(np.ceil(97 * 0.1))
    for chunk_bytes in (1, 4096, 1 << 30):  # one probe per chunk, several, all at once
        s = search(probes, p_lab, gallery, g_lab, keep_top=k, chunk_bytes=chunk_bytes)
        assert np.array_equal(s.rank, first_mate)
        # BLAS blocks a chunk differently from the whole matrix: float32 scores agree to rounding, not bits
        # (float64 to ~1e-15); every count below is exact all the same.
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(s.best_mate, best, rtol=tol, atol=tol)
        np.testing.assert_allclose(s.best_nonmate, nonmate.max(1), rtol=tol, atol=tol)
        top = np.sort(nonmate[np.isfinite(nonmate)])[::-1][:k]
        np.testing.assert_allclose(s.top_nonmate, top, rtol=tol, atol=tol)
        assert s.num_nonmate == int((~mated).sum())
        assert cmc_counts(s.rank, (1, 5)) == [int((first_mate <= 1).sum()), int((first_mate <= 5).sum())]
        th = s.top_nonmate[int(np.ceil(97 * 0.01)) - 1]
        assert tpir_at_fpir(s, [0.01])[0]["tpir_count"] == int((s.best_mate > th).sum()) == int((best > th).sum())


def test_ties_count_for_the_probe_and_are_reported():
    probes = np.array([[1.0, 0.0]])
    gallery = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = search(probes, [7], gallery, [3, 7, 5])
    assert s.rank.tolist() == [1] and s.tied.tolist() == [1]


def test_open_set_thresholds_follow_adaface():
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    # round(4 * FAR) false alarms: 0 -> the highest + 1e-5; 2 -> the 2nd highest
    assert open_set_thresholds(scores, [0.01, 0.5]) == [pytest.approx(0.9 + 1e-5), 0.7]


def test_avg_h_is_the_mean_of_the_sets_present():
    a = avg_h({"lfw": 0.99, "cfp_fp": 0.9, "agedb_30": 0.93, "other": 0.1})
    assert a["avg_h"] == pytest.approx((0.99 + 0.9 + 0.93) / 3)
    assert a["present"] == ["lfw", "cfp_fp", "agedb_30"] and a["missing"] == ["calfw", "cplfw"]
    assert avg_h({"toy": 0.5}) is None


def test_avg_h_in_verify_summary(tmp_path):
    from scoremix_plugin.verification.protocol import evaluate_embeddings

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 8))
    issame = np.arange(20) % 2 == 0
    r = evaluate_embeddings(emb / np.linalg.norm(emb, axis=1, keepdims=True), issame)
    text = format_table({"lfw": r, "cplfw": r})
    assert "Avg-H: " in text and "lfw, cplfw: 2 of 5; missing cfp_fp, agedb_30, calfw" in text


# Bad input: one line naming the file.


def _tinyface_copy(tmp_path: Path) -> Path:
    root = tmp_path / "tf"
    shutil.copytree(TINY / "root", root)
    return root


def _run(argv, capsys) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_tinyface_cli_writes_report(tmp_path, capsys):
    rc = cli.main(
        [
            "verify-tinyface",
            "--root",
            str(TINY / "root"),
            "--features",
            str(TINY / "features.npz"),
            "--json",
            str(tmp_path / "r.json"),
            "--out",
            str(tmp_path / "rep"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["cmc_count"] == [37, 67, 91] and (tmp_path / "rep" / "tinyface_cmc.png").stat().st_size > 0
    assert "rank-1 (%)" in (tmp_path / "rep" / "tinyface.md").read_text()


@pytest.mark.parametrize("case", ["malformed_mat", "unmated_probe", "empty_distractors", "missing_feature"])
def test_tinyface_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case):
    root = _tinyface_copy(tmp_path)
    testing = root / "tinyface" / "Testing_Set"
    features = TINY / "features.npz"
    if case == "malformed_mat":
        named = testing / "probe_img_ID_pairs.mat"
        named.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50 + b"garbage")
    elif case == "unmated_probe":
        named = testing / "Probe" / "999_1.jpg"
        shutil.copy(testing / "Probe" / "1_1.jpg", named)
        shutil.copy(testing / "Probe" / "1_1.jpg", root / "aligned_pad_0.1_pad_high" / "Probe" / "999_1.jpg")
    elif case == "empty_distractors":
        named = testing / "Gallery_Distractor"
        for f in named.iterdir():
            f.unlink()
    else:
        named = tmp_path / "f.npz"
        with np.load(features) as z:
            np.savez(named, paths=z["paths"][1:], features=z["features"][1:])
        features = named
    rc, err = _run(
        [
            "verify-tinyface",
            "--root",
            str(root),
            "--features",
            str(features),
            "--json",
            str(tmp_path / "r.json"),
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("scoremix verify-tinyface: error: ") and str(named) in err


def test_ijb_1n_cli_and_bad_input(tmp_path, capsys):
    rc = cli.main(
        [
            "verify-ijb",
            "--root",
            str(IJB1N),
            "--target",
            "IJBC",
            "--features",
            str(IJB1N / "img_feats.npy"),
            "--task",
            "identification",
            "--json",
            str(tmp_path / "r.json"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "r.json").read_text())["modes"]["F1N1D1"]["galleries"]["G1+G2"]["rank_count"] == [
        81,
        143,
        162,
    ]
    capsys.readouterr()
    root = tmp_path / "ijb"
    shutil.copytree(IJB1N, root)
    probe = root / "meta" / "ijbc_1N_probe_mixed.csv"
    probe.write_text(probe.read_text() + "99999,4242,x.jpg\n")
    with pytest.raises(IJBError, match="99999"):
        read_ijb_1n_meta(root, "IJBC")
    shutil.copy(IJB1N / "meta" / "ijbc_1N_probe_mixed.csv", probe)
    lines = probe.read_text().splitlines()
    t = lines[1].split(",")[0]  # every row of this probe template moves to a subject without a gallery template
    lines = [f"{t},4242,{ln.split(',')[2]}" if ln.split(",")[0] == t else ln for ln in lines]
    probe.write_text("\n".join(lines) + "\n")
    rc, err = _run(
        [
            "verify-ijb",
            "--root",
            str(root),
            "--target",
            "IJBC",
            "--features",
            str(root / "img_feats.npy"),
            "--task",
            "identification",
            "--json",
            str(tmp_path / "r2.json"),
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2 and len(err.splitlines()) == 1 and str(probe) in err and "4242" in err, err


def test_search_without_a_mate_is_an_input_error():
    with pytest.raises(InputError, match="no mate"):
        search(np.eye(2), [0, 1], np.eye(2), [0, 0])
