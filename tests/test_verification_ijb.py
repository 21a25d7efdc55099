"""IJB-B / IJB-C: the host's numbers on its golden set, host-exact crops, the model path, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ijb_data import GOLDEN, N_FILES, small_ijb_root

from scoremix_plugin import cli
from scoremix_plugin.verification.face_align import align_face
from scoremix_plugin.verification.ijb import (
    IJB_FARS,
    MODES,
    check_modes,
    evaluate_ijb,
    evaluate_ijb_features,
    evaluate_modes,
    image_features,
    roc_points,
)
from scoremix_plugin.verification.ijb_meta import IJBError, load_features, read_ijb_meta


@pytest.fixture(scope="module")
def golden_meta():
    return read_ijb_meta(GOLDEN, "IJBC")


@pytest.fixture(scope="module")
def golden_result(golden_meta):
    feats = load_features(GOLDEN / "img_feats.npy", golden_meta)
    return evaluate_ijb_features(golden_meta, feats, "all", keep_scores=True)


# The host's numbers.


def test_meta_parsed_like_the_host(golden_meta):
    assert golden_meta.num_images == 2072 and np.unique(golden_meta.templates).size == 408
    assert golden_meta.pair_templates.shape == (60925, 2) and int(golden_meta.labels.sum()) == 925
    assert np.array_equal(golden_meta.faceness, np.load(GOLDEN / "faceness.npy"))


@pytest.mark.parametrize("mode", MODES)
def test_all_modes_match_the_host(golden_result, mode):
    expected = json.loads((GOLDEN / "expected.json").read_text())
    assert expected["x_labels"] == list(IJB_FARS)
    r = golden_result.modes[mode]
    np.testing.assert_allclose(r.tar, expected["modes"][mode]["tar"], rtol=0, atol=1e-9)
    assert abs(r.auc - expected["modes"][mode]["auc"]) <= 1e-9
    with np.load(GOLDEN / "expected_scores_first2000.npz") as z:
        np.testing.assert_allclose(r.scores[:2000], z[mode], rtol=0, atol=1e-12)
    assert golden_result.num_pairs == expected["num_pairs"] and golden_result.num_genuine == expected["num_genuine"]


def test_strict_tar_flags_targets_beyond_the_impostors(golden_result):
    r = golden_result.modes["F1N1D1"]
    # 60,000 impostors: FAR 1e-6 and 1e-5 cannot be resolved; the host's nearest point at 1e-5 is one false
    # accept (FAR 1.7e-5), so the strict TAR (zero false accepts) is lower there.
    assert [t.few_negatives for t in r.tar_strict] == [True, True, False, False, False, False]
    assert r.tar_strict[1].tar < r.tar[1]
    for _far, t in zip(IJB_FARS, r.tar_strict):  # the strict TAR never passes more impostors than FAR allows
        assert np.all(np.isfinite([t.tar])) and 0 <= t.tar <= 1


def test_crops_and_matrices_match_the_host(golden_meta):
    import cv2

    with np.load(GOLDEN / "aligned.npz") as z:
        names, crops, matrices = list(z["names"]), z["crops"], z["matrices"]
    assert names == golden_meta.image_names[:N_FILES]
    for i, name in enumerate(names):
        crop, matrix = align_face(cv2.imread(str(GOLDEN / "loose_crop" / name)), golden_meta.landmarks[i])
        assert crop.shape == (3, 112, 112) and crop.dtype == np.uint8
        np.testing.assert_allclose(matrix, matrices[i], rtol=0, atol=1e-5)
        assert np.abs(crop.astype(int) - crops[i]).max() <= 1, name


def test_roc_points_drop_collinear_points_and_keep_ties_together():
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    fpr, tpr, thr = roc_points(labels, scores)
    # (fps, tps) per distinct score: 0.9 (0,1), 0.8 (1,2) (the tie moves together), 0.7 (1,3), 0.6 (2,3),
    # 0.5 (3,3), 0.4 (3,4), 0.3 (4,4); 0.6 lies on the straight run 0.7 -> 0.5 and is dropped; (0,0) prepended.
    assert np.allclose(fpr * 4, [0, 0, 1, 1, 3, 3, 4]) and np.allclose(tpr * 4, [0, 1, 2, 3, 3, 4, 4])
    assert np.isinf(thr[0]) and np.allclose(thr[1:], [0.9, 0.8, 0.7, 0.5, 0.4, 0.3])


# The model path: align, embed (image then flip), score.


class _Projection:
    """A fixed random linear embedder (a real computation on the pixels, fast on CPU)."""

    def __init__(self, dim: int = 16):
        self.w = np.random.default_rng(0).standard_normal((3 * 112 * 112, dim)).astype(np.float32) / 200

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1:] == (3, 112, 112) and -1 <= x.min() and x.max() <= 1
        return x.reshape(len(x), -1) @ self.w


def test_model_path_embeds_host_crops_and_flips(tmp_path):
    root = small_ijb_root(tmp_path)
    meta = read_ijb_meta(root, "IJBC")
    emb = _Projection()
    feats = image_features(meta, emb, batch_size=5, progress=False)
    with np.load(GOLDEN / "aligned.npz") as z:
        x = (z["crops"].astype(np.float32) / 255.0 - 0.5) / 0.5
    expected = np.concatenate([emb(x), emb(np.ascontiguousarray(x[..., ::-1]))], axis=1)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    result = evaluate_ijb(root, "ijbc", emb, modes="F1N1D1,F0N0D0", batch_size=7, progress=False)
    direct = evaluate_modes(
        expected, meta.faceness, meta.templates, meta.medias, meta.pair_templates, meta.labels, ("F1N1D1", "F0N0D0")
    )
    assert list(result.modes) == ["F1N1D1", "F0N0D0"]
    for m in result.modes:
        np.testing.assert_allclose(result.modes[m].tar, direct.modes[m].tar, atol=1e-6)


def test_cli_with_a_torch_model_and_with_saved_features(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from scoremix_plugin.backbones import get_backbone

    root = small_ijb_root(tmp_path)
    torch.manual_seed(0)
    torch.save(get_backbone("r10_tiny", num_features=32).state_dict(), tmp_path / "model.pt")
    out_json, saved = tmp_path / "a.json", tmp_path / "feats.npy"
    rc = cli.main(
        [
            "verify-ijb",
            "--root",
            str(root),
            "--target",
            "IJBC",
            "--model",
            str(tmp_path / "model.pt"),
            "--network",
            "r10_tiny",
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--modes",
            "all",
            "--json",
            str(out_json),
            "--save-features",
            str(saved),
            "--out",
            str(tmp_path / "rep"),
            "--no-progress",
        ]
    )
    assert rc == 0
    a = json.loads(out_json.read_text())
    assert a["target"] == "IJBC" and a["far"] == list(IJB_FARS) and list(a["modes"]) == list(MODES)
    assert set(a["modes"]["F1N1D1"]) >= {"tar", "tar_strict", "auc"} and len(a["modes"]["F1N1D1"]["tar"]) == 6
    assert np.load(saved).shape == (N_FILES, 64)
    md = (tmp_path / "rep" / "ijb.md").read_text()
    assert "| Methods | 1e-06 | 1e-05 | 0.0001 | 0.001 | 0.01 | 0.1 |" in md and "| F1N1D1-IJBC |" in md
    assert (tmp_path / "rep" / "ijb_roc.png").stat().st_size > 1000
    # The same numbers again from the saved features.
    rc = cli.main(
        [
            "verify-ijb",
            "--root",
            str(root),
            "--target",
            "IJBC",
            "--features",
            str(saved),
            "--modes",
            "all",
            "--json",
            str(tmp_path / "b.json"),
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "b.json").read_text())["modes"] == a["modes"]
    # Saved features are never replaced silently.
    err = _cli_error(
        capsys,
        "--root",
        str(root),
        "--target",
        "IJBC",
        "--model",
        str(tmp_path / "model.pt"),
        "--network",
        "r10_tiny",
        "--json",
        str(out_json),
        "--save-features",
        str(saved),
    )
    assert "feats.npy already exists" in err


# Bad input: an IJBError naming the file and line (the CLI prints it and exits 2).


def _cli_error(capsys, *argv) -> str:
    capsys.readouterr()  # drop what earlier commands printed
    assert cli.main(["verify-ijb", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scoremix verify-ijb: error: ") and "\n" not in err
    return err


def test_missing_meta_file(tmp_path, capsys):
    root = small_ijb_root(tmp_path)
    (root / "meta" / "ijbc_template_pair_label.txt").unlink()
    err = _cli_error(capsys, "--root", str(root), "--target", "IJBC", "--features", "x.npy", "--json", "o.json")
    assert "ijbc_template_pair_label.txt" in err and "missing" in err
    with pytest.raises(IJBError, match="ijbb_face_tid_mid.txt"):
        read_ijb_meta(root, "IJBB")


def test_pair_with_unknown_template(tmp_path):
    root = small_ijb_root(tmp_path)
    pairs = root / "meta" / "ijbc_template_pair_label.txt"
    lines = pairs.read_text().splitlines()
    lines[4] = "999999 1 0"
    pairs.write_text("\n".join(lines) + "\n")
    with pytest.raises(IJBError, match=r"ijbc_template_pair_label.txt:5: template 999999 .*1 pairs"):
        read_ijb_meta(root, "IJBC")


@pytest.mark.parametrize(
    "line, match",
    [
        ("1 2", r"ijbc_template_pair_label.txt.*(columns|fields)"),
        ("1 2 x", r"ijbc_template_pair_label.txt.*integer"),
        ("1 2 2", r"ijbc_template_pair_label.txt:3: label must be 0 or 1"),
    ],
)
def test_malformed_pair_lines(tmp_path, line, match):
    root = small_ijb_root(tmp_path)
    pairs = root / "meta" / "ijbc_template_pair_label.txt"
    lines = pairs.read_text().splitlines()
    lines[2] = line
    pairs.write_text("\n".join(lines) + "\n")
    with pytest.raises(IJBError, match=match):
        read_ijb_meta(root, "IJBC")


def test_malformed_meta_lines(tmp_path):
    root = small_ijb_root(tmp_path)
    tid = root / "meta" / "ijbc_face_tid_mid.txt"
    good = tid.read_text()
    tid.write_text(good.replace("3.png 2 3", "3.png two 3"))
    with pytest.raises(IJBError, match=r"ijbc_face_tid_mid.txt:4: template and media ids must be integers"):
        read_ijb_meta(root, "IJBC")
    tid.write_text(good.replace("3.png 2 3", "33.png 2 3"))
    with pytest.raises(IJBError, match=r"ijbc_name_5pts_score.txt:4: image '3.png' but .*'33.png'"):
        read_ijb_meta(root, "IJBC")
    tid.write_text(good)
    pts = root / "meta" / "ijbc_name_5pts_score.txt"
    pts.write_text(pts.read_text().replace(" 0.511632\n", "\n"))
    with pytest.raises(IJBError, match=r"ijbc_name_5pts_score.txt:4: expected .* \(12 fields\), got 11"):
        read_ijb_meta(root, "IJBC")


def test_features_with_wrong_rows_odd_width_or_nan(tmp_path, golden_meta, capsys):
    feats = np.load(GOLDEN / "img_feats.npy")
    for name, arr, match in [
        ("rows.npy", feats[:-1], "2071 rows but .*ijbc_name_5pts_score.txt lists 2072"),
        ("odd.npy", feats[:, :-1], "width 255 is not even"),
        ("vec.npy", feats[0], "expected a 2-D array"),
    ]:
        np.save(tmp_path / name, arr)
        with pytest.raises(IJBError, match=match):
            load_features(tmp_path / name, golden_meta)
    bad = feats.copy()
    bad[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    err = _cli_error(
        capsys,
        "--root",
        str(GOLDEN),
        "--target",
        "IJBC",
        "--features",
        str(tmp_path / "nan.npy"),
        "--json",
        str(tmp_path / "o.json"),
    )
    assert "row 7" in err and "ijbc_name_5pts_score.txt:8" in err and "7.png" in err
    assert not (tmp_path / "o.json").exists()


def test_images_that_fail_are_named_and_counted(tmp_path):
    root = small_ijb_root(tmp_path)
    meta = read_ijb_meta(root, "IJBC")
    (root / "loose_crop" / "5.png").unlink()
    (root / "loose_crop" / "9.png").unlink()
    with pytest.raises(IJBError, match=r"2 of 24 images missing .*5.png \(.*ijbc_name_5pts_score.txt:6\).*9.png"):
        image_features(meta, _Projection(), progress=False)
    shutil.copy(GOLDEN / "loose_crop" / "5.png", root / "loose_crop" / "5.png")
    shutil.copy(GOLDEN / "loose_crop" / "9.png", root / "loose_crop" / "9.png")
    (root / "loose_crop" / "11.png").write_bytes(b"not a png")
    meta.landmarks[2] = 0.0  # degenerate landmarks: no transform fits them
    with pytest.raises(
        IJBError,
        match=r"2 of 24 images could not be loaded or aligned: 2.png .*degenerate.*"
        r"11.png .*not a readable image",
    ):
        image_features(meta, _Projection(), batch_size=4, progress=False)


def test_golden_rows_without_files_cannot_be_embedded(golden_meta):
    with pytest.raises(IJBError, match=r"2048 of 2072 images missing .*24.png .*and 2038 more"):
        image_features(golden_meta, _Projection(), progress=False)


def test_modes_and_target_checked(tmp_path):
    assert check_modes("all") == MODES and check_modes("f0n0d0, F1N1D1") == ("F0N0D0", "F1N1D1")
    with pytest.raises(IJBError, match="F2N1D1"):
        check_modes("F2N1D1")
    with pytest.raises(IJBError, match="IJBA"):
        read_ijb_meta(tmp_path, "IJBA")


def test_arrays_path_refuses_a_pair_without_template_features():
    feats = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(IJBError, match=r"pair 1 \(line 2\) names template \[1, 7\] without features"):
        evaluate_modes(
            feats,
            np.ones(3, np.float32),
            np.array([1, 1, 2]),
            np.array([0, 1, 0]),
            np.array([[1, 2], [1, 7]]),
            np.array([1, 0], bool),
        )
