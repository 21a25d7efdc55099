"""Time and peak memory of exact far selection on random unit centres (512 dims).

    python benchmarks/selection.py                      # 10^4 and 10^5 classes
    python benchmarks/selection.py --sizes 10000 100000 200000 --device cuda

Each size runs in its own subprocess so its peak resident memory (ru_maxrss) is its own; the baseline
row is the time of ONE float32 C x D @ D x C block product pass (the matmul work every exact method
needs), so "x matmul" says how much the top-m lists, merging and the greedy walk add on top.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def _one(c: int, n: int, dim: int, max_uses: int, device: str | None, chunk: int) -> dict:
    import resource
    import time

    import numpy as np
    import torch

    from scoremix_plugin.synthesis.select import _greedy_certified, _torch_device

    rng = np.random.default_rng(0)
    x = rng.standard_normal((c, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dev = _torch_device(device)
    # Baseline: the upper-triangle block products alone.
    xt = torch.from_numpy(x).to(dev)
    t0 = time.perf_counter()
    for r0 in range(0, c, chunk):
        for c0 in range(r0, c, chunk):
            s = xt[r0 : r0 + chunk] @ xt[c0 : c0 + chunk].T
            float(s[0, 0])
    t_mm = time.perf_counter() - t0
    del s
    t0 = time.perf_counter()
    a, b, _, rounds = _greedy_certified(x, n, max_uses, 1.0, m=max_uses + 8, chunk=chunk, device=dev, progress=False)
    t_sel = time.perf_counter() - t0
    assert len(a) == n
    return {
        "classes": c,
        "identities": n,
        "seconds": round(t_sel, 2),
        "matmul_seconds": round(t_mm, 2),
        "rounds": rounds,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--fraction", type=float, default=0.25, help="identities = fraction * classes")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--max-uses", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--device", default=None)
    ap.add_argument("--_one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one is not None:
        n = int(args._one * args.fraction)
        print(json.dumps(_one(args._one, n, args.dim, args.max_uses, args.device, args.chunk)))
        return 0
    print(
        f"{'classes':>9} {'identities':>10} {'seconds':>8} {'matmul s':>8} {'x matmul':>8} {'rounds':>6} {'peak MB':>8}"
    )
    for c in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--_one",
            str(c),
            "--fraction",
            str(args.fraction),
            "--dim",
            str(args.dim),
            "--max-uses",
            str(args.max_uses),
            "--chunk",
            str(args.chunk),
        ]
        if args.device:
            cmd += ["--device", args.device]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(
            f"{r['classes']:>9} {r['identities']:>10} {r['seconds']:>8} {r['matmul_seconds']:>8} "
            f"{r['seconds'] / max(r['matmul_seconds'], 1e-9):>8.2f} {r['rounds']:>6} {r['peak_rss_mb']:>8}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
