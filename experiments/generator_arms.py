"""Generator arms at equal CPU compute: which generator makes identities, and how soon? (issue 13)

Arms (the generator and the sampler; the recogniser that judges them is fixed per scale):

========= =========================================================================================
a         the demo's former generator: tiny UNet2DModel (generator_arms/generator.py), standard EMA, CFG 2.5
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
    # The demo's data: fidelity on all 40 classes x 4 images, 20 far pairs (each class once) x 4 images. Small
    # samples because the 2 shared cores were ~7x oversubscribed when this ran; real-image values use the same n.
    "s40": dict(
        identities=40, images=16, recogniser_epochs=30, classes=40, per_class=4, pairs=20, max_uses=1, per_mix=4
    ),
    # 400 identities x 12 images: fidelity on a 100-class subset x 3 images (top-1 still against all 400 centres),
    # 40 far pairs x 4 images, each class used once; ~900 samples a unit, ~11 CPU min (0.75 CPU s a sample).
    "s400": dict(
        identities=400, images=12, recogniser_epochs=4, classes=100, per_class=3, pairs=40, max_uses=1, per_mix=4
    ),
    # The shipped generators (experiments/pretrained.py): d40 judges with the demo's own recogniser (its 25
    # epochs) and the demo's selection (40 far pairs, each class in up to 2); d200 with the powered design's
    # baseline recogniser (30 epochs), single-class samples of 100 of the 200 classes, 50 far pairs.
    "d40": dict(
        identities=40, images=16, recogniser_epochs=25, classes=40, per_class=4, pairs=40, max_uses=2, per_mix=4
    ),
    "d200": dict(
        identities=200, images=16, recogniser_epochs=30, classes=100, per_class=3, pairs=50, max_uses=1, per_mix=4
    ),
}
TEST_IDENTITIES, TEST_PAIRS = 40, 1000
LOW_RES = 32  # the generators' resolution
CFG_SCALE = 2.5  # the demo's guidance scale, kept for every arm
AUGGEN_WEIGHTS = (0.7, 0.7)  # AugGen's condition coefficients (not convex)
SCOREMIX_WEIGHTS = (0.5, 0.5)
SAMPLER = dict(num_steps=8, solver="heun")  # the demo's sampler
LEAK_FAR = 1e-4  # the dataset report's default FAR for its leak threshold
# FARs at which identities are counted as recognised (the quality gate's rule). The gate judges at the first one
# where the recogniser recognises at least half of the REAL identities: a 4-epoch recogniser of 400 classes
# recognises 1 % of them at 1e-4 (impostor tail at cosine 0.93), which says nothing about synthetic ones.
GATE_FARS = (1e-4, 1e-3, 1e-2)

# Networks trained per scale: config overrides over experiments/generator_arms/generator.py (arm a: the demo's
# generator as measured; the demo has since moved to arm b).
NETWORKS = {
    "tiny": {},
    # EDM2's recipe on the demo's budget: MP U-Net, learned loss weighting u(sigma), Adam at EDM2's higher
    # rate (MP layers keep weights at unit norm, so the rate is relative) with 1/sqrt decay, power-function
    # EMA (sigma_rel 0.10 tracked) and post-hoc EMA snapshots of two profiles every 50 steps.
    "edm2": dict(
        preset="edm2-cpu",
        lr=1e-2,
        lr_warmup=100,
        lr_decay_ref=1000,
        loss_weighting="uncertainty",
        ema_sigma_rel=0.10,
        posthoc_ema=[0.05, 0.10],
        posthoc_every=50,
    ),
}
# The smaller-network guide: edm2's recipe on edm2-cpu-xs (half the width), trained for GUIDE_FRACTION of the steps.
NETWORKS["edm2-xs"] = dict(NETWORKS["edm2"], preset="edm2-cpu-xs")
# arm -> (network, guidance, guide: None | "snapshot" | network name)
ARMS = {
    "a": ("tiny", "cfg", None),
    "b": ("edm2", "cfg", None),
    "c-snap": ("edm2", "autoguidance", "snapshot"),
    "c-xs": ("edm2", "autoguidance", "edm2-xs"),
}
SIGMA_REL = 0.10  # post-hoc EMA length the EDM2 arms sample with (reconstructed from the snapshots)
GUIDE_FRACTION = 0.25  # the snapshot guide: the post-hoc EMA at a quarter of the main run's steps


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


def prepare_data(out: Path, scale: str) -> Path:
    """The scale's toy data (written once)."""
    from scoremix_plugin.toydata import write_toy_dataset

    sc, d = SCALES[scale], out / scale
    data = d / "data"
    with locked(d / ".lock-data"):
        if not (data / "toy_meta.json").is_file():
            log(f"{scale}: toy data {sc['identities']} x {sc['images']}")
            write_toy_dataset(
                data,
                num_identities=sc["identities"],
                images_per_identity=sc["images"],
                num_test_identities=TEST_IDENTITIES,
                num_pairs=TEST_PAIRS,
                seed=0,
            )
    return data


