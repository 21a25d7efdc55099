"""The CUDA paths, run where a GPU is (``pytest -m cuda``; benchmarks/gpu_check.py runs them first).

Skipped without CUDA, so CI on CPU collects them but runs none: bf16 autocast numerics against fp32
(generator and recogniser), the loader's contract with the host (batches already on
``cuda:local_rank``), our trainer and the margin head under a 1-GPU nccl process group, the
generator's train / load / sample round trip on the GPU, and ONNX export run by onnxruntime's CUDA
provider (when the installed onnxruntime has it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.py)"),
]

REPO = Path(__file__).resolve().parents[1]
DEVICE = "cuda:0"


def _rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def _presets_112() -> list[str]:
    from scoremix_plugin.generation.network import PRESETS

    return [name for name, kw in PRESETS.items() if kw.get("resolution") == 112]


@pytest.mark.parametrize("preset", _presets_112())
def test_generator_bf16_autocast_matches_fp32(preset):
    """Each 112-px preset's denoiser under bf16 autocast stays within bf16 noise of fp32, at every noise level."""
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import build_network, network_kwargs

    torch.manual_seed(0)
    kw = network_kwargs(preset, 10, 112)
    d = EDMPrecond(build_network(kw), num_classes=10, resolution=112).to(DEVICE).eval().requires_grad_(False)
    x = torch.randn(4, 3, 112, 112, device=DEVICE)
    labels = torch.tensor([0, 3, 9, 10], device=DEVICE)  # 10 = the null class
    for sigma in (0.002, 0.5, 5.0, 80.0):
        s = torch.full((4,), sigma, device=DEVICE)
        d.amp_dtype = None
        ref = d(x * sigma, s, labels)
        d.amp_dtype = torch.bfloat16
        got = d(x * sigma, s, labels)
        assert got.dtype == torch.float32  # the preconditioning and the output stay float32
        # bf16 keeps 8 bits of mantissa: a few 1e-3 per layer, ~1e-2 through an untrained U-Net.
        assert _rel_rms(got, ref) < 5e-2, sigma


