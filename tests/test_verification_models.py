"""Verification with real models: a tiny torch net exported to ONNX and run by onnxruntime, via the CLI."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from scoremix_plugin import cli  # noqa: E402
from scoremix_plugin.verification.binfile import load_bin_images  # noqa: E402
from scoremix_plugin.verification.evaluate import (  # noqa: E402
    OnnxEmbedder,
    TorchEmbedder,
    embed_images,
    load_embedder,
    verify_bins,
)


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, stride=4),
        torch.nn.PReLU(8),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 16),
    ).eval()


def _export(net, path, dynamic=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 112, 112),),
            str(path),
            input_names=["data"],
            output_names=["embedding"],
            dynamic_axes={"data": {0: "batch"}, "embedding": {0: "batch"}} if dynamic else None,
            opset_version=17,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    net = _tiny_net()
    return net, _export(net, d / "tiny.onnx"), _export(net, d / "tiny_b1.onnx", dynamic=False)


def test_cli_verify_onnx_on_golden_bin(tmp_path, golden_dir, tiny):
    net, onnx_path, _ = tiny
    out, summary = tmp_path / "report", tmp_path / "summary.json"
    bin_path = golden_dir / "verification" / "toy_py3.bin"
    rc = cli.main(
        [
            "verify",
            "--model",
            str(onnx_path),
            "--bins",
            str(bin_path),
            "--out",
            str(out),
            "--json",
            str(summary),
            "--batch-size",
            "32",
            "--far",
            "1e-3",
            "1e-1",
            "--no-progress",
        ]
    )
    assert rc == 0
    for name in ("verification.json", "verification.md", "roc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads(summary.read_text())["results"]["toy_py3"]
    assert res["num_pairs"] == 60 and len(res["accuracy_per_fold"]) == 10
    assert 0.5 <= res["accuracy_mean"] <= 1.0 and 0 <= res["accuracy_std"] < 0.5
    assert res["xnorm"] > 0 and res["tar_at_far"]["0.001"]["few_negatives"] is True
    assert res["tar_at_far"]["0.1"]["few_negatives"] is False
    md = (out / "verification.md").read_text()
    assert "toy_py3" in md and "roc.png" in md

    # The same net in torch gives the same embeddings and numbers (ONNX runs for real, not a stand-in).
    images, issame = load_bin_images(bin_path)
    e_onnx, n_onnx = embed_images(OnnxEmbedder(onnx_path), images, batch_size=32)
    e_torch, n_torch = embed_images(TorchEmbedder(net, "cpu"), images, batch_size=32)
    np.testing.assert_allclose(e_onnx, e_torch, atol=1e-4)
    assert res["xnorm"] == pytest.approx(float(n_torch.mean()), rel=1e-4)
    np.testing.assert_allclose(np.linalg.norm(e_onnx, axis=1), 1, atol=1e-5)


def test_embed_images_is_flip_added_and_xnorm_is_host_mean(golden_dir, tiny):
    net, _, _ = tiny
    images, _ = load_bin_images(golden_dir / "verification" / "toy_py2.bin")
    images = images[:10]
    emb = TorchEmbedder(net, "cpu")
    x = (images.astype(np.float32).transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5
    a, b = emb(x), emb(np.ascontiguousarray(x[..., ::-1]))
    want = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    got, norms = embed_images(emb, images, batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The host's XNorm averages the norms of every individual embedding (plain and flipped).
    assert norms.mean() == pytest.approx(np.r_[np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)].mean(), rel=1e-5)
    got_noflip, _ = embed_images(emb, images, flip=False)
    np.testing.assert_allclose(got_noflip, a / np.linalg.norm(a, axis=1, keepdims=True), atol=1e-5)


def test_fixed_batch_onnx_is_looped(tiny):
    _, dyn, fixed = tiny
    e_fixed = OnnxEmbedder(fixed)
    assert e_fixed.fixed_batch == 1 and OnnxEmbedder(dyn).fixed_batch is None
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(e_fixed(x), OnnxEmbedder(dyn)(x), atol=1e-5)
    assert e_fixed.providers[-1] == "CPUExecutionProvider"


def test_onnx_with_sub_mul_stem_gets_raw_pixels(tmp_path):
    """Like insightface's ArcFaceONNX: Sub- and Mul-named first nodes mean the graph normalises itself."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Sub", ["data", "mean"], ["s"], name="Sub_0"),
        helper.make_node("Mul", ["s", "scale"], ["m"], name="Mul_1"),
        helper.make_node("GlobalAveragePool", ["m"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["embedding"], name="flat"),
    ]
    graph = helper.make_graph(
        nodes,
        "mxnet_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor("mean", TensorProto.FLOAT, [], [127.5]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [0.0078125]),
        ],
    )
    path = tmp_path / "mx.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    e = OnnxEmbedder(path)
    assert e.raw_pixels
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    # Fed raw pixels (x*127.5 + 127.5), the graph's own (p - 127.5)/128 gives back about x * 0.996.
    np.testing.assert_allclose(e(x), x.mean(axis=(2, 3)) * 127.5 * 0.0078125, atol=1e-5)


