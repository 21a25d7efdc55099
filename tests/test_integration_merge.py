"""`scoremix merge`: one InsightFace folder with both sources' exact JPEG bytes, final labels, a host config."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from test_integration_helpers import edit_manifest, write_shards

from scoremix_plugin.cli import main as scoremix_main
from scoremix_plugin.config import load_recogniser_config, read_config_file
from scoremix_plugin.recordio import FaceRecFolder
from scoremix_plugin.synthesis.manifest import ManifestError

C_REAL, N_REAL, C_SYN, PER_CLASS = 12, 96, 5, 4


@pytest.fixture(scope="module")
def merged(toy_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("merge")
    manifest = write_shards(base / "syn", toy_data, C_SYN, PER_CLASS, classes_per_shard=2)
    root = base / "arcface_torch"
    (root / "configs").mkdir(parents=True)
    out = base / "merged"
    rc = scoremix_main(
        [
            "merge",
            "--real",
            str(toy_data),
            "--synthetic",
            str(manifest),
            "--out",
            str(out),
            "--arcface-root",
            str(root),
            "--name",
            "toy_scoremix",
            "--num-epoch",
            "3",
            "--warmup-epoch",
            "1",
            "--no-progress",
            "--json",
            str(base / "summary.json"),
        ]
    )
    assert rc == 0
    return out, manifest, root, base


def test_payloads_labels_and_layout(merged, toy_data):
    out, manifest, _, _ = merged
    real = FaceRecFolder(toy_data)
    m = FaceRecFolder(out)
    assert m.layout == "insightface" and m.num_classes == C_REAL + C_SYN
    assert len(m) == N_REAL + C_SYN * PER_CLASS
    assert (out / "property").read_text().strip() == f"{C_REAL + C_SYN},112,112"
    # Real images first, byte for byte (no re-encode) with their labels; the toy folder is already label-sorted.
    for i in range(N_REAL):
        assert m.jpeg(i) == real.jpeg(i) and m.label(i) == real.label(i)
    # Then each shard's images, with the shards' FINAL labels (no offset added again).
    raw = json.loads(manifest.read_text())
    i = N_REAL
    for shard in raw["shards"]:
        s = FaceRecFolder(manifest.parent / shard["path"])
        for j in range(len(s)):
            assert m.jpeg(i) == s.jpeg(j) and m.label(i) == s.label(j)
            i += 1
    np.testing.assert_array_equal(np.unique(m.labels), np.arange(C_REAL + C_SYN))
    # Identity records and key 0 as the host reads them.
    ranges = m.identity_ranges
    assert len(ranges) == C_REAL + C_SYN
    assert ranges[C_REAL] == (N_REAL + 1, N_REAL + 1 + PER_CLASS)
    h0, _ = m.read(0)
    assert h0.flag == 2 and h0.label == (
        N_REAL + C_SYN * PER_CLASS + 1,
        N_REAL + C_SYN * PER_CLASS + C_REAL + C_SYN + 1,
    )
    for b in ("toy_lfw.bin", "toy_cfp_fp.bin"):
        assert (out / b).read_bytes() == (toy_data / b).read_bytes()


def test_generated_config_matches(merged):
    out, _, root, base = merged
    text = (out / "toy_scoremix.py").read_text()
    assert (root / "configs" / "toy_scoremix.py").read_text() == text
    cfg = read_config_file(out / "toy_scoremix.py")
    assert cfg["rec"] == str(out) and cfg["num_classes"] == C_REAL + C_SYN
    assert cfg["num_image"] == N_REAL + C_SYN * PER_CLASS
    assert (cfg["num_epoch"], cfg["warmup_epoch"]) == (3, 1)
    assert cfg["val_targets"] == ["toy_cfp_fp", "toy_lfw"]
    # Our trainer reads it too, with no unknown keys.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = load_recogniser_config(out / "toy_scoremix.py")
    assert full.dataset == "rec"
    summary = json.loads((base / "summary.json").read_text())
    assert summary == json.loads((out / "merge.json").read_text()) | {
        "host_config": str(root / "configs" / "toy_scoremix.py")
    }
    assert not list(out.parent.glob(".merged.tmp-*"))


def test_refuses_bad_inputs(merged, toy_data, tmp_path, capsys):
    out, manifest, _, _ = merged
    assert (
        scoremix_main(
            ["merge", "--real", str(toy_data), "--synthetic", str(manifest), "--out", str(out), "--no-progress"]
        )
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err
    copy = tmp_path / "syn"
    shutil.copytree(manifest.parent, copy)
    edit_manifest(copy / "manifest.json", real={"num_classes": C_REAL, "num_image": N_REAL + 1, "rec": None})
    from scoremix_plugin.integration.merge import merge

    with pytest.raises(ManifestError, match=r"real\.num_image = 97.*holds 96"):
        merge(toy_data, copy / "manifest.json", tmp_path / "m2", progress=False)
    assert not (tmp_path / "m2").exists() and not list(tmp_path.glob(".m2.tmp-*"))


def test_unknown_config_override_is_refused_before_copying(merged, toy_data, tmp_path):
    from scoremix_plugin.integration.merge import merge

    _, manifest, _, _ = merged
    with pytest.raises(ValueError, match="epochs"):
        merge(toy_data, manifest, tmp_path / "m3", config_overrides={"epochs": 3}, progress=False)
    assert not list(tmp_path.iterdir())
