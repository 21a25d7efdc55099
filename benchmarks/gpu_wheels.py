"""Wheels for a GPU machine that cannot reach a package index (its image: torch, torchvision, onnxruntime, numpy).

What the check's code paths import beyond that image (found by reading the imports of each part):
- every part: ``easydict`` (configs), ``tqdm`` (progress), ``cv2`` (JPEG in RecordIO: ``opencv-python-headless``);
- generator: ``diffusers`` (UNet2DModel) and what it pulls (huggingface_hub, safetensors, regex, ...);
- tests: ``pytest``; ONNX tests: ``onnx`` (the GPU images we know carry it);
- host: the real ``train_v2.py`` imports ``torch.utils.tensorboard`` (``tensorboard``), and its
  ``eval/verification.py`` ``sklearn`` and ``scipy``, at import.
matplotlib and scipy are NOT imported by the check's own paths (only by reports it does not write).

Groups (``--wheels``): ``core`` = diffusers + easydict + tqdm with their requirements (small, a few
MiB); ``opencv``; ``host`` = scikit-learn + scipy + tensorboard (large); ``pytest``. Versions follow
constraints.txt. ``pip download`` resolves each group for the GPU machine's Python (default 3.12,
manylinux x86_64); wheels of distributions the image already has are dropped. On the GPU machine,
``missing_wheels`` picks the carried wheels whose distribution is not installed at that version, and
gpu_check.py unpacks them into ``.gpu_site/`` (no index, no dependencies), first on every part's path.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUPS = {
    "core": ["diffusers", "easydict", "tqdm"],
    "opencv": ["opencv-python-headless"],
    "host": ["scikit-learn", "scipy", "tensorboard"],
    "pytest": ["pytest"],
}
# The GPU image's own (torch, torchvision, onnxruntime, numpy) and what they require: never carried.
IMAGE_HAS = {
    "torch",
    "torchvision",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "pillow",
    "filelock",
    "typing-extensions",
    "sympy",
    "mpmath",
    "networkx",
    "jinja2",
    "markupsafe",
    "fsspec",
    "setuptools",
    "triton",
    "packaging",
    "protobuf",
    "flatbuffers",
    "coloredlogs",
    "humanfriendly",
}
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
CARRY_LIMIT_MIB = 64  # what the device tool carries with a checkout, all together


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_dist(path: Path) -> tuple[str, str]:
    """(normalised distribution name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return normalise(name), version


def download_wheels(dest: Path, *, groups: str = "core", python_version: str = "3.12") -> list[Path]:
    chosen = list(GROUPS) if groups == "all" else [g for g in groups.split(",") if g]
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        raise SystemExit(f"--wheels: unknown group(s) {unknown}; choose from {sorted(GROUPS)} or 'all'")
    dest.mkdir(exist_ok=True)
    names = [n for g in chosen for n in GROUPS[g]]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *(a for p in PLATFORMS for a in ("--platform", p)),
        "-c",
        str(REPO / "constraints.txt"),
        "-d",
        str(dest),
        *names,
    ]
    print("[prepare] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    kept = []
    for wheel in sorted(dest.glob("*.whl")):
        if wheel_dist(wheel)[0] in IMAGE_HAS:
            wheel.unlink()  # the image has it; two versions of one distribution break the install
        else:
            kept.append(wheel)
    mib = sum(w.stat().st_size for w in kept) / 2**20
    print(f"[prepare] {len(kept)} wheel(s) in {dest}, {mib:.1f} MiB: " + ", ".join(w.name for w in kept), flush=True)
    if mib > CARRY_LIMIT_MIB * 0.8:
        print(
            f"[prepare] warning: {mib:.0f} MiB of wheels leaves little of the {CARRY_LIMIT_MIB} MiB a run can carry; "
            "drop a group the GPU image already has (docs/gpu_check.md)",
            flush=True,
        )
    return kept


def missing_wheels(wheels: Path) -> list[Path]:
    """The carried wheels whose distribution is not installed here at that version."""
    todo = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel_dist(wheel)
        try:
            if importlib.metadata.version(name) == version:
                continue
        except importlib.metadata.PackageNotFoundError:
            pass
        todo.append(wheel)
    return todo