def test_torch_state_dict_embedder(tmp_path):
    from scoremix_plugin.backbones import get_backbone

    torch.manual_seed(0)
    net = get_backbone("r10_tiny", num_features=32).eval()
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(ValueError, match="--network"):
        load_embedder(path)
    emb = load_embedder(path, network="r10_tiny", device="cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(emb(x), want, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model format"):
        load_embedder(tmp_path / "model.h5")


def test_verify_bins_matches_evaluate(golden_dir, tiny):
    _, onnx_path, _ = tiny
    res = verify_bins(
        OnnxEmbedder(onnx_path), {"toy": golden_dir / "verification" / "toy_py2.bin"}, batch_size=64, progress=False
    )
    assert set(res) == {"toy"} and res["toy"].xnorm > 0 and len(res["toy"].accuracy_per_fold) == 10


def test_cli_missing_target_is_an_error(tmp_path, tiny, capsys):
    _, onnx_path, _ = tiny
    assert cli.main(["verify", "--model", str(onnx_path), "--data", str(tmp_path), "--targets", "lfw,cfp_fp"]) == 2
    assert re.search(r"scoremix verify: error: missing verification file\(s\): .*lfw\.bin", capsys.readouterr().err)
    (tmp_path / "model.pt").write_bytes(b"")
    assert cli.main(["verify", "--model", str(tmp_path / "model.pt"), "--bins", str(onnx_path)]) == 2
    assert "model.pt: a torch state dict needs --network" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["odd_count", "hard"])
def test_cli_embeddings_reproduce_expected(tmp_path, golden_dir, name):
    out = tmp_path / "e.json"
    rc = cli.main(
        [
            "verify",
            "--embeddings",
            str(golden_dir / "verification" / f"embeddings_{name}.npz"),
            "--json",
            str(out),
            "--out",
            str(tmp_path / "rep"),
        ]
    )
    assert rc == 0
    got = json.loads(out.read_text())
    want = json.loads((golden_dir / "verification" / "expected.json").read_text())[name]
    np.testing.assert_allclose(got["accuracy_per_fold"], want["accuracy_per_fold"], rtol=0, atol=1e-9)
    for key in ("accuracy_mean", "accuracy_std", "tpr_sum", "fpr_sum"):
        assert abs(got[key] - want[key]) < 1e-9, key
    assert (tmp_path / "rep" / "roc.png").is_file()


def test_report_compares_named_runs(tmp_path, golden_dir):
    from scoremix_plugin.verification.protocol import evaluate_embeddings
    from scoremix_plugin.verification.report import format_table, write_report

    runs = {}
    for run, name in (("baseline", "hard"), ("scoremix", "easy")):
        z = np.load(golden_dir / "verification" / f"embeddings_{name}.npz")
        runs[run] = {"toy_lfw": evaluate_embeddings(z["embeddings"], z["issame"])}
    paths = write_report(tmp_path, runs, title="baseline vs ScoreMix")
    data = json.loads(paths["json"].read_text())["results"]
    assert set(data) == {"baseline", "scoremix"} and data["scoremix"]["toy_lfw"]["accuracy_mean"] > 0.99
    table = format_table(runs)
    assert "| baseline | toy_lfw |" in table and "68.00 +- 5.26" in table and "99.33 +- 1.11" in table
    assert paths["roc"].stat().st_size > 1000


def test_cli_on_toy_dataset_targets_and_rec_bin(tmp_path, toy_data, tiny):
    """--data/--targets over the toy folder's .bin files, plus a .bin drawn from its RecordIO by make-bin."""
    _, onnx_path, _ = tiny
    made = tmp_path / "from_rec.bin"
    assert cli.main(["make-bin", "--rec", str(toy_data), "--num-pairs", "40", "--seed", "1", "--out", str(made)]) == 0
    summary = tmp_path / "s.json"
    assert (
        cli.main(
            [
                "verify",
                "--model",
                str(onnx_path),
                "--data",
                str(toy_data),
                "--targets",
                "toy_lfw,toy_cfp_fp",
                "--json",
                str(summary),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads(summary.read_text())
    assert set(res["results"]) == {"toy_lfw", "toy_cfp_fp"}
    assert res["meta"]["onnx_providers"] == ["CPUExecutionProvider"]
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 and r["num_pairs"] == 60 for r in res["results"].values())
    assert cli.main(["verify", "--model", str(onnx_path), "--bins", str(made), "--no-progress"]) == 0