def test_recogniser_autocast_matches_fp32():
    """r50 embeddings under the host's fp16 autocast (and under bf16) point where fp32's do.

    Train mode (batch statistics), as in training: an untrained network's default running statistics
    let activations grow past fp16's range in eval mode, which would test the initialisation, not autocast.
    """
    from scoremix_plugin.backbones import get_backbone

    torch.manual_seed(0)
    ref_net = get_backbone("r50").to(DEVICE).train()
    amp_net = get_backbone("r50", fp16=True).to(DEVICE).train()
    amp_net.load_state_dict(ref_net.state_dict())
    x = torch.rand(8, 3, 112, 112, device=DEVICE) * 2 - 1
    with torch.no_grad():
        ref = ref_net(x)
        fp16 = amp_net(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = ref_net(x).float()
    for got in (fp16, bf16):
        assert got.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(got.double(), ref.double(), dim=1)
        assert float(cos.min()) > 0.999


def test_loader_yields_batches_on_cuda_local_rank(toy_data):
    """The host's positional call: a DataLoader whose batches are already on cuda:local_rank (train_v2.py never
    moves them)."""
    from scoremix_plugin.integration.loader import get_dataloader

    loader = get_dataloader(str(toy_data), 0, 8, False, False, 2048, 2)
    assert isinstance(loader, torch.utils.data.DataLoader)
    loader.sampler.set_epoch(1)
    img, label = next(iter(loader))
    assert img.device == torch.device(DEVICE) and label.device == torch.device(DEVICE)
    assert img.dtype == torch.float32 and label.dtype == torch.int64 and tuple(img.shape) == (8, 3, 112, 112)
    assert -1.0 <= float(img.min()) and float(img.max()) <= 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


NCCL_SCRIPT = """
import sys, torch, torch.distributed as dist
from scoremix_plugin.config import load_recogniser_config
from scoremix_plugin.recognition.losses import (
    CombinedMarginLoss, MarginSoftmaxHead, _AllGatherWithGrad, _DistSoftmaxCrossEntropy,
)
from scoremix_plugin.recognition.train import train

dist.init_process_group("nccl", rank=0, world_size=1)  # env:// from the test, as torchrun or the host sets it
assert dist.get_backend() == "nccl"
# The head's collectives on nccl: the split-class softmax and the all-gather give the local answer.
torch.manual_seed(0)
logits = torch.randn(6, 11, device="cuda:0", requires_grad=True)
labels = torch.randint(0, 11, (6,), device="cuda:0")
dist_loss = _DistSoftmaxCrossEntropy.apply(logits, labels, True)
local = torch.nn.functional.cross_entropy(logits, labels)
assert torch.allclose(dist_loss, local, atol=1e-5), (dist_loss, local)
emb = torch.randn(4, 8, device="cuda:0", requires_grad=True)
gathered = _AllGatherWithGrad.apply(emb)
gathered.sum().backward()
assert torch.equal(gathered, emb) and torch.allclose(emb.grad, torch.ones_like(emb))
# Our trainer inside the open group: a few fp16 steps on the GPU, checkpoint written.
summary = train(load_recogniser_config(sys.argv[1]), progress=False)
assert summary["global_step"] == 3, summary
print("NCCL_OK", dist.get_world_size())
dist.destroy_process_group()
"""


def test_trainer_under_one_gpu_nccl_group(toy_data, tmp_path):
    """An nccl group of one GPU (as torchrun --nproc_per_node=1 or the host opens it): head collectives + trainer."""
    from test_integration_helpers import write_recogniser_config

    cfg = write_recogniser_config(
        tmp_path / "cfg.py",
        rec=str(toy_data),
        num_classes=12,
        num_image=96,
        num_epoch=1,
        warmup_epoch=0,
        val_targets=["toy_lfw"],
        network="r10_tiny",
        batch_size=16,
        fp16=True,
        max_steps=3,
        output=str(tmp_path / "out"),
        num_workers=2,
    )
    env = dict(
        os.environ,
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NCCL_SCRIPT), str(cfg)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0 and "NCCL_OK 1" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (tmp_path / "out" / "model.pt").is_file() and (tmp_path / "out" / "checkpoint_rank0.pt").is_file()


def test_generator_trains_loads_and_samples_on_cuda(toy_data, tmp_path):
    """train_generator on the GPU (bf16), then load_generator(device=cuda, amp=bf16) and the 2-way mix sampler."""
    from scoremix_plugin.generation.checkpoint import load_generator
    from scoremix_plugin.generation.sampler import image_generator, sample
    from scoremix_plugin.generation.train import train_generator

    out = tmp_path / "gen"
    summary = train_generator(
        dict(
            rec=str(toy_data),
            preset="test-micro",
            resolution=16,
            batch_size=8,
            total_steps=4,
            log_every=2,
            sample_every=None,
            sample_steps=2,
            sample_classes=2,
            output=str(out),
            num_workers=0,
            bf16=True,
        )
    )
    assert summary["step"] == 4 and np.isfinite(summary["final_loss"])
    classes, weights = torch.tensor([[0, 5], [3, 7]]), torch.tensor([[0.5, 0.5], [0.3, 0.7]])
    results = {}
    for device, amp in (("cpu", None), (DEVICE, None), (DEVICE, torch.bfloat16)):
        denoiser, _ = load_generator(out / "generator.pt", device=device, amp=amp)
        gens = [image_generator(0, i, 0) for i in range(2)]  # CPU generators: the same noise on every device
        results[(device, amp)] = sample(
            denoiser, classes, weights, generators=gens, num_steps=4, guidance="cfg", guidance_scale=2.0
        ).cpu()
    cpu = results[("cpu", None)]
    assert (results[(DEVICE, None)] - cpu).abs().max() < 2e-2  # fp32 on the GPU (TF32 convolutions) vs CPU
    assert (results[(DEVICE, torch.bfloat16)] - cpu).abs().mean() < 5e-2


def test_onnx_export_runs_on_the_cuda_provider(tmp_path):
    """Export r50 to ONNX, run it with onnxruntime's CUDA provider, compare with torch on the GPU."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA provider ({ort.get_available_providers()}): install onnxruntime-gpu")
    from scoremix_plugin.backbones import get_backbone
    from scoremix_plugin.recognition.export import export_onnx
    from scoremix_plugin.verification.evaluate import OnnxEmbedder

    torch.manual_seed(0)
    net = get_backbone("r50")
    for m in net.modules():  # running statistics from a few batches, so an untrained net's outputs stay finite
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 3, 112, 112) * 2 - 1)
    net.eval()
    path = export_onnx(net, tmp_path / "r50.onnx")
    embedder = OnnxEmbedder(path)
    assert embedder.providers[0] == "CUDAExecutionProvider", embedder.providers
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    got = embedder(x)
    with torch.no_grad():
        ref = net.to(DEVICE)(torch.from_numpy(x).to(DEVICE)).cpu().numpy()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.999
