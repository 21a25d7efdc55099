"""Dataset report at scale: 10^6 impostor pairs, and a 10^4-identity leak check vs 10^5 evaluation images.

    python -m benchmarks.dataset_report                  # the sizes of issue 16, 2 BLAS threads
    python -m benchmarks.dataset_report --images 20000 --identities 2000 --eval 20000 --threads 1

Random unit embeddings with identity structure (512 dims). Each part runs in its own subprocess so its peak
resident memory (ru_maxrss) is its own. Baselines, side by side:

- pairs: the report's path (seeded genuine + impostor sampling, chunked scoring, EER, FNMR at three FMRs,
  d', FDR, the FAR threshold) vs one block matmul that yields as many scores (``X[:1000] @ X[:1000].T``:
  the cheapest way to get 10^6 cosines at all, though not a uniform sample);
- leak check: ``leaks.evaluation_leaks`` (blocked top-1 + threshold count) vs the bare blocked matmul of the
  same shape (the FLOPs any exact check needs). The whole 10^4 x 10^5 float32 matrix would be 4 GB; the
  blocks keep it at 64 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

D = 512


def _world(n_images: int, per: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = n_images // per
    mu = rng.standard_normal((ids, D), dtype=np.float32)
    x = np.repeat(mu / np.linalg.norm(mu, axis=1, keepdims=True), per, 0)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(1.5 / np.sqrt(D))  # EER of a few per cent
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, np.repeat(np.arange(ids), per)


def _pairs(args) -> dict:
    import time

    from scoremix_plugin.datareport import metrics as M

    emb, labels = _world(args.images, args.per, 0)
    t0 = time.perf_counter()
    gp, ip = M.genuine_pairs(labels, 10**6, 0), M.impostor_pairs(labels, args.pairs, 0)
    t1 = time.perf_counter()
    g, i = M.pair_scores(emb, gp), M.pair_scores(emb, ip)
    t2 = time.perf_counter()
    st = M.score_stats(g, i, genuine_total=gp.total, impostor_total=ip.total)
    th = M.threshold_at_far(i, 1e-4)
    t3 = time.perf_counter()
    side = int(round(args.pairs**0.5))
    tb = time.perf_counter()
    block = emb[:side] @ emb[:side].T
    float(block[0, 0])
    t_base = time.perf_counter() - tb
    return {
        "images": args.images,
        "genuine_pairs": len(g),
        "impostor_pairs": len(i),
        "sample_s": round(t1 - t0, 3),
        "score_s": round(t2 - t1, 3),
        "stats_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 3),
        "baseline_block_matmul_s": round(t_base, 4),
        "x_baseline": round((t3 - t0) / max(t_base, 1e-9), 1),
        "eer": round(st.eer, 5),
        "threshold_1e-4": round(th.cosine, 4),
    }


def _leaks(args) -> dict:
    import time

    import numpy as np

    from scoremix_plugin.datareport import leaks as L
    from scoremix_plugin.datareport import metrics as M

    syn, syn_lab = _world(args.identities * args.per, args.per, 1)
    ev, _ = _world(args.eval, 2, 2)
    _, means = M.identity_means(syn, syn_lab)
    del syn
    t0 = time.perf_counter()
    found = L.evaluation_leaks(np.arange(len(means)), means, {"eval": ev}, threshold=0.3)
    t_leak = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r0 in range(0, len(means), 1024):  # the same blocks, nothing kept
        for c0 in range(0, len(ev), 16384):
            s = means[r0 : r0 + 1024] @ ev[c0 : c0 + 16384].T
            float(s[0, 0])
    t_mm = time.perf_counter() - t0
    return {
        "identities": len(means),
        "eval_images": len(ev),
        "leaks_found": len(found),
        "seconds": round(t_leak, 2),
        "baseline_blocked_matmul_s": round(t_mm, 2),
        "x_baseline": round(t_leak / max(t_mm, 1e-9), 2),
        "full_matrix_gb_avoided": round(len(means) * len(ev) * 4 / 2**30, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000, help="images of the set whose pairs are scored")
    ap.add_argument("--per", type=int, default=5, help="images per identity")
    ap.add_argument("--pairs", type=int, default=10**6, help="impostor pairs")
    ap.add_argument("--identities", type=int, default=10_000, help="synthetic identities in the leak check")
    ap.add_argument("--eval", type=int, default=100_000, help="evaluation images in the leak check")
    ap.add_argument("--threads", type=int, default=2, help="BLAS threads")
    ap.add_argument("--_part", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._part is not None:
        import resource

        res = {"pairs": _pairs, "leaks": _leaks}[args._part](args)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res["peak_rss_mb"] = round(ru.ru_maxrss / 1024)
        res["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)  # wall seconds lie on a shared machine; CPU ones less
        print(json.dumps(res))
        return 0
    env = {
        **os.environ,
        **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    flags = [
        f"--images={args.images}",
        f"--per={args.per}",
        f"--pairs={args.pairs}",
        f"--identities={args.identities}",
        f"--eval={args.eval}",
        f"--threads={args.threads}",
    ]
    for part in ("pairs", "leaks"):
        r = subprocess.run(
            [sys.executable, "-m", "benchmarks.dataset_report", *flags, f"--_part={part}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{part}: " + ", ".join(f"{k} {v}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