def prepare_scale(out: Path, scale: str) -> dict:
    """Toy data and the baseline recogniser of one scale (made once, resumable; later calls read them)."""
    from scoremix_plugin.io_utils import write_json_atomic

    sc, d = SCALES[scale], out / scale
    done = d / "shared.json"
    data = prepare_data(out, scale)
    with locked(d / ".lock"):
        if done.is_file():
            return json.loads(done.read_text())
        from scoremix_plugin.config import load_recogniser_config, read_config_file
        from scoremix_plugin.recognition.train import train

        rec_dir = d / "recogniser"
        model = rec_dir / "model.pt"
        cpu0 = time.process_time()
        log(f"{scale}: baseline recogniser ({sc['recogniser_epochs']} epochs)")
        cfg = read_config_file(ROOT / "scoremix_plugin" / "recipes" / "demo" / "recogniser.py")
        cfg.update(
            rec=str(data),
            num_classes=sc["identities"],
            num_image=sc["identities"] * sc["images"],
            output=str(rec_dir),
            val_targets=[],
            dataset="rec",
            num_epoch=sc["recogniser_epochs"],
            device="cpu",
            resume=(rec_dir / "checkpoint_rank0.pt").is_file(),
        )
        path = write_config(rec_dir / "config.py", cfg)
        train(load_recogniser_config(path), progress=False)
        shared = {
            "data": str(data),
            "recogniser": str(model),
            "network": "r18_cpu",
            "recogniser_cpu_s_last_session": round(time.process_time() - cpu0, 1),
        }
        write_json_atomic(done, shared)
        return shared


def write_config(path: Path, cfg: dict) -> Path:
    from scoremix_plugin.io_utils import write_text_atomic

    body = "".join(f"config.{k} = {v!r}\n" for k, v in cfg.items())
    write_text_atomic(
        path, "# experiments/generator_arms.py\nfrom easydict import EasyDict as edict\n\nconfig = edict()\n" + body
    )
    return path


# Training: one run per (network, scale), extended to each unit's step count.


def train_to(out: Path, scale: str, network: str, steps: int, shared: dict) -> tuple[Path, float]:
    """``gen-{steps}.pt`` of this run and the cumulative training CPU seconds to reach it."""
    run = out / scale / f"gen-{network}"
    with locked(run / ".lock"):
        return _train_to(run, network, steps, shared)


def _train_to(run: Path, network: str, steps: int, shared: dict) -> tuple[Path, float]:
    import shutil

    import torch

    from scoremix_plugin.config import read_config_file
    from scoremix_plugin.generation.train import train_generator
    from scoremix_plugin.io_utils import write_json_atomic

    snap = run / f"gen-{steps:07d}.pt"
    cpu_file = run / "cpu.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.is_file() else {}
    if snap.is_file() and str(steps) in cpu:
        return snap, float(cpu[str(steps)])
    cfg = read_config_file(HERE / "generator_arms" / "generator.py")
    cfg.update(NETWORKS[network])
    cfg.update(
        rec=shared["data"],
        output=str(run),
        total_steps=int(steps),
        duration=None,
        resume=True,
        seed=0,
        device="cpu",
        threads=1,
        sample_every=None,
        sample_steps=4,
        sample_classes=2,
        checkpoint_every=10**9,
        log_every=50,
        # float32: this machine's CPU (AVX2, no AVX512-BF16) ran bf16 autocast ~50x slower than expected
        bf16=False,
    )
    torch.set_num_threads(1)
    prev = max((int(s) for s in cpu if int(s) < steps), default=0)
    log(f"{run.parent.name} {network}: train {prev} -> {steps} steps")
    c0 = time.process_time()
    train_generator(cfg)
    spent = time.process_time() - c0
    shutil.copyfile(run / "generator.pt", snap)
    cpu[str(steps)] = float(cpu.get(str(prev), 0.0)) + spent
    write_json_atomic(cpu_file, cpu)
    return snap, cpu[str(steps)]


# Measurement.


def _embedder(shared: dict):
    from scoremix_plugin.verification.evaluate import load_embedder

    return load_embedder(shared["recogniser"], network=shared["network"], device="cpu")


def _round_trip(img: np.ndarray) -> np.ndarray:
    """112 -> 32 px (area, as the generator's training data) -> 112 px (bicubic, as `scoremix generate`)."""
    import cv2

    low = cv2.resize(img, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA)
    return cv2.resize(low, (112, 112), interpolation=cv2.INTER_CUBIC)


def real_reference(out: Path, scale: str, shared: dict) -> dict:
    """Embeddings of every real image (32-px round trip), split per class into A (first ``per_class``) and B (rest).

    B is the reference: its class centres are "the real classes", and generated images are compared with
    it; A (disjoint from B, as many images per class as generated) gives the real-data value of each metric.
    """
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.verification.evaluate import embed_images

    f = out / scale / "real_ref.npz"
    if f.is_file():
        z = np.load(f)
        return {k: z[k] for k in z.files}
    folder = FaceRecFolder(shared["data"])
    labels = np.asarray(folder.labels, np.int64)
    images = np.stack([_round_trip(folder.image(i)) for i in range(len(folder))])
    folder.close()
    emb, _ = embed_images(_embedder(shared), images, batch_size=64, flip=True)
    rank = np.zeros(len(labels), np.int64)  # index of the image within its class
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    in_a = rank < SCALES[scale]["per_class"]
    ref = {"emb": emb.astype(np.float32), "labels": labels, "in_a": in_a}
    np.savez(f, **ref)
    return ref


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_centres(emb: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    sums = np.zeros((num_classes, emb.shape[1]))
    np.add.at(sums, labels, emb)
    return unit_rows(sums)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two embedding samples (rows)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # The eigenvalues of S_a S_b (a product of PSD matrices) are real and >= 0: tr sqrt = sum of their roots.
    eig = np.linalg.eigvals(s_a @ s_b).real.clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(eig).sum())


