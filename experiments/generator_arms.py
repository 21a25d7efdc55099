"""Generator arms at equal CPU compute: which generator makes identities, and how soon? (issue 13)

Arms (the generator and the sampler; the recogniser that judges them is fixed per scale):

========= =========================================================================================
a         the demo's generator: tiny UNet2DModel (recipes/demo/generator.py), standard EMA, CFG 2.5
b         an EDM2 magnitude-preserving network of similar cost, post-hoc EMA, CFG 2.5
c-snap    b + autoguidance, the guide an early snapshot of b's own run (no extra training)
c-xs      b + autoguidance, the guide a smaller EDM2 network trained for a fraction of b's steps
========= =========================================================================================

(d), AugGen condition mixing vs ScoreMix score mixing, is measured inside every unit: the same far pairs
are mixed both ways on the same generator.

A unit is (arm, scale, steps). Training runs once per (network, scale) and is extended segment by
segment (exact resume), keeping ``gen-NNNNNNN.pt`` at each unit's step count and the CPU seconds
(``time.process_time``, one torch thread) spent to get there, so a curve of fidelity against CPU
minutes comes out of one run. Every unit writes ``experiments/results/generator_arms/<arm>-<scale>-<steps>.json``
(committed); checkpoints and data stay under ``--out`` (ignored). Rerunning skips finished units::

    python experiments/generator_arms.py run --arm a --scale s40 --steps 300 600 1200 2400
    python experiments/generator_arms.py summary

Metrics (all in the baseline recogniser's embedding space: there is no Inception network here, so the
"Frechet distance" is between real and generated recogniser embeddings, not an FID):

- class fidelity of single-class samples: nearest-centre top-1 accuracy against the real class centres,
  mean intra-class cosine, Frechet distance to the real embeddings;
- far-pair mixes (pairs far apart in the same space): intra-identity cosine (self-consistency) and
  novelty (cosine to the nearest real class; how often that class is one of the two sources), for
  ScoreMix score mixing (0.5 / 0.5) and AugGen condition mixing (0.7 / 0.7, AugGen's non-convex choice).

Real references use the same 32-px round trip as generated images (area down to 32 px as the generator
sees them, bicubic back up to 112 as ``scoremix generate`` writes them), so blur is not scored as infidelity.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "generator_arms"

SCALES = {
    # The demo's data; the mixes are its 40 far pairs (each class in at most 2).
    "s40": dict(identities=40, images=16, recogniser_epochs=30, classes=40, per_class=8, pairs=40, max_uses=2,
                per_mix=8),
    # 400 identities x 12 images: fidelity on a 100-class subset, 100 far pairs, each class used once.
    "s400": dict(identities=400, images=12, recogniser_epochs=8, classes=100, per_class=4, pairs=100, max_uses=1,
                 per_mix=4),
}
TEST_IDENTITIES, TEST_PAIRS = 40, 1000
LOW_RES = 32  # the generators' resolution
CFG_SCALE = 2.5  # the demo's guidance scale, kept for every arm
AUGGEN_WEIGHTS = (0.7, 0.7)  # AugGen's condition coefficients (not convex)
SCOREMIX_WEIGHTS = (0.5, 0.5)
SAMPLER = dict(num_steps=8, solver="heun")  # the demo's sampler

# Networks trained per scale: config overrides over recipes/demo/generator.py.
NETWORKS = {
    "tiny": {},
}
# arm -> (network, guidance, guide: None | "snapshot" | network name)
ARMS = {
    "a": ("tiny", "cfg", None),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def locked(path: Path):
    """One process at a time prepares a scale's shared data and recogniser (others wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# Shared per scale: toy data, baseline recogniser, real references.


