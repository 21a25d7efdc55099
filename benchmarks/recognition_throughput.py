"""Training throughput of the recogniser backbones (backbone + margin head, SGD step) on this machine.

    python -m benchmarks.recognition_throughput [--batch 32] [--steps 5] [--threads 1 2]

Prints images/s per preset and the ratio to the host's r18 (the baseline). Random input, no data
loading: it measures the network only. Numbers on a shared machine are noisy; compare ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

from scoremix_plugin.backbones import get_backbone
from scoremix_plugin.recognition.losses import CombinedMarginLoss, MarginSoftmaxHead


def images_per_second(name: str, batch: int, steps: int, num_classes: int = 100) -> float:
    torch.manual_seed(0)
    net = get_backbone(name, num_features=128)
    head = MarginSoftmaxHead(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 128, num_classes)
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 112, 112) * 2 - 1
    y = torch.randint(0, num_classes, (batch,))
    for i in range(steps + 1):
        if i == 1:  # the first step pays for allocation and kernel selection
            t0 = time.perf_counter()
        loss = head(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--networks", nargs="+", default=["r18", "r18_cpu", "r10_tiny"])
    args = p.parse_args()
    for threads in args.threads:
        torch.set_num_threads(threads)
        base = None
        for name in args.networks:
            ips = images_per_second(name, args.batch, args.steps)
            base = base or ips
            print(f"threads={threads} {name:>9}: {ips:8.1f} img/s  ({ips / base:5.1f}x {args.networks[0]})", flush=True)


if __name__ == "__main__":
    main()
