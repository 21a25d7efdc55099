"""The parts of the GPU check (benchmarks/gpu_check.py runs each in its own process).

Every part has the signature ``part_NAME(settings, work, deadline, save)``: ``work`` is the check's
shared temporary folder, ``deadline`` a ``time.time()`` after which no new measurement starts, and
``save(dict)`` records results as they come (a part killed at its budget keeps what it saved).
A part that cannot run here saves ``skipped`` (the reason) and returns; one that fails raises.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_generator import part_generator  # noqa: F401 (a part, looked up by name)
from benchmarks.gpu_settings import Settings

REPO = Path(__file__).resolve().parents[1]
Save = Callable[[dict[str, Any]], None]
# Distributions whose presence and version the report lists (the GPU image lacks some of them).
DISTRIBUTIONS = (
    "torch",
    "torchvision",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "diffusers",
    "huggingface-hub",
    "easydict",
    "tqdm",
    "opencv-python-headless",
    "opencv-python",
    "scipy",
    "scikit-learn",
    "tensorboard",
    "matplotlib",
    "pytest",
)


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def toy_folder(work: Path) -> Path:
    return work / "toy"


def big_folder(work: Path) -> Path:
    return work / "big"


# data: the toy identity folder (InsightFace layout, 112 px) every later part reads, and a bigger one for
# the recogniser runs, so that their steps are ONE epoch (an epoch's end saves checkpoints and restarts the
# workers: with several epochs those pauses would land in the speed windows).


def write_big_folder(toy: Path, out: Path, num_images: int) -> dict[str, int]:
    """``num_images`` images cycling the toy JPEGs (stored verbatim, decoded like any other); copy c of toy
    class k is class ``c * C + k``, each class written contiguously as the shard writer requires."""
    from scoremix_plugin.recordio import FaceRecFolder, FaceRecWriter

    src = FaceRecFolder(toy)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(src.labels):
        by_class.setdefault(int(label), []).append(i)
    per_class = max(len(v) for v in by_class.values())
    copies = -(-num_images // (per_class * len(by_class)))
    written, classes = 0, 0
    with FaceRecWriter(out) as writer:
        for c in range(copies):
            for k, items in sorted(by_class.items()):
                for j in range(per_class):
                    if written == num_images:
                        break
                    label = c * len(by_class) + k
                    writer.write(src.jpeg(items[j % len(items)]), label)
                    written, classes = written + 1, label + 1
    src.close()
    return {"images": written, "classes": classes}


def part_data(s: Settings, work: Path, deadline: float, save: Save) -> None:
    from scoremix_plugin.toydata import write_toy_dataset

    t0 = time.perf_counter()
    write_toy_dataset(
        toy_folder(work),
        num_identities=s.data_identities,
        images_per_identity=s.data_images_per_identity,
        num_test_identities=2,
        num_pairs=4,
    )
    dt = time.perf_counter() - t0
    n = s.data_identities * s.data_images_per_identity
    save(
        {
            "folder": str(toy_folder(work)),
            "identities": s.data_identities,
            "images": n,
            "write_images_per_s": round(n / dt, 1),
        }
    )
    big = write_big_folder(toy_folder(work), big_folder(work), s.rec_batch * s.rec_steps)
    save({"big_folder": str(big_folder(work)), "big": big})


# env: device, versions and the card's bf16 matmul peak, measured now (the denominator of every fraction).


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 - a torch built without NCCL: the report says so
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def matmul_peak_tflops(n: int, dtype: torch.dtype, device: str, iters: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def part_env(s: Settings, work: Path, deadline: float, save: Save) -> None:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "versions": versions(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=torch.cuda.get_device_name(0),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
            nccl=_nccl_version(),
        )
    else:
        info.update(device=f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError as e:
        info["onnxruntime_providers"] = f"not importable: {e}"
    save(info)
    if s.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device: every timed part would measure the CPU")
    dtype = getattr(torch, s.peak_dtype)
    peak = matmul_peak_tflops(s.peak_size, dtype, s.device)
    save({"peak_tflops": round(peak, 4), "peak_how": f"{s.peak_size}^3 {s.peak_dtype} matmul, 10 after 3 warm-ups"})


# tests: the tests marked cuda (tests/test_cuda.py), run by pytest in its own process.


def part_tests(s: Settings, work: Path, deadline: float, save: Save) -> None:
    if importlib.util.find_spec("pytest") is None:
        raise RuntimeError(
            "pytest is not importable: carry it (python benchmarks/gpu_check.py --prepare --wheels core,pytest)"
        )
    junit = work / "junit_cuda.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "tests/test_cuda.py",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-o",
        "addopts=",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(5.0, deadline - time.time()))
    tests = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
                    message = (node.get("message") or "")[:300]
            tests.append(
                {
                    "name": case.get("name"),
                    "outcome": outcome,
                    "seconds": float(case.get("time", 0)),
                    "message": message,
                }
            )
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    save({"tests": tests, "counts": counts, "pytest_exit": proc.returncode, "output_tail": proc.stdout[-1500:]})
    if proc.returncode not in (0, 5) or counts["failed"] or counts["error"] or not tests:
        save({"error": f"pytest -m cuda: exit {proc.returncode}, {counts}"})


# recogniser (ours) and host (the real train_v2.py): one config, the same keys for both trainers.


def recogniser_config(s: Settings, work: Path, output: Path) -> dict[str, Any]:
    from scoremix_plugin.recordio import FaceRecFolder

    folder = FaceRecFolder(big_folder(work))
    n, classes = len(folder), folder.num_classes
    folder.close()
    per_epoch = n // s.rec_batch
    if per_epoch < 1:
        raise ValueError(f"{big_folder(work)}: {n} images give no batch of {s.rec_batch}")
    epochs = -(-s.rec_steps // per_epoch)
    # val_targets empty and verbose huge: throughput, not accuracy (verification would cost both runs time).
    return dict(
        rec=str(big_folder(work)),
        num_classes=classes,
        num_image=n,
        num_epoch=epochs,
        warmup_epoch=0,
        val_targets=[],
        network=s.network,
        batch_size=s.rec_batch,
        fp16=s.fp16,
        lr=0.1,
        num_workers=s.rec_workers,
        frequent=10 if not s.smoke else 1,
        verbose=10**9,
        seed=2048,
        embedding_size=512,
        margin_list=(1.0, 0.5, 0.0),
        output=str(output),
    )


def write_config(path: Path, keys: dict[str, Any]) -> Path:
    lines = ["from easydict import EasyDict as edict", "", "config = edict()"]
    lines += [f"config.{k} = {v!r}" for k, v in keys.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def steady(values: list[float]) -> float | None:
    """Median of the per-window speeds after the first window (start-up: workers, cuDNN autotuning)."""
    vals = values[1:] if len(values) > 1 else values
    return round(statistics.median(vals), 1) if vals else None


def recogniser_flops(network: str, device: str) -> float:
    """Training FLOPs per image (forward counted by torch's counter, x3 for forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    from scoremix_plugin.backbones import get_backbone

    net = get_backbone(network).to(device).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(2, 3, 112, 112, device=device))
    return 3 * counter.get_total_flops() / 2