def mean_intra(emb: np.ndarray, labels: np.ndarray) -> float:
    from scoremix_plugin.datareport.metrics import identity_stats

    return float(np.nanmean(identity_stats(emb, labels)[2]))


def fidelity(emb: np.ndarray, labels: np.ndarray, centres: np.ndarray, reference: np.ndarray) -> dict:
    """Top-1 of the nearest real centre, mean intra-class cosine and Frechet distance to ``reference``."""
    pred = np.argmax(emb @ centres.T, axis=1)
    return {
        "top1": float(np.mean(pred == labels)),
        "intra": mean_intra(emb, labels),
        "frechet": frechet_distance(emb.astype(np.float64), reference.astype(np.float64)),
        "n": int(len(emb)),
    }


def mix_metrics(emb: np.ndarray, ident: np.ndarray, pairs: np.ndarray, centres: np.ndarray) -> dict:
    """Self-consistency (intra) and novelty (nearest real class) of mixed identities."""
    from scoremix_plugin.datareport.metrics import identity_stats

    uniq, cen, intra = identity_stats(emb, ident)
    sim = cen @ centres.T
    nearest = np.argmax(sim, axis=1)
    is_source = [int(nearest[i]) in pairs[u].tolist() for i, u in enumerate(uniq)]
    return {
        "intra": float(np.nanmean(intra)),
        "nearest_real_cos": float(sim.max(1).mean()),
        "nearest_real_is_source": float(np.mean(is_source)),
        "identities": int(len(uniq)),
    }


def thresholds(emb: np.ndarray, labels: np.ndarray, fars) -> list[dict]:
    """The cosines where real impostor image pairs (10^6, seeded) reach each FAR in ``fars``."""
    from scoremix_plugin.datareport.metrics import impostor_pairs, pair_scores, threshold_at_far

    scores = pair_scores(emb, impostor_pairs(labels, 10**6, seed=0))
    return [
        {"far": t.far, "cosine": t.cosine, "impostor_pairs": t.impostor_pairs}
        for t in (threshold_at_far(scores, f) for f in fars)
    ]


def recognised(emb: np.ndarray, ident: np.ndarray, gates: list[dict]) -> dict:
    """The quality gate's per-identity rule (datareport/leaks.py) at each threshold of ``gates``: an identity is
    recognised as itself when more than half of its own image pairs score above the threshold."""
    from scoremix_plugin.datareport.leaks import recognised_share

    out = {}
    for g in gates:
        k, n = recognised_share(emb, ident, g["cosine"])
        out[f"{g['far']:g}"] = {"recognised": k, "of": n, "share": k / n if n else float("nan")}
    return {"recognised_at": out}


def leak_counts(
    emb: np.ndarray,
    ident: np.ndarray,
    pairs: np.ndarray,
    real_emb: np.ndarray,
    real_labels: np.ndarray,
    threshold: float,
) -> dict:
    """Training leaks of mixed identities by the dataset report's rule (datareport/leaks.py ``training_leaks``):
    identity means above ``threshold`` to a source class (a near-copy) or to another real class."""
    from scoremix_plugin.datareport.leaks import training_leaks
    from scoremix_plugin.datareport.metrics import identity_means

    uniq, means = identity_means(emb, ident)
    real_lab, real_means = identity_means(real_emb, real_labels)
    leaks, extra = training_leaks(uniq, means, pairs[uniq], real_lab, real_means, threshold)
    return {
        "leaks_source": sum(lk.kind == "training_source" for lk in leaks),
        "leaks_other": sum(lk.kind == "training_other" for lk in leaks),
        "leaked_identities": len({lk.label for lk in leaks}),
        "source_cos_max_mean": float(np.max(extra["source_cos"], axis=1).mean()),
    }


def sample_images(
    denoiser,
    classes,
    weights,
    seeds,
    *,
    guidance: str,
    guide=None,
    mix_space: str = "score",
    batch: int = 64,
    sampler: dict | None = None,
    guidance_scale: float = CFG_SCALE,
) -> np.ndarray:
    """RGB uint8 [N,112,112,3]: the sampler's images after the 32 -> 112 px step of `scoremix generate`."""
    import cv2
    import torch

    from scoremix_plugin.generation.images import to_uint8
    from scoremix_plugin.generation.sampler import image_generator, sample

    out = []
    for b0 in range(0, len(classes), batch):
        sl = slice(b0, b0 + batch)
        x = sample(
            denoiser,
            torch.as_tensor(classes[sl]),
            torch.as_tensor(weights[sl], dtype=torch.float32),
            generators=[image_generator(*s) for s in seeds[sl]],
            guidance=guidance,
            guidance_scale=guidance_scale,
            guide=guide,
            mix_space=mix_space,
            **(sampler or SAMPLER),
        )
        out += [cv2.resize(im, (112, 112), interpolation=cv2.INTER_CUBIC) for im in to_uint8(x)]
    return np.stack(out)


MEASURE_PARTS = ("single", "mix_score", "mix_condition", "mix_score_near")


