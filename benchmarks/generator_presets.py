"""Generator presets side by side: parameters, forward FLOPs per image, and CPU seconds per training step.

    python -m benchmarks.generator_presets [--presets tiny-cpu,edm2-cpu] [--batch 32] [--steps 20] [--threads 1]
    python -m benchmarks.generator_presets --presets gpu-112,edm2-xs,edm2-s --steps 0   # FLOPs only

The baseline is the first preset. A training step is what ``train-generator`` does per step (forward,
backward, Adam, EMA) at the preset's resolution, bf16 autocast off or on (--bf16). The presets' steps are
interleaved (A, B, A, B, ...) so a shared machine's load hits both alike; the ratio is what to read.
FLOPs per forward are counted with torch.utils.flop_counter (multiply-add = 2 FLOPs) on one image.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def build(preset: str, num_classes: int):
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import build_network, network_kwargs, network_resolution

    torch.manual_seed(0)
    kw = network_kwargs(preset, num_classes)
    return EDMPrecond(build_network(kw), num_classes=num_classes, resolution=network_resolution(kw))


def flops_per_forward(denoiser) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    r = denoiser.resolution
    x, s, c = torch.randn(1, 3, r, r), torch.ones(1), torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        denoiser.eval()(x, s, c)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny-cpu,edm2-cpu")
    p.add_argument("--num-classes", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps per preset (0: FLOPs and parameters only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from scoremix_plugin.generation.edm import edm_loss, sample_training_sigma

    names = args.presets.split(",")
    rows, runs = {}, {}
    for name in names:
        den = build(name, args.num_classes)
        params = sum(q.numel() for q in den.net.parameters())
        rows[name] = {"params": params, "gflop": flops_per_forward(den) / 1e9, "times": []}
        if args.steps:
            den.train()
            den.amp_dtype = torch.bfloat16 if args.bf16 else None
            ema = copy.deepcopy(den).requires_grad_(False)
            opt = torch.optim.Adam(den.parameters(), lr=1e-4)
            r = den.resolution
            y = torch.randn(args.batch, 3, r, r).clamp(-1, 1)
            labels = torch.randint(0, args.num_classes, (args.batch,))
            runs[name] = (den, ema, opt, y, labels)

    def step(den, ema, opt, y, labels):
        g = torch.Generator().manual_seed(0)
        sigma = sample_training_sigma(y.shape[0], generator=g)
        loss = edm_loss(den, y, labels, sigma, torch.randn(y.shape, generator=g)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, q in zip(ema.parameters(), den.parameters()):
                pe.lerp_(q, 0.001)

    for i in range(args.steps + 2 if args.steps else 0):  # two warm-up rounds
        for name in names:
            t = time.perf_counter()
            step(*runs[name])
            if i >= 2:
                rows[name]["times"].append(time.perf_counter() - t)
    base = names[0]
    print(
        f"batch {args.batch}, {args.threads} thread(s), bf16 {args.bf16}, {args.steps} interleaved steps each; "
        f"baseline {base}"
    )
    print(f"{'preset':<10} {'params':>12} {'GFLOP/fwd':>10} {'s/step':>8} {'ratio':>6}")
    for name in names:
        row = rows[name]
        t = statistics.median(row["times"]) if row["times"] else float("nan")
        tb = statistics.median(rows[base]["times"]) if rows[base]["times"] else float("nan")
        print(f"{name:<10} {row['params']:>12,} {row['gflop']:>10.3f} {t:>8.3f} {t / tb:>6.2f}")


if __name__ == "__main__":
    main()
