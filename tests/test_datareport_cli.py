"""scoremix report-dataset end to end on the toy data, a planted evaluation leak, and the leak-free set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

C_SYN, PER = 4, 6
CLEAN, EVAL_LEAK = (0, 1, 3), 2  # new labels


def _write_manifest(toy: Path, out: Path) -> Path:
    """A generation folder in the contract's layout, written by hand: new toy identities 0, 1, 3 nobody has seen,
    and identity 2 made of one toy_lfw image's neighbours (JPEG re-encodes and +-1 brightness)."""
    import cv2

    from scoremix_plugin.io_utils import sha256_file, write_json_atomic
    from scoremix_plugin.recordio import FaceRecFolder, FaceRecWriter
    from scoremix_plugin.synthesis.select import Selection, write_pairs
    from scoremix_plugin.toydata import NORMAL, make_identities, render_face
    from scoremix_plugin.verification.binfile import load_bin_images

    real = FaceRecFolder(toy)
    c_real = real.num_classes
    ev, _ = load_bin_images(toy / "toy_lfw.bin")
    fresh = make_identities(C_SYN, seed=99, group=5)
    shards = []
    for s, ids in enumerate([(0, 1), (2, 3)]):
        name = f"shard-{s:05d}"
        with FaceRecWriter(out / name, num_classes=c_real + C_SYN) as w:
            for n in ids:
                for j in range(PER):
                    if n == EVAL_LEAK:
                        img = np.clip(ev[7].astype(int) + (j % 3) - 1, 0, 255).astype(np.uint8)
                        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95 - 3 * j])
                        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
                    else:
                        img = render_face(fresh[n], np.random.default_rng([99, n, j]), NORMAL, 112)
                    w.write(np.ascontiguousarray(img), c_real + n)
        shards.append(
            {
                "path": name,
                "labels": [c_real + ids[0], c_real + ids[-1] + 1],
                "images": PER * len(ids),
                "rec_sha256": sha256_file(out / name / "train.rec"),
                "idx_sha256": sha256_file(out / name / "train.idx"),
            }
        )
    classes = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    write_pairs(
        out / "pairs.csv",
        Selection(classes, np.full((C_SYN, 2), 0.5), np.ones(C_SYN)),
        {"strategy": "far", "space": "embedding"},
    )
    (out / "gen.pt").write_bytes(b"stand-in: the report never loads the generator")
    write_json_atomic(
        out / "manifest.json",
        {
            "format": "scoremix-shards/1",
            "real": {"num_classes": c_real, "num_image": len(real), "rec": str(toy)},
            "num_classes": c_real + C_SYN,
            "num_synthetic_classes": C_SYN,
            "num_synthetic_images": C_SYN * PER,
            "generator": {"checkpoint": "gen.pt", "sha256": sha256_file(out / "gen.pt"), "step": 40},
            "selection": {
                "file": "pairs.csv",
                "sha256": sha256_file(out / "pairs.csv"),
                "strategy": "far",
                "space": "embedding",
            },
            "sampler": {"solver": "heun", "steps": 8, "guidance": "none", "guidance_scale": 1.0, "seed": 0},
            "planned_shards": 2,
            "complete": True,
            "shards": shards,
        },
    )
    return out / "manifest.json"


@pytest.fixture(scope="module")
def setup(toy_data, tmp_path_factory):
    import torch

    from scoremix_plugin.backbones import get_backbone

    d = tmp_path_factory.mktemp("dsr")
    torch.manual_seed(0)
    torch.save(get_backbone("r10_tiny", num_features=32).state_dict(), d / "model.pt")
    (d / "gen").mkdir()
    return {"dir": d, "manifest": _write_manifest(toy_data, d / "gen"), "model": d / "model.pt", "toy": toy_data}


pytestmark = pytest.mark.usefixtures("one_thread")
from test_synthesis_generate import syn_inputs  # noqa: E402, F401 - its micro generator fixture, for generate