def measure(
    denoiser,
    guide,
    guidance: str,
    scale: str,
    ref: dict,
    shared: dict,
    grid: Path | None = None,
    *,
    sampler: dict | None = None,
    guidance_scale: float = CFG_SCALE,
    parts=MEASURE_PARTS,
) -> dict:
    """Every metric of one generator + sampler setting (the unit's numbers); ``parts`` of MEASURE_PARTS only.

    The same noise for every generator and setting: image seeds depend on the class / pair and the image index.
    """
    kw = dict(guidance=guidance, guide=guide, sampler=sampler, guidance_scale=guidance_scale)
    from scoremix_plugin.synthesis.select import select
    from scoremix_plugin.verification.evaluate import embed_images

    sc = SCALES[scale]
    embedder = _embedder(shared)
    C = sc["identities"]
    emb, labels, in_a = ref["emb"], ref["labels"], ref["in_a"]
    centres = class_centres(emb[~in_a], labels[~in_a], C)
    chosen = np.unique(np.round(np.linspace(0, C - 1, sc["classes"])).astype(np.int64))
    on = np.isin(labels, chosen)
    reference = emb[~in_a & on]
    res = {"real": fidelity(emb[in_a & on], labels[in_a & on], centres, reference)}
    gates = thresholds(emb, labels, GATE_FARS)
    thr = next(g for g in gates if g["far"] == LEAK_FAR)
    res["leak_threshold"], res["gate_thresholds"] = thr, gates
    res["real"] |= recognised(emb[in_a & on], labels[in_a & on], gates)
    t0 = time.process_time()
    # Single-class samples.
    cls = np.repeat(chosen, sc["per_class"])
    seeds = [(1000, int(c), i) for c in chosen for i in range(sc["per_class"])]
    shown = []
    if "single" in parts:
        imgs = sample_images(denoiser, cls[:, None], np.ones((len(cls), 1)), seeds, **kw)
        e, _ = embed_images(embedder, imgs, batch_size=64, flip=True)
        res["single"] = fidelity(e, cls, centres, reference) | recognised(e, cls, gates)
        shown += [imgs[cls == c][:6] for c in chosen[:6]]
    # Far pairs in the same space, mixed both ways from the same noise.
    pairs, dist = select(centres, sc["pairs"], "far", max_uses=sc["max_uses"], seed=0)
    n = np.repeat(np.arange(len(pairs)), sc["per_mix"])
    seeds = [(2000, int(i), j) for i in range(len(pairs)) for j in range(sc["per_mix"])]
    res["pairs"] = {"n": int(len(pairs)), "distance_mean": float(dist.mean())}
    for space, w in (("score", SCOREMIX_WEIGHTS), ("condition", AUGGEN_WEIGHTS)):
        if f"mix_{space}" not in parts:
            continue
        imgs = sample_images(denoiser, pairs[n], np.tile(w, (len(n), 1)), seeds, mix_space=space, **kw)
        e, _ = embed_images(embedder, imgs, batch_size=64, flip=True)
        res[f"mix_{space}"] = (
            mix_metrics(e, n, pairs, centres)
            | {"weights": list(w)}
            | leak_counts(e, n, pairs, emb, labels, thr["cosine"])
            | recognised(e, n, gates)
        )
        shown += [imgs[n == i][:6] for i in range(3)]
    # Near pairs, score-mixed from the same noise: the dataset report's training-leak check should find more
    # near-copies of a source here than among the far mixes (issue 16), since a near mix has two close parents.
    if "mix_score_near" in parts:
        near, near_d = select(centres, sc["pairs"], "near", max_uses=sc["max_uses"], seed=0)
        res["pairs"]["near_distance_mean"] = float(near_d.mean())
        imgs = sample_images(denoiser, near[n], np.tile(SCOREMIX_WEIGHTS, (len(n), 1)), seeds, **kw)
        e, _ = embed_images(embedder, imgs, batch_size=64, flip=True)
        res["mix_score_near"] = (
            mix_metrics(e, n, near, centres)
            | {"weights": list(SCOREMIX_WEIGHTS)}
            | leak_counts(e, n, near, emb, labels, thr["cosine"])
            | recognised(e, n, gates)
        )
    res["measure_cpu_s"] = round(time.process_time() - t0, 1)
    if grid is not None and shown:
        import torch

        from scoremix_plugin.generation.images import save_grid

        rows = np.concatenate(shown)
        save_grid(grid, torch.from_numpy(rows).permute(0, 3, 1, 2).float() / 127.5 - 1, ncol=6)
    return res


def load_denoiser(out: Path, scale: str, network: str, steps: int):
    """The sampling denoiser of a run at ``steps``: its EMA (tiny), or the post-hoc EMA at SIGMA_REL (EDM2)."""
    from scoremix_plugin.generation.checkpoint import build_denoiser, load_generator

    run = out / scale / f"gen-{network}"
    if not NETWORKS[network].get("posthoc_ema"):
        return load_generator(run / f"gen-{steps:07d}.pt")[0]  # float32, as trained (see _train_to)
    from scoremix_plugin.generation.posthoc_ema import reconstruct

    return build_denoiser(reconstruct(run, SIGMA_REL, step=steps), ema=True).eval().requires_grad_(False)


def guide_steps(steps: int) -> int:
    """Training steps of a smaller-network guide for a main run of ``steps``."""
    return max(1, int(round(GUIDE_FRACTION * steps)))


