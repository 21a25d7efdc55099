"""The recogniser trainer on the toy data: it learns, is deterministic, resumes exactly, runs on 2 gloo
processes under torchrun; then ONNX export (onnxruntime + insightface) and class centres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scoremix_plugin import cli
from scoremix_plugin.config import load_recogniser_config
from scoremix_plugin.recognition.train import polynomial_warmup_factor, train

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 96 // 16  # toy_data: 12 identities x 8 images, batch 16


def _write_config(path: Path, rec: Path, output: Path, **over) -> Path:
    cfg = dict(
        rec=str(rec),
        network="r10_tiny",
        embedding_size=64,
        num_classes=12,
        num_image=96,
        num_epoch=4,
        warmup_epoch=1,
        batch_size=16,
        lr=0.1,
        num_workers=0,
        frequent=1,
        verbose=10_000,
        val_targets=["toy_lfw"],
        output=str(output),
        seed=7,
    )
    cfg.update(over)
    body = "".join(f"config.{k} = {v!r}\n" for k, v in cfg.items())
    path.write_text("from easydict import EasyDict as edict\nconfig = edict()\n" + body)
    return path


def _losses(output: Path) -> dict[int, float]:
    out = {}
    for line in (output / "train_log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["event"] == "train":
            out[r["step"]] = r["loss"]
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def run_a(toy_data, tmp_path_factory, one_thread):
    d = tmp_path_factory.mktemp("run_a")
    cfg = load_recogniser_config(_write_config(d / "cfg.py", toy_data, d / "out"))
    summary = train(cfg, progress=False)
    return d / "out", summary


def test_lr_schedule_is_the_hosts_polynomial_warmup():
    assert polynomial_warmup_factor(0, 10, 100) == 0.0
    assert polynomial_warmup_factor(5, 10, 100) == 0.5
    assert polynomial_warmup_factor(10, 10, 100) == 1.0
    assert polynomial_warmup_factor(55, 10, 100) == pytest.approx(0.25)  # (1 - 45/90)^2
    assert polynomial_warmup_factor(100, 10, 100) == 0.0
    assert polynomial_warmup_factor(0, 0, 100) == 1.0


def test_training_lowers_the_loss_and_beats_chance(run_a):
    output, summary = run_a
    assert summary["global_step"] == 4 * STEPS_PER_EPOCH == summary["total_step"]
    losses = _losses(output)
    first, last = np.mean([losses[s] for s in range(1, 7)]), np.mean([losses[s] for s in range(19, 25)])
    assert last < 0.8 * first, (first, last)
    acc = summary["verification"]["toy_lfw"]["accuracy"]  # 60 pairs of held-out identities, chance 0.5
    assert acc > 0.6, acc
    sd = torch.load(output / "model.pt", weights_only=True)
    assert "features.running_mean" in sd and "fc.weight" in sd


def test_same_seed_same_curve_and_exact_resume(run_a, toy_data, tmp_path):
    output_a, _ = run_a
    losses_a = _losses(output_a)
    cfg_path = _write_config(tmp_path / "cfg.py", toy_data, tmp_path / "out", max_steps=9)
    train(load_recogniser_config(cfg_path), progress=False)  # stops mid-epoch 2
    part1 = _losses(tmp_path / "out")
    assert part1 == {s: losses_a[s] for s in range(1, 10)}  # same seed: the same curve, bit for bit
    ck = torch.load(tmp_path / "out" / "checkpoint_rank0.pt", weights_only=True)
    assert (ck["epoch"], ck["global_step"], ck["step_in_epoch"]) == (1, 9, 3)
    cfg = load_recogniser_config(_write_config(tmp_path / "cfg2.py", toy_data, tmp_path / "out", resume=True))
    train(cfg, progress=False)
    resumed = _losses(tmp_path / "out")
    assert resumed == losses_a  # steps 10.. after the resume are exactly the uninterrupted run's
    a = torch.load(output_a / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_verification_file_is_an_error(toy_data, tmp_path):
    cfg = load_recogniser_config(_write_config(tmp_path / "c.py", toy_data, tmp_path / "o", val_targets=["lfw"]))
    with pytest.raises(FileNotFoundError, match="lfw.bin"):
        train(cfg, progress=False)
    # The same call shape as train_generator: a config file, keyword overrides win.
    with pytest.raises(FileNotFoundError, match="agedb_30.bin"):
        train(tmp_path / "c.py", progress=False, val_targets=["agedb_30"])


def test_adamw_cosface_gradient_accumulation(toy_data, tmp_path):
    cfg = load_recogniser_config(
        _write_config(
            tmp_path / "c.py",
            toy_data,
            tmp_path / "o",
            optimizer="adamw",
            lr=1e-3,
            gradient_acc=2,
            margin_list=(1.0, 0.0, 0.4),
            sample_rate=0.5,
            max_steps=4,
            val_targets=[],
        )
    )
    with pytest.warns(UserWarning, match="sample_rate"):
        summary = train(cfg, progress=False)
    assert summary["global_step"] == 4
    log = [json.loads(x) for x in (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in log if r["event"] == "train"]
    warmup = 96 // 16  # warmup_epoch 1
    assert lrs == pytest.approx([1e-3 * s / warmup for s in range(1, 5)])


def test_resume_from_host_checkpoint_format(toy_data, tmp_path):
    cfg = load_recogniser_config(
        _write_config(tmp_path / "c.py", toy_data, tmp_path / "o", num_epoch=1, val_targets=[], save_all_states=True)
    )
    train(cfg, progress=False)
    host = torch.load(tmp_path / "o" / "checkpoint_gpu_0.pt", weights_only=True)
    assert set(host) == {
        "epoch",
        "global_step",
        "state_dict_backbone",
        "state_dict_softmax_fc",
        "state_optimizer",
        "state_lr_scheduler",
    }
    assert (host["epoch"], host["global_step"], host["state_dict_softmax_fc"]["weight"].shape) == (1, 6, (12, 64))
    (tmp_path / "o" / "checkpoint_rank0.pt").unlink()  # only the host's file is left
    cfg = load_recogniser_config(
        _write_config(tmp_path / "c2.py", toy_data, tmp_path / "o", num_epoch=2, val_targets=[], resume=True)
    )
    assert train(cfg, progress=False)["global_step"] == 12


def test_trains_on_real_plus_synthetic_through_the_scoremix_dataset(toy_data, tmp_path):
    from test_integration_helpers import write_shards  # real shards + manifest

    manifest = write_shards(
        tmp_path / "syn", toy_data, num_synthetic_classes=2, images_per_class=8, classes_per_shard=1
    )
    cfg = load_recogniser_config(
        _write_config(
            tmp_path / "c.py",
            toy_data,
            tmp_path / "o",
            num_classes=14,
            num_image=112,
            num_epoch=1,
            val_targets=[],
            dataset="scoremix",
            scoremix={"manifest": str(manifest)},
            image_degrade=32,
        )
    )
    summary = train(cfg, progress=False)
    assert summary["global_step"] == 112 // 16
    head = torch.load(tmp_path / "o" / "checkpoint_rank0.pt", weights_only=True)["head"]["weight"]
    assert head.shape == (14, 64)


def test_torchrun_two_gloo_processes_and_head_centres(toy_data, tmp_path):
    cfg_path = _write_config(
        tmp_path / "cfg.py", toy_data, tmp_path / "out", num_epoch=1, batch_size=8, val_targets=[], save_all_states=True
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "scoremix_plugin",
        "train",
        str(cfg_path),
        "--json",
        str(tmp_path / "s.json"),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps_per_epoch"] == 96 // (8 * 2) == summary["global_step"]
    out = tmp_path / "out"
    slices = [torch.load(out / f"checkpoint_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(c["class_start"], c["head"]["weight"].shape[0]) for c in slices] == [(0, 6), (6, 6)]
    assert cli.main(["embed", "--checkpoint", str(out / "checkpoint_rank*.pt"), "--out", str(tmp_path / "h.npz")]) == 0
    assert (
        cli.main(
            [
                "embed",
                "--checkpoint",
                str(out / "checkpoint_gpu_1.pt"),
                str(out / "checkpoint_gpu_0.pt"),
                "--out",
                str(tmp_path / "h2.npz"),
            ]
        )
        == 0
    )
    from scoremix_plugin.centres import load_centres

    ours, host = load_centres(tmp_path / "h.npz"), load_centres(tmp_path / "h2.npz")
    assert ours.space == "head" and ours.centres.shape == (12, 64)
    w = torch.cat([c["head"]["weight"] for c in slices]).numpy()
    np.testing.assert_allclose(ours.centres, w / np.linalg.norm(w, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(ours.centres, host.centres)


def _export_onnx(run_a, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the [onnx] extra (onnx, onnxruntime)")
    pytest.importorskip("onnxruntime", reason="ONNX export needs the [onnx] extra (onnx, onnxruntime)")
    output, _ = run_a
    onnx_path = tmp_path / "m.onnx"
    rc = cli.main(
        [
            "export",
            "--model",
            str(output / "model.pt"),
            "--network",
            "r10_tiny",
            "--out",
            str(onnx_path),
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    assert rc == 0
    check = json.loads((tmp_path / "e.json").read_text())["check"]
    assert check["min_cosine"] > 0.9999 and check["output_dim"] == 64
    return output, onnx_path


def test_onnx_export_loads_in_insightface(run_a, toy_data, tmp_path):
    pytest.importorskip("insightface", reason="the [insightface] extra is not installed")
    output, onnx_path = _export_onnx(run_a, tmp_path)
    # insightface's model zoo must see a recogniser, and its get_feat (BGR uint8 in) must match torch.
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    from scoremix_plugin.recognition.export import load_backbone
    from scoremix_plugin.recordio import FaceRecFolder

    zoo = get_model(str(onnx_path))
    assert isinstance(zoo, ArcFaceONNX)
    folder = FaceRecFolder(toy_data)
    rgb = np.stack([folder.image(i) for i in (0, 9, 50)])
    feats = zoo.get_feat([img[:, :, ::-1] for img in rgb])  # insightface takes BGR
    net = load_backbone(output / "model.pt", "r10_tiny")
    with torch.no_grad():
        ref = net(torch.from_numpy(((rgb.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2))).numpy()
    cos = np.sum(feats * ref, 1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999, cos


def test_onnx_export_onnxruntime_and_centres(run_a, toy_data, tmp_path):
    output, onnx_path = _export_onnx(run_a, tmp_path)
    # Embedding-space centres through onnxruntime and through torch agree.
    assert (
        cli.main(
            [
                "embed",
                "--model",
                str(onnx_path),
                "--data",
                str(toy_data),
                "--out",
                str(tmp_path / "c.npz"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "embed",
                "--model",
                str(output / "model.pt"),
                "--network",
                "r10_tiny",
                "--data",
                str(toy_data),
                "--out",
                str(tmp_path / "t.npz"),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    from scoremix_plugin.centres import load_centres

    c, t = load_centres(tmp_path / "c.npz"), load_centres(tmp_path / "t.npz")
    assert c.space == "embedding" and c.labels.tolist() == list(range(12)) and c.counts.tolist() == [8] * 12
    assert np.min(np.sum(c.centres * t.centres, 1)) > 0.9999