def part_recogniser(s: Settings, work: Path, deadline: float, save: Save) -> None:
    from scoremix_plugin.config import load_recogniser_config
    from scoremix_plugin.recognition.train import train

    out = work / "ours"
    keys = recogniser_config(s, work, out)
    # The host always clips at 5 (train_v2.py); our trainer clips only when asked: same work per step.
    keys.update(grad_clip=5.0, max_steps=s.rec_steps, log_json="train_log.jsonl", device=s.device)
    cfg = load_recogniser_config(write_config(work / "ours_config.py", keys))
    save({"network": s.network, "batch": s.rec_batch, "fp16": s.fp16, "steps": s.rec_steps, "workers": s.rec_workers})
    t0 = time.perf_counter()
    summary = train(cfg, progress=False)
    speeds = [
        r["img_per_s"]
        for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
        if r.get("event") == "train"
    ]
    save(
        {
            "images_per_s": steady(speeds),
            "windows": [round(v, 1) for v in speeds],
            "global_step": summary["global_step"],
            "seconds": round(time.perf_counter() - t0, 1),
            "train_flops_per_image": recogniser_flops(s.network, s.device),
        }
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def part_host(s: Settings, work: Path, deadline: float, save: Save) -> None:
    if not s.host:
        save({"skipped": "no host checkout (--arcface-root, $ARCFACE_ROOT, .gpu_host/ from --prepare, ../shared/host)"})
        return
    root = work / "arcface_torch"  # a copy: the config below must not land in the user's checkout
    shutil.copytree(s.host, root, ignore=shutil.ignore_patterns("__pycache__", "work_dirs"))
    out = work / "host_out"
    keys = recogniser_config(s, work, out)
    write_config(root / "configs" / "gpucheck_r50.py", keys)
    save(
        {
            "host": s.host,
            "network": s.network,
            "batch": s.rec_batch,
            "fp16": s.fp16,
            "workers": s.rec_workers,
            "epochs": keys["num_epoch"],
            "steps": keys["num_image"] // s.rec_batch * keys["num_epoch"],
        }
    )
    if not torch.cuda.is_available():
        save({"skipped": "train_v2.py hard-codes nccl and .cuda(): it needs a CUDA device (config written, not run)"})
        return
    env = dict(
        os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )
    cmd = [
        sys.executable,
        "-m",
        "scoremix_plugin",
        "arcface-train",
        "--arcface-root",
        str(root),
        "configs/gpucheck_r50",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=work, env=env, capture_output=True, text=True, timeout=max(5.0, deadline - time.time())
    )
    log = (out / "training.log").read_text(errors="replace") if (out / "training.log").is_file() else ""
    speeds = [float(v) for v in re.findall(r"Speed ([0-9.]+) samples/sec", log)]
    save(
        {
            "images_per_s": steady(speeds),
            "windows": speeds,
            "seconds": round(time.perf_counter() - t0, 1),
            "exit": proc.returncode,
        }
    )
    if proc.returncode != 0 or not speeds:
        save(
            {
                "error": f"arcface-train exit {proc.returncode}; {len(speeds)} speed lines",
                "output_tail": (proc.stdout + proc.stderr)[-3000:],
            }
        )


# loader: decoded images/s of the training loader alone, per worker count, batches on the device.


def part_loader(s: Settings, work: Path, deadline: float, save: Save) -> None:
    from scoremix_plugin.integration.loader import get_dataloader, make_train_loader
    from scoremix_plugin.recordio.dataset import FaceRecDataset

    # The big folder: an epoch (after which the workers restart) lasts longer than the timing window.
    dataset = FaceRecDataset(big_folder(work))
    device = "cuda:0" if s.device == "cuda" else "cpu"
    rows = []
    for workers in s.loader_workers:
        if time.time() > deadline:
            rows.append({"workers": workers, "skipped": "part budget spent"})
            continue
        loader = make_train_loader(dataset, s.loader_batch, 2048, workers, 0, 1, device)
        t0 = time.perf_counter()
        first, images, epoch = None, 0, 0
        while first is None or time.perf_counter() - first < s.loader_seconds:
            loader.sampler.set_epoch(epoch)
            for img, _ in loader:
                sync(device)
                if first is None:  # the first batch pays for starting the workers
                    first, startup = time.perf_counter(), time.perf_counter() - t0
                    continue
                images += img.shape[0]
                if time.perf_counter() - first >= s.loader_seconds:
                    break
            epoch += 1
        rows.append(
            {
                "workers": workers,
                "images_per_s": round(images / (time.perf_counter() - first), 1),
                "startup_s": round(startup, 2),
                "batch_device": str(img.device),
            }
        )
        save({"rows": rows, "batch": s.loader_batch, "cpu_cores": os.cpu_count()})
    # The host's own call (positional, as train_v2.py makes it): batches must already be on cuda:local_rank.
    host_loader = get_dataloader(str(big_folder(work)), 0, s.loader_batch, False, False, 2048, 0)
    img, label = next(iter(host_loader))
    save(
        {
            "host_signature": {
                "img_device": str(img.device),
                "img_dtype": str(img.dtype),
                "label_dtype": str(label.dtype),
                "shape": list(img.shape),
                "is_dataloader": isinstance(host_loader, torch.utils.data.DataLoader),
            }
        }
    )
    if s.device == "cuda" and img.device.type != "cuda":
        save({"error": f"get_dataloader yielded images on {img.device}, the host needs cuda:0"})