def run_unit(out: Path, arm: str, scale: str, steps: int) -> dict | None:
    """Measure one (arm, scale, steps) if its generator exists; write and return the result."""
    from scoremix_plugin.io_utils import write_json_atomic

    name = f"{arm}-{scale}-{steps}"
    dest = RESULTS / f"{name}.json"
    if dest.is_file():
        log(f"{name}: done, skipped")
        return json.loads(dest.read_text())
    network, guidance, guide_kind = ARMS[arm]
    run = out / scale / f"gen-{network}"
    cpu = json.loads((run / "cpu.json").read_text()) if (run / "cpu.json").is_file() else {}
    if str(steps) not in cpu:
        log(f"{name}: generator not trained to {steps} steps yet, skipped")
        return None
    shared = prepare_scale(out, scale)
    ref = real_reference(out, scale, shared)
    den = load_denoiser(out, scale, network, steps)
    guide, guide_info, train_cpu = None, None, float(cpu[str(steps)])
    if guide_kind == "snapshot":
        every = int(NETWORKS[network]["posthoc_every"])
        g_step = max(every, int(round(GUIDE_FRACTION * steps / every)) * every)
        guide = load_denoiser(out, scale, network, g_step)
        guide_info = {"kind": "snapshot", "step": g_step, "sigma_rel": SIGMA_REL}
    elif guide_kind is not None:  # a smaller network trained for GUIDE_FRACTION of the steps; its CPU counts
        g_step = guide_steps(steps)
        g_cpu = (
            json.loads((out / scale / f"gen-{guide_kind}" / "cpu.json").read_text())
            if (out / scale / f"gen-{guide_kind}" / "cpu.json").is_file()
            else {}
        )
        if str(g_step) not in g_cpu:
            log(f"{name}: guide {guide_kind} not trained to {g_step} steps yet, skipped")
            return None
        guide = load_denoiser(out, scale, guide_kind, g_step)
        train_cpu += float(g_cpu[str(g_step)])
        guide_info = {
            "kind": "smaller",
            "network": guide_kind,
            "preset": NETWORKS[guide_kind]["preset"],
            "step": g_step,
            "sigma_rel": SIGMA_REL,
            "train_cpu_s": round(float(g_cpu[str(g_step)]), 1),
        }
    log(f"{name}: measuring")
    res = measure(den, guide, guidance, scale, ref, shared, grid=RESULTS / "grids" / f"{name}.png")
    result = {
        "arm": arm,
        "scale": scale,
        "steps": steps,
        "network": network,
        "preset": NETWORKS[network].get("preset", "tiny-cpu"),
        "guidance": guidance,
        "guidance_scale": CFG_SCALE,
        "guide": guide_info,
        "sampler": SAMPLER,
        "train_cpu_s": round(train_cpu, 1),
        "threads": 1,
        **res,
    }
    write_json_atomic(dest, result)
    s = res["single"]
    log(
        f"{name}: top1 {s['top1']:.3f} intra {s['intra']:.3f} FD {s['frechet']:.3f}; score-mix intra "
        f"{res['mix_score']['intra']:.3f} novelty {res['mix_score']['nearest_real_cos']:.3f}; condition-mix intra "
        f"{res['mix_condition']['intra']:.3f} novelty {res['mix_condition']['nearest_real_cos']:.3f}"
    )
    return result


# Downstream: baseline vs + far ScoreMix identities from each arm's generator, paired by seed.

DOWNSTREAM = dict(identities=20, images=16, max_uses=1)  # each real class in at most one far pair
DOWNSTREAM_RESULTS = RESULTS / "downstream"


def _ablation():
    """experiments/ablation.py as a module (experiments/ is not a package): its per-(arm, seed) run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scoremix_ablation", HERE / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def export_unit(out: Path, arm: str, scale: str, steps: int) -> tuple[Path, Path | None, str]:
    """(generator .pt, guide .pt or None, guidance) of a unit, as files the pipeline's generator stage takes."""
    network, guidance, guide_kind = ARMS[arm]
    run, exp = out / scale / f"gen-{network}", out / scale / "export"
    exp.mkdir(parents=True, exist_ok=True)
    if not NETWORKS[network].get("posthoc_ema"):
        return run / f"gen-{steps:07d}.pt", None, guidance
    from scoremix_plugin.generation.posthoc_ema import write_reconstruction

    def ema_at(step: int, net: str = network) -> Path:
        dest = exp / f"{net}-{step:07d}-sr{SIGMA_REL}.pt"
        if not dest.is_file():
            write_reconstruction(out / scale / f"gen-{net}", SIGMA_REL, dest, step)
        return dest

    guide = None
    if guide_kind == "snapshot":
        every = int(NETWORKS[network]["posthoc_every"])
        guide = ema_at(max(every, int(round(GUIDE_FRACTION * steps / every)) * every))
    elif guide_kind is not None:
        guide = ema_at(guide_steps(steps), guide_kind)
    return ema_at(steps), guide, guidance


