"""ScoreMix sampling throughput: images/s for a K-way mix (K = 1, 2, 3), with and without CFG.

    python -m benchmarks.sampler [--preset tiny-cpu] [--steps 8] [--batch 16] [--threads 1]
    python -m benchmarks.sampler --ckpt work_dirs/generator/generator.pt --device cuda --bf16

The baseline is the single-class sample (K = 1, no guidance). A K-way mix goes through one batched
forward of K*B inputs per solver stage, so its cost ratio is about K: "per condition" is that ratio
over K, 1.00 for exactly linear cost. On a CPU whose cores one batch already fills it sits near
1 (slightly above in fp32, where the bigger batch leaves the caches); on a GPU batching makes it
well below 1. With --device cuda, FLOPs per forward are counted with
torch.utils.flop_counter and the achieved TFLOP/s is printed (and the share of the card's dense
bf16 peak when the card is known). Untrained weights are used unless --ckpt is given: speed does
not depend on the weights. On a shared machine numbers are noisy; compare the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

from scoremix_plugin.generation.sampler import image_generator, network_evaluations, sample

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets (SXM parts).
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def build(args) -> torch.nn.Module:
    if args.ckpt:
        from scoremix_plugin.generation.checkpoint import load_generator

        return load_generator(args.ckpt, device=args.device)[0]
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import build_network, network_kwargs, network_resolution

    torch.manual_seed(0)
    kw = network_kwargs(args.preset, args.num_classes)
    return (
        EDMPrecond(build_network(kw), num_classes=args.num_classes, resolution=network_resolution(kw))
        .to(args.device)
        .eval()
        .requires_grad_(False)
    )


def flops_per_forward(denoiser, n: int, device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    r = denoiser.resolution
    x, s, c = (
        torch.randn(n, 3, r, r, device=device),
        torch.ones(n, device=device),
        torch.zeros(n, dtype=torch.long, device=device),
    )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        denoiser(x, s, c)
    return counter.get_total_flops()


def run_case(denoiser, k: int, guidance: str, args) -> float:
    """Seconds per batch of args.batch images (median of args.repeats, after one warm-up)."""
    B = args.batch
    classes = torch.stack([torch.arange(k) + i for i in range(B)]) % denoiser.num_classes
    weights = torch.full((B, k), 1.0 / k)
    times = []
    for rep in range(args.repeats + 1):
        gens = [image_generator(0, i, rep, args.device) for i in range(B)]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(
            denoiser,
            classes,
            weights,
            generators=gens,
            num_steps=args.steps,
            solver=args.solver,
            guidance=guidance,
            guidance_scale=2.5 if guidance == "cfg" else 1.0,
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if rep:  # the first run pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny-cpu")
    p.add_argument("--ckpt", help="a trained checkpoint instead of an untrained preset")
    p.add_argument("--num-classes", type=int, default=50)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--solver", default="heun", choices=("heun", "euler"))
    p.add_argument("--batch", type=int, default=16, help="images per sample() call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    denoiser = build(args)
    denoiser.amp_dtype = torch.bfloat16 if args.bf16 else None
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"device {name}; preset {args.preset if not args.ckpt else args.ckpt}; {denoiser.resolution} px; "
        f"{args.solver}-{args.steps}; batch {args.batch}; bf16 {args.bf16}"
    )
    header = (
        f"{'K':>2} {'guidance':>8} {'s/batch':>8} {'images/s':>9} {'NFE/image':>9} {'cost vs K=1':>11} "
        f"{'per condition':>13}"
    )
    cuda = args.device.startswith("cuda")
    if cuda:
        header += f" {'TFLOP/s':>8} {'% peak':>7}"
    print(header)
    peak = next((v for key, v in BF16_PEAK_TFLOPS.items() if key in name), None) if cuda else None
    for guidance in ("none", "cfg"):
        base = None
        for k in args.ks:
            t = run_case(denoiser, k, guidance, args)
            base = base if base is not None else (t if k == 1 else None)
            nfe = network_evaluations(args.steps, args.solver, k, guidance, 2.5 if guidance == "cfg" else 1.0)
            ratio = t / base if base else float("nan")
            line = f"{k:>2} {guidance:>8} {t:>8.3f} {args.batch / t:>9.1f} {nfe:>9d} {ratio:>11.2f} {ratio / k:>13.2f}"
            if cuda:
                per_forward = flops_per_forward(denoiser, args.batch * (k + (guidance == "cfg")), args.device)
                stages = 2 * args.steps - 1 if args.solver == "heun" else args.steps
                tflops = per_forward * stages / t / 1e12
                line += f" {tflops:>8.2f} {100 * tflops / peak:>6.1f}%" if peak else f" {tflops:>8.2f} {'?':>7}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