def prepare_scale(out: Path, scale: str) -> dict:
    """Toy data and the baseline recogniser of one scale (made once; later calls read them)."""
    from scoremix_plugin.io_utils import write_json_atomic

    sc, d = SCALES[scale], out / scale
    done = d / "shared.json"
    with locked(d / ".lock"):
        if done.is_file():
            return json.loads(done.read_text())
        from scoremix_plugin.config import load_recogniser_config, read_config_file
        from scoremix_plugin.recognition.train import train
        from scoremix_plugin.toydata import write_toy_dataset

        data = d / "data"
        if not (data / "toy_meta.json").is_file():
            log(f"{scale}: toy data {sc['identities']} x {sc['images']}")
            write_toy_dataset(data, num_identities=sc["identities"], images_per_identity=sc["images"],
                              num_test_identities=TEST_IDENTITIES, num_pairs=TEST_PAIRS, seed=0)
        rec_dir = d / "recogniser"
        model = rec_dir / "model.pt"
        cpu0 = time.process_time()
        if not model.is_file():
            log(f"{scale}: baseline recogniser ({sc['recogniser_epochs']} epochs)")
            cfg = read_config_file(ROOT / "recipes" / "demo" / "recogniser.py")
            cfg.update(rec=str(data), num_classes=sc["identities"], num_image=sc["identities"] * sc["images"],
                       output=str(rec_dir), val_targets=[], dataset="rec", num_epoch=sc["recogniser_epochs"],
                       device="cpu")
            path = write_config(rec_dir / "config.py", cfg)
            train(load_recogniser_config(path), progress=False)
        shared = {"data": str(data), "recogniser": str(model), "network": "r18_cpu",
                  "recogniser_cpu_s": round(time.process_time() - cpu0, 1)}
        write_json_atomic(done, shared)
        return shared


def write_config(path: Path, cfg: dict) -> Path:
    from scoremix_plugin.io_utils import write_text_atomic

    body = "".join(f"config.{k} = {v!r}\n" for k, v in cfg.items())
    write_text_atomic(path, "# experiments/generator_arms.py\nfrom easydict import EasyDict as edict\n\n"
                      "config = edict()\n" + body)
    return path


# Training: one run per (network, scale), extended to each unit's step count.


def train_to(out: Path, scale: str, network: str, steps: int, shared: dict) -> tuple[Path, float]:
    """``gen-{steps}.pt`` of this run and the cumulative training CPU seconds to reach it."""
    import shutil

    import torch

    from scoremix_plugin.config import read_config_file
    from scoremix_plugin.generation.train import train_generator
    from scoremix_plugin.io_utils import write_json_atomic

    run = out / scale / f"gen-{network}"
    snap = run / f"gen-{steps:07d}.pt"
    cpu_file = run / "cpu.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.is_file() else {}
    if snap.is_file() and str(steps) in cpu:
        return snap, float(cpu[str(steps)])
    cfg = read_config_file(ROOT / "recipes" / "demo" / "generator.py")
    cfg.update(NETWORKS[network])
    cfg.update(rec=shared["data"], output=str(run), total_steps=int(steps), duration=None, resume=True, seed=0,
               device="cpu", threads=1, sample_every=None, sample_steps=4, sample_classes=2,
               checkpoint_every=10**9, log_every=50)
    torch.set_num_threads(1)
    prev = max((int(s) for s in cpu if int(s) < steps), default=0)
    log(f"{scale} {network}: train {prev} -> {steps} steps")
    c0 = time.process_time()
    train_generator(cfg)
    spent = time.process_time() - c0
    shutil.copyfile(run / "generator.pt", snap)
    cpu[str(steps)] = float(cpu.get(str(prev), 0.0)) + spent
    write_json_atomic(cpu_file, cpu)
    return snap, cpu[str(steps)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("run", "train", "summary"))
    p.add_argument("--arm", choices=list(ARMS))
    p.add_argument("--network", choices=list(NETWORKS), help="train only (command train)")
    p.add_argument("--scale", choices=list(SCALES))
    p.add_argument("--steps", type=int, nargs="+", default=[])
    p.add_argument("--out", default=str(HERE / "runs" / "generator_arms"))
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if args.command == "train":
        shared = prepare_scale(out, args.scale)
        for s in args.steps:
            train_to(out, args.scale, args.network, s, shared)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