def test_report_dataset_finds_the_planted_evaluation_leak(setup, monkeypatch):
    from scoremix_plugin import cli

    out = setup["dir"] / "rep"
    args = [
        "report-dataset",
        "--data",
        str(setup["manifest"]),
        "--model",
        str(setup["model"]),
        "--network",
        "r10_tiny",
        "--targets",
        "toy_lfw,toy_cfp_fp",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == "scoremix-dataset-report/1" and rep["threshold_from"] == "real"
    c_real = rep["real"]["identities"]
    assert rep["data"]["identities"] == C_SYN and rep["data"]["images"] == C_SYN * PER
    st = rep["data"]["stats"]
    assert st["genuine_pairs"] == C_SYN * PER * (PER - 1) // 2 and st["impostor_total"] == st["impostor_pairs"]
    assert [f["fmr"] for f in st["fnmr_at_fmr"]] == [1e-2, 1e-3, 1e-4]
    # 96 real images: fewer impostor pairs than 1/FAR, so the threshold says so
    assert rep["threshold"]["too_few_pairs"] and rep["threshold"]["impostor_pairs"] == 96 * 95 // 2 - 12 * 28
    ev = [lk for lk in rep["leaks"] if lk["kind"] == "evaluation"]
    assert [lk["label"] for lk in ev] == [c_real + EVAL_LEAK] and ev[0]["match"] == "toy_lfw:7"
    assert ev[0]["cosine"] > rep["threshold"]["cosine"]
    assert not any(lk["label"] in [c_real + n for n in CLEAN] for lk in rep["leaks"])  # no false leak
    assert rep["leak_counts"]["real_evaluation"] == 0  # toy .bin people are held out of the training set
    assert rep["leak_checks"]["evaluation"]["comparisons"] == C_SYN * 240
    rows = {r["label"]: r for r in rep["identities"]}
    assert rows[c_real + 3]["sources"] == [6, 7] and len(rows[c_real + 3]["source_cos"]) == 2
    assert rep["gate"] is not None and isinstance(rep["gate"]["passed"], bool)
    for png in ("scores.png", "consistency.png", "worst_identities.png", "sources.png"):
        assert (out / png).stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "toy_lfw:7" in md and "Quality gate" in md

    # A rerun embeds nothing: every image is in the content-hash cache.
    calls = []
    import scoremix_plugin.verification.evaluate as ev_mod

    orig = ev_mod.embed_images
    monkeypatch.setattr(ev_mod, "embed_images", lambda *a, **k: calls.append(1) or orig(*a, **k))
    assert cli.main(args) == 0 and calls == []
    again = json.loads((out / "report.json").read_text())
    assert again["leaks"] == rep["leaks"] and again["data"] == rep["data"]


def test_drop_leaks_writes_a_contiguous_leak_free_set(setup):
    from scoremix_plugin.datareport.filter import drop_identities
    from scoremix_plugin.datareport.report import report_dataset
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.synthesis.manifest import verify_manifest
    from scoremix_plugin.synthesis.select import read_pairs

    gen = setup["manifest"].parent
    rep = report_dataset(
        setup["manifest"],
        setup["model"],
        setup["dir"] / "rep2",
        network="r10_tiny",
        bins={"toy_lfw": setup["toy"] / "toy_lfw.bin"},
        progress=False,
    )
    reasons = rep.leak_reasons()
    c_real = rep.real.identities
    assert list(reasons) == [c_real + EVAL_LEAK] and "evaluation leak: toy_lfw:7" in reasons[c_real + EVAL_LEAK][0]
    m = drop_identities(setup["manifest"], reasons, gen / "leak-free", progress=False)
    v = verify_manifest(gen / "leak-free" / "manifest.json")  # checksums, contiguous labels, totals
    assert v.num_synthetic_classes == 3 and v.num_classes == c_real + 3 and m.extra["kept_new_labels"] == [0, 1, 3]
    assert m.extra["dropped"] == [
        {"label": c_real + 2, "new_label": 2, "classes": [4, 5], "reasons": reasons[c_real + 2]}
    ]
    assert read_pairs(gen / "leak-free" / "pairs.csv").classes.tolist() == [[0, 1], [2, 3], [6, 7]]
    assert v.real_rec.resolve() == Path(setup["toy"]).resolve()
    assert (gen / "leak-free" / v.to_json()["real"]["rec"]).resolve() == Path(setup["toy"]).resolve()
    old = FaceRecFolder(gen / "shard-00001")
    new = FaceRecFolder(gen / "leak-free" / "shard-00001")
    assert new.labels.tolist() == [c_real + 2] * PER  # old identity 3 renumbered to 2
    assert [new.jpeg(i) for i in range(PER)] == [old.jpeg(i) for i in range(PER, 2 * PER)]  # bytes copied
    # the leak-free set reports no leak, from cached embeddings
    clean = report_dataset(
        gen / "leak-free",
        setup["model"],
        setup["dir"] / "rep3",
        network="r10_tiny",
        bins={"toy_lfw": setup["toy"] / "toy_lfw.bin"},
        cache_dir=setup["dir"] / "rep2" / "cache",
        progress=False,
    )
    assert clean.leak_counts["evaluation"] == 0 and clean.data.identities == 3


def test_bad_inputs_name_the_file(setup, tmp_path):
    from scoremix_plugin.datareport.report import ReportError, report_dataset, resolve_bins

    with pytest.raises(ReportError, match="toy_agedb.*not found"):
        resolve_bins(["toy_agedb"], None, setup["toy"])
    with pytest.raises(ReportError, match="--bins"):
        resolve_bins(["lfw"], None, None)
    assert resolve_bins(["toy_lfw"], setup["toy"], None) == {"toy_lfw": setup["toy"] / "toy_lfw.bin"}
    assert sorted(resolve_bins(None, setup["toy"], None)) == ["toy_cfp_fp", "toy_lfw"]
    bad = tmp_path / "gen"
    import shutil

    shutil.copytree(setup["manifest"].parent, bad, ignore=shutil.ignore_patterns("leak-free"))
    (bad / "pairs.csv").unlink()
    with pytest.raises(ReportError, match="selection file"):
        report_dataset(bad, setup["model"], tmp_path / "r", network="r10_tiny", bins={}, progress=False)


def test_generate_drop_leaks_prints_the_verdict(syn_inputs, tmp_path, capsys):  # noqa: F811 - the fixture
    """``scoremix generate --embedder ... --drop-leaks`` on a finished run (the micro generator of
    test_synthesis_generate): report, gate verdict, leak-free copy with every dropped identity's reasons."""
    import shutil

    import torch
    from test_synthesis_generate import NUM_IDS, _args, _generate_here

    from scoremix_plugin.backbones import get_backbone
    from scoremix_plugin.cli import main
    from scoremix_plugin.synthesis.manifest import verify_manifest

    inp = syn_inputs
    out = tmp_path / "out"
    _generate_here(inp, out)
    assert main(_args(inp, tmp_path / "never", "--drop-leaks")) == 2  # the CLI's boundary: a user error
    assert "scoremix generate: error: --drop-leaks needs --embedder" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()  # refused before anything was made
    torch.manual_seed(0)
    torch.save(get_backbone("r10_tiny", num_features=32).state_dict(), tmp_path / "model.pt")
    # A planted training leak at a lenient FAR: whatever the untrained recogniser says, the rules decide.
    assert (
        main(
            _args(
                inp,
                out,
                "--embedder",
                str(tmp_path / "model.pt"),
                "--network",
                "r10_tiny",
                "--drop-leaks",
                "--targets",
                "toy_lfw",
                "--far",
                "0.2",
            )
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "quality gate" in printed and "leak-free/manifest.json" in printed
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["far"] == 0.2 and [e["target"] for e in rep["evaluation"]] == ["toy_lfw"]
    m = verify_manifest(out / "leak-free")
    leaking = sorted({lk["label"] for lk in rep["leaks"] if lk["kind"] != "real_evaluation"})
    assert [d["label"] for d in m.extra["dropped"]] == leaking and 0 < len(leaking) < NUM_IDS, rep["leaks"]
    assert all(d["reasons"] for d in m.extra["dropped"])
    assert m.num_synthetic_classes == NUM_IDS - len(leaking)
    shutil.rmtree(out)