def downstream_recipe(out: Path, scale: str, shared: dict) -> dict:
    """The pipeline recipe of the downstream runs: the scale's data and recogniser, the demo's sampler."""
    from scoremix_plugin.config import read_config_file, write_config_file

    sc = SCALES[scale]
    cfg = read_config_file(ROOT / "scoremix_plugin" / "recipes" / "demo" / "recogniser.py")
    cfg["num_epoch"] = sc["recogniser_epochs"]
    rec_cfg = write_config_file(
        out / scale / "downstream" / "recogniser.py",
        cfg,
        "experiments/generator_arms.py: the downstream recogniser (the demo's)",
    )
    return {
        "name": f"generator arms downstream ({scale})",
        "seed": 0,
        "device": "cpu",
        "data": {"toy": None, "rec": shared["data"]},
        "recogniser": str(rec_cfg),
        "generator": None,
        "generator_sigma_rel": None,
        "guide": None,
        "centres": {"batch_size": 64},
        "selection": {
            "strategy": "far",
            "space": "embedding",
            "num_identities": DOWNSTREAM["identities"],
            "max_uses": DOWNSTREAM["max_uses"],
            "k": 2,
            "weights": None,
        },
        "generation": {
            "images_per_identity": DOWNSTREAM["images"],
            "solver": SAMPLER["solver"],
            "steps": SAMPLER["num_steps"],
            "guidance": "cfg",
            "guidance_scale": CFG_SCALE,
            "mix_window": None,
            "shard_size": 1000,
            "batch_size": 32,
            "bf16": False,
        },
        "scoremix": {"ratio": None, "aug_real": None, "aug_synthetic": None, "same_steps": True},
        "merge": {"name": "scoremix_merged", "config_overrides": None},
        "verification": {"targets": None, "batch_size": 64, "ijb": None},
        "report": {"grid_pairs": 6, "grid_images": 6},
        "dataset_report": {"far": LEAK_FAR, "min_share": 0.5},
        "quality_gate": False,
        "stages": [],
        "_path": str(HERE / "generator_arms.py"),
    }


def run_downstream(
    out: Path, units: list[tuple[str, str, int]], seeds: list[int], scales: tuple[str, ...] = ()
) -> None:
    """Per seed: the baseline recogniser, then + far ScoreMix identities from each unit's generator.

    Everything but the generator is shared: data, selection rule, recogniser config and steps (same_steps),
    so the paired difference to the baseline of the same seed measures the generator. Resumable: a finished
    (arm, seed) has ``RESULTS/downstream/<name>-s<seed>.json`` and is skipped.
    """
    import copy

    from easydict import EasyDict as edict

    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.pipeline import STAGES, Context, run_stages, verify_recogniser

    abl = _ablation()
    by_name = {s.name: s for s in STAGES}
    for scale in sorted({u[1] for u in units} | set(scales)):  # a scale alone: its baselines only
        shared = prepare_scale(out, scale)
        base_recipe = downstream_recipe(out, scale, shared)
        root = out / scale / "downstream"
        base_ctx = Context(recipe=edict(copy.deepcopy(base_recipe)), out=root / "shared", progress=False)
        base_ctx.out.mkdir(parents=True, exist_ok=True)
        run_stages([by_name["data"], by_name["baseline"]], base_ctx, log=log)
        for seed in seeds:
            dest = DOWNSTREAM_RESULTS / f"baseline-{scale}-s{seed}.json"
            if dest.is_file():
                continue
            ctx = base_ctx  # the shared baseline IS seed 0's (same config and seed): verified, not retrained
            if seed != 0:
                recipe = edict(copy.deepcopy(base_recipe))
                ctx = Context(recipe=recipe, out=root / f"baseline-s{seed}", progress=False)
                ctx.out.mkdir(parents=True, exist_ok=True)
                recipe.recogniser = str(abl.seeded_recogniser_config(base_recipe["recogniser"], ctx.out, seed))
                ctx.adopt(base_ctx, ("data",))
                run_stages([by_name["baseline"]], ctx, log=log)
            res = verify_recogniser(ctx, ctx.result("baseline"))
            write_json_atomic(
                dest,
                {
                    "arm": "baseline",
                    "scale": scale,
                    "seed": seed,
                    "accuracy": {t: float(r.accuracy_mean) for t, r in res.items()},
                    "accuracy_std_folds": {t: float(r.accuracy_std) for t, r in res.items()},
                },
            )
            log(
                f"downstream baseline {scale} seed {seed}: "
                + ", ".join(f"{t} {100 * r.accuracy_mean:.2f}" for t, r in res.items())
            )
        for arm, sc_name, steps in units:
            if sc_name != scale:
                continue
            name = f"{arm}-{scale}-{steps}"
            todo = [s for s in seeds if not (DOWNSTREAM_RESULTS / f"{name}-s{s}.json").is_file()]
            if not todo:
                continue
            gen, guide, guidance = export_unit(out, arm, scale, steps)
            recipe = copy.deepcopy(base_recipe)
            recipe.update(generator=str(gen), guide=None if guide is None else str(guide))
            recipe["generation"]["guidance"] = guidance
            ctx = Context(recipe=edict(recipe), out=root / name / "shared", progress=False)
            ctx.out.mkdir(parents=True, exist_ok=True)
            ctx.adopt(base_ctx, ("data", "baseline"))
            run_stages([by_name["generator"], by_name["centres"]], ctx, log=log)
            for seed in todo:
                r = abl.run_arm(
                    name,
                    seed,
                    ctx,
                    root / name,
                    progress=False,
                    results_dir=root / name / "results",
                    arms={name: {"strategy": "far", "space": "embedding"}},
                    dataset_report=True,
                    extra=lambda c, d: {"dataset_report": c.result("dataset_report").headline},
                )
                write_json_atomic(
                    DOWNSTREAM_RESULTS / f"{name}-s{seed}.json",
                    r
                    | {
                        "unit": name,
                        "scale": scale,
                        "guidance": guidance,
                        "guide": None if guide is None else guide.name,
                    },
                )
                log(
                    f"downstream {name} seed {seed}: "
                    + ", ".join(f"{t} {100 * a:.2f}" for t, a in r["accuracy"].items())
                )


