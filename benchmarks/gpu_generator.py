"""The generator part of the GPU check: training steps/s and the ScoreMix sampler against the bf16 FLOP floor.

For each preset (every 112-px preset of ``generation.network.PRESETS`` unless ``--presets`` names
others), in the order that matters most when the budget runs out:

1. FLOPs of one forward per input, counted with ``torch.utils.flop_counter`` (eval, batch 2).
2. Training: the largest batch of ``train_batches`` whose bf16 step fits, then ``train_generator`` itself
   (data, EMA, checkpoint: the real loop) for ``train_steps``; steps/s from its log.
3. The sampler, eager, bf16 autocast: one class, a 2-way mix, the mix + CFG (w 2.5) and the mix +
   autoguidance (w 2.5; the guide is a second network of the same preset, an upper bound on EDM2's
   smaller guide). Images/s, network evaluations/s, TFLOP/s and the fraction of the card's peak,
   which is also the fraction of the "FLOP floor" (the images/s the card would give at its peak).
4. Variants of the 2-way mix: channels_last, torch.compile, and CUDA graphs (compile's
   "reduce-overhead" mode), each checked against eager's images for equality within bf16 noise.
5. The raw training step (forward, backward, Adam) in the same variants.

The networks are untrained (speed does not depend on the weights). A case that would end past the
part's deadline is recorded as skipped, not run.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GUIDANCE_SCALE = 2.5
# Seconds a variant needs before its first timed step (a U-Net's compilation takes about a minute): one
# that cannot finish inside the preset's share is skipped instead of being killed half-way.
MIN_SECONDS = {"eager": 0, "channels_last": 0, "compile": 90, "cuda_graphs": 90}
# name -> (K, guidance): the sampler cases; "mix2" is the headline (the paper's 2-way ScoreMix).
CASES = {"single": (1, "none"), "mix2": (2, "none"), "mix2_cfg": (2, "cfg"), "mix2_autoguidance": (2, "autoguidance")}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(preset: str, num_classes: int, device: str, seed: int = 0):
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import PRESETS, build_network, network_kwargs

    torch.manual_seed(seed)
    resolution = int(PRESETS[preset]["resolution"])  # every architecture's presets carry it
    net = build_network(network_kwargs(preset, num_classes, resolution))
    return EDMPrecond(net, num_classes=num_classes, resolution=resolution).to(device)


def apply_variant(denoiser, variant: str, device: str):
    """The same denoiser with its network run eagerly, channels_last, compiled, or compiled with CUDA graphs."""
    if variant == "channels_last":
        denoiser.net = denoiser.net.to(memory_format=torch.channels_last)
    elif variant == "compile":
        denoiser.net = torch.compile(denoiser.net)
    elif variant == "cuda_graphs":
        if not device.startswith("cuda"):
            raise NotImplementedError("CUDA graphs need a CUDA device")
        denoiser.net = torch.compile(denoiser.net, mode="reduce-overhead")
    elif variant != "eager":
        raise ValueError(f"unknown variant {variant!r}")
    return denoiser


def flops_per_input(denoiser, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    r = denoiser.resolution
    x = torch.randn(2, 3, r, r, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        denoiser(x, torch.ones(2, device=device), torch.zeros(2, dtype=torch.long, device=device))
    return counter.get_total_flops() / 2


def _oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def train_step_fn(denoiser, batch: int, device: str, bf16: bool = True) -> Callable[[], float]:
    """One EDM training step (forward, backward, Adam; bf16 autocast) on fixed random data."""
    from scoremix_plugin.generation.edm import edm_loss

    denoiser.train().requires_grad_(True)
    denoiser.amp_dtype = torch.bfloat16 if bf16 else None
    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-4)
    r = denoiser.resolution
    y = torch.rand(batch, 3, r, r, device=device) * 2 - 1
    labels = torch.randint(0, denoiser.num_classes, (batch,), device=device)
    sigma, noise = torch.rand(batch, device=device) * 5 + 0.01, torch.randn_like(y)

    def step() -> float:
        loss = edm_loss(denoiser, y, labels, sigma, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def batch_that_fits(preset: str, s, device: str) -> int:
    for b in s.train_batches:
        denoiser = build(preset, s.num_classes, device)
        try:
            step = train_step_fn(denoiser, b, device, s.bf16)
            step()
            _sync(device)
            return b
        except RuntimeError as e:
            if not _oom(e):
                raise
        finally:
            del denoiser
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    raise RuntimeError(f"no batch of {s.train_batches} fits a bf16 training step of {preset}")


def time_train_loop(preset: str, batch: int, s, work: Path, device: str) -> dict[str, Any]:
    """steps/s of train_generator itself (the real loop: loader, bf16, Adam, EMA, checkpoint)."""
    from scoremix_plugin.generation.network import PRESETS
    from scoremix_plugin.generation.train import train_generator

    out = work / f"generator_{preset}"
    shutil.rmtree(out, ignore_errors=True)  # a fresh log: the speeds below are read back from it
    log_every = max(1, s.train_steps // 6)
    t0 = time.perf_counter()
    train_generator(
        dict(
            rec=str(work / "toy"),
            preset=preset,
            resolution=int(PRESETS[preset]["resolution"]),
            batch_size=batch,
            total_steps=s.train_steps,
            log_every=log_every,
            checkpoint_every=s.train_steps,
            sample_every=None,
            sample_steps=2,
            sample_classes=1,
            cache_images=True,
            num_workers=0,
            output=str(out),
            device=device,
            bf16=s.bf16,
        )
    )
    rates = [r["steps_per_s"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    steady = rates[1:] if len(rates) > 1 else rates  # the first window holds start-up and cuDNN's autotuning
    sps = statistics.median(steady)
    return {
        "batch": batch,
        "steps": s.train_steps,
        "steps_per_s": round(sps, 3),
        "images_per_s": round(sps * batch, 1),
        "windows": [round(v, 3) for v in rates],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def time_sampler(denoiser, guide, case: str, s, device: str, deadline: float) -> dict[str, Any]:
    from scoremix_plugin.generation.sampler import image_generator, network_evaluations, sample

    k, guidance = CASES[case]
    B = s.sampler_batch
    classes = torch.stack([(torch.arange(k) * 7 + i) % denoiser.num_classes for i in range(B)])
    weights = torch.full((B, k), 1.0 / k)
    scale = GUIDANCE_SCALE if guidance != "none" else 1.0

    def run(steps: int, rep: int):
        gens = [image_generator(0, i, rep) for i in range(B)]
        _sync(device)
        t0 = time.perf_counter()
        images = sample(
            denoiser,
            classes,
            weights,
            generators=gens,
            num_steps=steps,
            solver="heun",
            guidance=guidance,
            guidance_scale=scale,
            guide=guide,
        )
        _sync(device)
        return time.perf_counter() - t0, images

    warm_s, _ = run(2, 0)  # allocation, cuDNN autotuning, compilation, graph capture: 3 network stages
    t_short, images = run(2, 0)  # CUDA graph trees record on the second run; this one is steady
    stages = 2 * s.sampler_steps - 1
    if s.sampler_steps > 2:
        estimate = t_short / 3 * stages
        if time.time() + estimate > deadline:
            return {"skipped": f"needs ~{estimate:.0f} s, past the part's budget", "warmup_s": round(warm_s, 1)}
        t, images = run(s.sampler_steps, 1)
    else:
        t = t_short
    nfe = network_evaluations(s.sampler_steps, "heun", k, guidance, scale)
    ips = B / t
    return {
        "images_per_s": round(ips, 2),
        "images_per_h": round(ips * 3600),
        "nfe_per_image": nfe,
        "network_evals_per_s": round(ips * nfe, 1),
        "seconds": round(t, 2),
        "warmup_s": round(warm_s, 1),
        "batch": B,
        "steps": s.sampler_steps,
        "_images": images,
    }


def sig(x: float, digits: int = 4) -> float:
    """Rounded to significant digits (a CPU smoke run's fractions are ~1e-4; a GPU's ~0.5)."""
    return float(f"{x:.{digits}g}")


def with_fractions(row: dict[str, Any], flops: float, peak_tflops: float | None) -> dict[str, Any]:
    if "network_evals_per_s" in row:
        tflops = row["network_evals_per_s"] * flops / 1e12
        row["tflops"] = sig(tflops)
        if peak_tflops:
            row["fraction_of_peak"] = sig(tflops / peak_tflops)
            row["floor_images_per_h"] = round(peak_tflops * 1e12 / (flops * row["nfe_per_image"]) * 3600)
    return row


def time_train_variant(
    preset: str, variant: str, batch: int, s, device: str, deadline: float, flops: float
) -> dict[str, Any]:
    denoiser = apply_variant(build(preset, s.num_classes, device), variant, device)
    step = train_step_fn(denoiser, batch, device, s.bf16)
    t0 = time.perf_counter()
    for _ in range(2):  # warm-up: compilation happens here
        step()
    _sync(device)
    warm = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    while n < 2 or (n < 20 and time.time() < deadline and time.perf_counter() - t0 < s.measure_seconds):
        step()
        n += 1
        _sync(device)
    sps = n / (time.perf_counter() - t0)
    out = {
        "steps_per_s": round(sps, 3),
        "images_per_s": round(sps * batch, 1),
        "batch": batch,
        "warmup_s": round(warm, 1),
        "tflops": sig(3 * flops * sps * batch / 1e12),
    }
    if s.peak_tflops:
        out["fraction_of_peak"] = sig(out["tflops"] / s.peak_tflops)
    return out


def part_generator(s, work: Path, deadline: float, save) -> None:
    device = "cuda" if s.device == "cuda" else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {
        "presets": {},
        "guidance_scale": GUIDANCE_SCALE,
        "peak_tflops": s.peak_tflops,
        "autocast": "bfloat16" if s.bf16 else "none (float32)",
    }
    for i, preset in enumerate(s.presets):
        # Each preset gets an equal share of what is left, so a new preset cannot starve the others.
        share_end = time.time() + (deadline - time.time()) / (len(s.presets) - i)
        row: dict[str, Any] = {}
        results["presets"][preset] = row

        def measure(store: dict[str, Any], key: str, fn: Callable[[], Any], variant: str = "eager") -> Any:
            """store[key] = fn(), or why not (no time left in the share, or the error): never raises."""
            need = 0 if s.smoke else MIN_SECONDS.get(variant, 0)
            if time.time() + need > share_end:
                store[key] = {
                    "skipped": f"needs ~{need} s (compilation), past this preset's share of the budget"
                    if need
                    else "part budget spent"
                }
            else:
                try:
                    store[key] = fn()
                except Exception as e:  # noqa: BLE001 - recorded in the report; the other cases still run
                    store[key] = {"error": f"{type(e).__name__}: {e}"[:500]}
            save(results)
            return store[key]

        # 1. Size and FLOPs.
        base = build(preset, s.num_classes, device).eval().requires_grad_(False)
        row["parameters_m"] = round(sum(p.numel() for p in base.net.parameters()) / 1e6, 2)
        row["resolution"] = base.resolution
        flops = flops_per_input(base, device)
        row["gflops_per_forward"] = round(flops / 1e9, 2)
        save(results)

        # 2. The real training loop at the largest batch that fits.
        batch = measure(row, "train_batch", lambda: batch_that_fits(preset, s, device))
        if isinstance(batch, int):
            train = measure(row, "train", lambda: time_train_loop(preset, batch, s, work, device))
            if "steps_per_s" in train:
                tflops = 3 * flops * train["images_per_s"] / 1e12  # forward + backward ~ 3 forwards
                train["tflops"] = sig(tflops)
                if s.peak_tflops:
                    train["fraction_of_peak"] = sig(tflops / s.peak_tflops)

        # 3. The sampler cases, eager.
        guide = build(preset, s.num_classes, device, seed=1).eval().requires_grad_(False)
        base.amp_dtype = guide.amp_dtype = torch.bfloat16 if s.bf16 else None
        sampler: dict[str, Any] = {}
        row["sampler"] = sampler
        images: dict[str, torch.Tensor] = {}

        def sampler_case(case: str, denoiser, variant: str = "eager") -> dict[str, Any]:
            out = time_sampler(denoiser, guide, case, s, device, share_end)
            result = out.pop("_images", None)
            if case == "mix2" and result is not None:  # the variants must give eager's images (bf16 noise aside)
                images[variant] = result
                if variant != "eager" and "eager" in images:
                    out["max_abs_diff_vs_eager"] = round(float((result - images["eager"]).abs().max()), 4)
            return with_fractions(out, flops, s.peak_tflops)

        for case in CASES:
            measure(sampler, case, lambda c=case: sampler_case(c, base))

        # 4-5. Variants, cheapest first: a compilation that would not finish in the share is skipped.
        variants: dict[str, Any] = {"eager": sampler.get("mix2", {})}
        train_variants: dict[str, Any] = {}
        row["sampler_variants_mix2"] = variants
        if isinstance(batch, int):
            row["train_step_variants"] = train_variants
        for variant in sorted(s.variants, key=lambda v: MIN_SECONDS.get(v, 0)):
            if variant != "eager":
                measure(
                    variants,
                    variant,
                    lambda v=variant: sampler_case("mix2", apply_variant(copy.deepcopy(base), v, device), v),
                    variant,
                )
            # torch.compile's CUDA graphs do not cover Adam's step: training is timed without that variant.
            if isinstance(batch, int) and variant != "cuda_graphs":
                measure(
                    train_variants,
                    variant,
                    lambda v=variant: time_train_variant(preset, v, batch, s, device, share_end, flops),
                    variant,
                )
        base = guide = None  # free the GPU memory before the next preset
        if device == "cuda":
            torch.cuda.empty_cache()
        save(results)