def summarise_downstream() -> str:
    """Per unit and target: mean accuracy and the paired difference to the same seed's baseline (t-interval)."""
    from scipy.stats import t as student

    rows = [json.loads(p.read_text()) for p in sorted(DOWNSTREAM_RESULTS.glob("*.json"))]
    base = {(r["scale"], r["seed"]): r for r in rows if r["arm"] == "baseline"}
    units = sorted({r["unit"] for r in rows if r["arm"] != "baseline"})
    targets = sorted({t for r in rows for t in r["accuracy"]})
    head = "| generator | seeds | " + " | ".join(f"{t} | Δ {t} (95% CI, wins)" for t in targets) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for scale in sorted({s for s, _ in base}):
        seeds = sorted(s for sc, s in base if sc == scale)
        acc = {t: np.array([base[(scale, s)]["accuracy"][t] for s in seeds]) for t in targets}
        lines.append(
            f"| baseline ({scale}) | {len(seeds)} | "
            + " | ".join(f"{100 * acc[t].mean():.2f} | -" for t in targets)
            + " |"
        )
    for unit in units:
        runs = {r["seed"]: r for r in rows if r.get("unit") == unit}
        scale = next(iter(runs.values()))["scale"]
        seeds = sorted(s for s in runs if (scale, s) in base)
        cells = []
        for t in targets:
            a = np.array([runs[s]["accuracy"][t] for s in seeds])
            d = a - np.array([base[(scale, s)]["accuracy"][t] for s in seeds])
            half = (
                float(student.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            )
            cells.append(
                f"{100 * a.mean():.2f} | {100 * d.mean():+.2f} ± {100 * half:.2f} ({int((d > 0).sum())}/{len(d)})"
            )
        lines.append(f"| {unit} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def leak_table(units: list[dict]) -> str:
    """Per unit: identities leaking into the training classes among far score-mixes, near score-mixes and far
    condition-mixes (as a near-copy of a source / another class), and the mean best source cosine."""
    head = (
        "| scale | arm | steps | threshold | far: leaked / ids (source, other) | near: leaked / ids (source, other) "
        "| cond-mix far: leaked / ids | best source cos far / near |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for u in units:
        f, n, c = u["mix_score"], u.get("mix_score_near"), u["mix_condition"]
        if n is None or "leaked_identities" not in f:
            continue  # measured before the leak counts existed

        def cell(m):
            return f"{m['leaked_identities']} / {m['identities']} ({m['leaks_source']}, {m['leaks_other']})"

        lines.append(
            f"| {u['scale']} | {u['arm']} | {u['steps']} | {u['leak_threshold']['cosine']:.3f} | {cell(f)} "
            f"| {cell(n)} | {c['leaked_identities']} / {c['identities']} | "
            f"{f['source_cos_max_mean']:.3f} / {n['source_cos_max_mean']:.3f} |"
        )
    return "\n".join(lines)


def gate_far(unit: dict) -> str | None:
    """The FAR the gate judges a unit at: the first of GATE_FARS where at least half the real identities are
    recognised (the gate is conclusive there); None when there is none."""
    from scoremix_plugin.datareport.leaks import gate_conclusive

    at = unit["real"]["recognised_at"]
    return next((f for f in at if gate_conclusive(at[f]["share"])), None)


def gate_table(units: list[dict]) -> str:
    """Per unit: identities recognised as themselves by the quality gate's rule (datareport/leaks.py), and whether
    the gate passes (at least half the real identities' share), for single-class samples and the far mixes, at
    the first FAR where the gate is conclusive. "Become identities" in docs/results.md means a pass."""
    from scoremix_plugin.datareport.leaks import gate_passes

    head = (
        "| scale | arm | steps | train CPU min | FAR (cosine) | real recognised | single-class recognised "
        "| far score-mix recognised | far condition-mix recognised |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for u in units:
        if "recognised_at" not in u["single"]:
            continue  # measured before the gate's rule was applied to units
        far = gate_far(u)
        if far is None:
            lines.append(
                f"| {u['scale']} | {u['arm']} | {u['steps']} | {u['train_cpu_s'] / 60:.1f} | none conclusive | | | | |"
            )
            continue
        real = u["real"]["recognised_at"][far]
        cos = next(g["cosine"] for g in u["gate_thresholds"] if f"{g['far']:g}" == far)

        def cell(m):
            m = m["recognised_at"][far]
            verdict = "pass" if gate_passes(m["share"], real["share"]) else "fail"
            return f"{m['recognised']} / {m['of']} ({100 * m['share']:.0f} %, {verdict})"

        lines.append(
            f"| {u['scale']} | {u['arm']} | {u['steps']} | {u['train_cpu_s'] / 60:.1f} | {far} ({cos:.3f}) "
            f"| {real['recognised']} / {real['of']} ({100 * real['share']:.0f} %) "
            f"| {cell(u['single'])} | {cell(u['mix_score'])} | {cell(u['mix_condition'])} |"
        )
    return "\n".join(lines)


def summarise() -> dict:
    """Tables (Markdown) and curves (PNG) of every finished unit: RESULTS/summary.md, summary.json, curves.png."""
    from scoremix_plugin.io_utils import atomic_path, write_json_atomic, write_text_atomic

    units = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if p.name != "summary.json"]
    units.sort(key=lambda u: (u["scale"], list(ARMS).index(u["arm"]) if u["arm"] in ARMS else 99, u["steps"]))
    head = (
        "| scale | arm | steps | train CPU min | top-1 | intra | Frechet | score-mix intra | score-mix novelty "
        "| score-mix src | cond-mix intra | cond-mix novelty | cond-mix src |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    reals = {}
    for u in units:
        s, ms, mc = u["single"], u["mix_score"], u["mix_condition"]
        reals[u["scale"]] = u["real"]
        lines.append(
            f"| {u['scale']} | {u['arm']} | {u['steps']} | {u['train_cpu_s'] / 60:.1f} | {s['top1']:.3f} | "
            f"{s['intra']:.3f} | {s['frechet']:.3f} | {ms['intra']:.3f} | {ms['nearest_real_cos']:.3f} | "
            f"{ms['nearest_real_is_source']:.2f} | {mc['intra']:.3f} | {mc['nearest_real_cos']:.3f} | "
            f"{mc['nearest_real_is_source']:.2f} |"
        )
    for scale, r in sorted(reals.items()):
        lines.append(
            f"| {scale} | real images | - | - | {r['top1']:.3f} | {r['intra']:.3f} | {r['frechet']:.3f} | | | | | | |"
        )
    table = "\n".join(lines)
    leaks = leak_table(units)
    gates = gate_table(units)
    downstream = summarise_downstream() if DOWNSTREAM_RESULTS.is_dir() else ""
    write_text_atomic(
        RESULTS / "summary.md",
        "# Generator arms (experiments/generator_arms.py)\n\n" + table + "\n\n"
        "## Training leaks of the mixes (dataset report rule, one threshold at FAR "
        f"{LEAK_FAR:g})\n\n" + leaks + "\n"
        "\n## Identities recognised as themselves (the quality gate's rule, at the first FAR where it is "
        "conclusive)\n\n"
        + gates
        + "\n"
        + (f"\n## Downstream: baseline vs + far ScoreMix identities\n\n{downstream}\n" if downstream else ""),
    )
    write_json_atomic(
        RESULTS / "summary.json",
        {
            "units": [f"{u['arm']}-{u['scale']}-{u['steps']}" for u in units],
            "table_markdown": table,
            "leaks_markdown": leaks,
            "gate_markdown": gates,
            "downstream_markdown": downstream,
        },
    )
    if units:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        scales = sorted({u["scale"] for u in units})
        keys = (("top1", "nearest-centre top-1"), ("intra", "intra-class cosine"), ("frechet", "Frechet distance"))
        fig, axes = plt.subplots(len(scales), 3, figsize=(12, 3.4 * len(scales)), squeeze=False)
        for i, scale in enumerate(scales):
            for j, (key, title) in enumerate(keys):
                ax = axes[i, j]
                for arm in ARMS:
                    pts = [
                        (u["train_cpu_s"] / 60, u["single"][key])
                        for u in units
                        if u["scale"] == scale and u["arm"] == arm
                    ]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=arm)
                if scale in reals:
                    ax.axhline(reals[scale][key], color="grey", ls="--", label="real images")
                ax.set_title(f"{scale}: {title}", fontsize=9)
                ax.set_xlabel("generator training CPU minutes (1 thread)")
                ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(RESULTS / "curves.png") as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
    print(table)
    return {"units": units, "table": table}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("run", "auto", "recogniser", "train", "downstream", "summary"))
    p.add_argument("--units", nargs="+", default=[], help="downstream: ARM:SCALE:STEPS generators to compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="downstream: seeds")
    p.add_argument("--arm", choices=list(ARMS))
    p.add_argument("--network", choices=list(NETWORKS), help="train only (command train)")
    p.add_argument("--scale", choices=list(SCALES))
    p.add_argument("--steps", type=int, nargs="+", default=[])
    p.add_argument("--out", default=str(HERE / "runs" / "generator_arms"))
    p.add_argument("--plan", nargs="+", default=[], help="auto: units ARM:SCALE:STEPS in priority order")
    p.add_argument("--deadline", default=None, help="auto: stop starting units at this wall-clock HH:MM")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if args.command == "run":
        for st in args.steps:
            run_unit(out, args.arm, args.scale, st)
    if args.command == "auto":
        # Measure the planned units in order as their generators become ready, until all are done or the
        # deadline (a wall-clock HH:MM) passes; a unit already started finishes.
        plan = [u.split(":") for u in args.plan]
        while True:
            todo = [(a, sc, int(st)) for a, sc, st in plan if not (RESULTS / f"{a}-{sc}-{st}.json").is_file()]
            if not todo or (args.deadline and time.strftime("%H:%M") >= args.deadline):
                break
            # The first unit whose generator is ready (run_unit returns None for one that is not); none: wait.
            if not any(run_unit(out, a, sc, st) is not None for a, sc, st in todo):
                time.sleep(30)
        summarise()
    if args.command == "summary":
        summarise()
    if args.command == "downstream":
        run_downstream(
            out,
            [(a, sc, int(st)) for a, sc, st in (u.split(":") for u in args.units)],
            args.seeds,
            (args.scale,) if args.scale else (),
        )
        summarise()
    if args.command == "recogniser":
        prepare_scale(out, args.scale)
    if args.command == "train":
        shared = {"data": str(prepare_data(out, args.scale))}
        for s in args.steps:
            train_to(out, args.scale, args.network, s, shared)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
