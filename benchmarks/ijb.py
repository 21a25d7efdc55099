"""IJB-C-sized template verification from precomputed features: ours vs the host's approach, side by side.

    python benchmarks/ijb.py                                   # 230k images, 23k templates, 15.6M pairs, 512-d
    python benchmarks/ijb.py --images 23000 --templates 2300 --pairs 1560000   # a 10x smaller run
    python benchmarks/ijb.py --host-root ../shared/host/arcface_torch   # eval_ijbc.py's folder ($ARCFACE_ROOT)

A synthetic set shaped like IJB-C (templates of subjects, media of several frames, 1.25 per-mille genuine
pairs) is written once to a temporary folder; each approach then runs in its own process, limited to
``--threads`` threads (ours: scoring threads; both: BLAS/OpenMP), so its peak resident memory
(ru_maxrss) is its own. Both start from the same in-memory arrays (features [N, 2D] float32, faceness,
template / media ids, pairs) and compute the F1N1D1 scores, which must agree to 1e-12.

- ours: ``verification.ijb`` template features + chunked pair scores, then the ROC / TAR / AUC (timed apart);
- host: arcface_torch's own ``image2template_feature`` and ``verification``, taken out of its
  ``eval_ijbc.py`` with ``ast`` (the file runs an evaluation at import) and run unmodified, with ``np.int``
  (removed in numpy 1.24) supplied as ``int`` and scikit-learn's ``normalize`` (not installed here) as the
  same three numpy operations. Its ROC needs scikit-learn, so the ratio compares the part both run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

DEFAULT_HOST = Path(
    os.environ.get("ARCFACE_ROOT") or Path(__file__).resolve().parents[1].parent / "shared" / "host" / "arcface_torch"
)


def make_set(out: Path, images: int, templates: int, pairs: int, dim: int, seed: int = 0) -> None:
    """Write the synthetic set's arrays (``.npy``) into ``out``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    subjects = max(templates // 6, 2)  # IJB-C: ~3.5k subjects, ~6.6 templates each
    t_subject = rng.integers(0, subjects, templates)
    # Every template gets at least one image; the rest are spread with a long tail (video templates).
    weight = rng.lognormal(0.0, 1.2, templates)
    extra = rng.choice(templates, images - templates, p=weight / weight.sum())
    tid = np.concatenate([np.arange(templates), extra]).astype(np.int64)
    rng.shuffle(tid)
    mid = (tid * 16 + rng.integers(0, 8, images)).astype(np.int64)  # up to 8 media per template
    centres = rng.standard_normal((subjects, dim), dtype=np.float32)
    # Each template sees its subject through its own conditions (pose, quality): hard enough that TAR < 1.
    t_centres = centres[t_subject] + 1.3 * rng.standard_normal((templates, dim), dtype=np.float32)
    feats = np.empty((images, 2 * dim), dtype=np.float32)
    for a in range(0, images, 1 << 15):  # blocks: noise for one block at a time
        b = min(a + (1 << 15), images)
        base = t_centres[tid[a:b]]
        feats[a:b, :dim] = base + 3.0 * rng.standard_normal((b - a, dim), dtype=np.float32)
        feats[a:b, dim:] = feats[a:b, :dim] + 0.3 * rng.standard_normal((b - a, dim), dtype=np.float32)
    faceness = rng.uniform(0.3, 1.0, images).astype(np.float32)
    # Pairs: 1.25 per mille genuine (IJB-C: 19,557 of 15,658,489), the rest random impostor templates.
    n_gen = max(int(pairs * 0.00125), 1)
    by_subject = np.argsort(t_subject, kind="stable")
    first = np.searchsorted(t_subject[by_subject], np.arange(subjects))
    count = np.diff(np.r_[first, templates])
    s = rng.choice(np.flatnonzero(count >= 2), n_gen)
    i = rng.integers(0, count[s])
    j = (i + 1 + rng.integers(0, count[s] - 1)) % count[s]
    gen = np.stack([by_subject[first[s] + i], by_subject[first[s] + j]], 1)
    imp = rng.integers(0, templates, (pairs - n_gen, 2))
    imp = imp[t_subject[imp[:, 0]] != t_subject[imp[:, 1]]]
    while imp.shape[0] < pairs - n_gen:
        more = rng.integers(0, templates, (pairs - n_gen - imp.shape[0], 2))
        imp = np.concatenate([imp, more[t_subject[more[:, 0]] != t_subject[more[:, 1]]]])
    p = np.concatenate([gen, imp]).astype(np.int64)
    labels = np.r_[np.ones(n_gen, bool), np.zeros(pairs - n_gen, bool)]
    perm = rng.permutation(pairs)
    for name, arr in dict(feats=feats, faceness=faceness, tid=tid, mid=mid, pairs=p[perm], labels=labels[perm]).items():
        np.save(out / f"{name}.npy", arr)


def _load(folder: Path):
    import numpy as np

    return {k: np.load(folder / f"{k}.npy") for k in ("feats", "faceness", "tid", "mid", "pairs", "labels")}


def _host_functions(host_root: Path) -> dict:
    """The host's ``image2template_feature`` and ``verification``, unmodified, out of ``eval_ijbc.py``."""
    import numpy as np

    src_path = host_root / "eval_ijbc.py"
    tree = ast.parse(src_path.read_text())
    names = ("image2template_feature", "verification")
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    numpy_shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    numpy_shim.int = int  # np.int was an alias of int until numpy 1.24

    def normalize(x):  # scikit-learn's preprocessing.normalize (l2, rows): x / sqrt(einsum), zero rows kept
        x = np.array(x, dtype=np.float64)
        n = np.sqrt(np.einsum("ij,ij->i", x, x))
        n[n == 0] = 1.0
        x /= n[:, np.newaxis]
        return x

    sklearn_shim = types.SimpleNamespace(preprocessing=types.SimpleNamespace(normalize=normalize))
    ns = {"np": numpy_shim, "sklearn": sklearn_shim, "print": lambda *a, **k: None}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(src_path), "exec"), ns)
    return ns


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one(which: str, folder: Path, host_root: Path, threads: int) -> dict:
    import numpy as np

    d = _load(folder)
    base_mb = _peak_mb()
    from scoremix_plugin.verification.ijb import (
        IJB_FARS,
        host_tar,
        mode_features,
        pair_rows,
        roc_points,
        score_pairs,
        template_features,
        trapezoid_auc,
    )
    from scoremix_plugin.verification.protocol import tar_at_far

    t0, c0 = time.perf_counter(), time.process_time()
    feats = mode_features(d["feats"], d["faceness"], "F1N1D1")  # the host's same lines, in both runs
    if which == "ours":
        tf, ut = template_features(feats, d["tid"], d["mid"])
        t1 = time.perf_counter()
        scores = score_pairs(tf, pair_rows(ut, d["pairs"]), workers=threads)
    else:
        host = _host_functions(host_root)
        tf, ut = host["image2template_feature"](feats, d["tid"], d["mid"])
        t1 = time.perf_counter()
        scores = host["verification"](tf, ut, d["pairs"][:, 0], d["pairs"][:, 1])
    t2 = time.perf_counter()
    out = {
        "which": which,
        "template_s": round(t1 - t0, 2),
        "score_s": round(t2 - t1, 2),
        "template_and_score_s": round(t2 - t0, 2),
    }
    if which == "ours":
        fpr, tpr, _ = roc_points(d["labels"], scores)
        tar = host_tar(fpr, tpr, IJB_FARS)
        strict = tar_at_far(-scores, d["labels"], IJB_FARS)
        auc = trapezoid_auc(fpr, tpr)
        out.update(
            roc_tar_auc_s=round(time.perf_counter() - t2, 2),
            tar=[round(t, 4) for t in tar],
            tar_strict=[round(strict[f].tar, 4) for f in IJB_FARS],
            auc=round(auc, 6),
        )
    out.update(
        total_s=round(time.perf_counter() - t0, 2),
        cpu_s=round(time.process_time() - c0, 2),
        input_mb=round(base_mb),
        peak_rss_mb=round(_peak_mb()),
    )
    np.save(folder / f"scores_{which}.npy", scores)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=230_000)
    ap.add_argument("--templates", type=int, default=23_000)
    ap.add_argument("--pairs", type=int, default=15_600_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--host-root", type=Path, default=DEFAULT_HOST, help="arcface_torch folder holding eval_ijbc.py")
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--_one", choices=["ours", "host"], help=argparse.SUPPRESS)
    ap.add_argument("--_folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        print(json.dumps(_one(args._one, args._folder, args.host_root, args.threads)))
        return 0
    import numpy as np

    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        OPENBLAS_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
    )
    runs = ["ours"] + ([] if args.skip_host else ["host"])
    if "host" in runs and not (args.host_root / "eval_ijbc.py").is_file():
        print(f"host not found at {args.host_root} (--host-root); running ours only", file=sys.stderr)
        runs = ["ours"]
    with tempfile.TemporaryDirectory(prefix="ijb-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        make_set(folder, args.images, args.templates, args.pairs, args.dim)
        print(
            f"synthetic set: {args.images} images, {args.templates} templates, {args.pairs} pairs, {args.dim}-d "
            f"({time.perf_counter() - t0:.0f} s to make); {args.threads} threads per run",
            flush=True,
        )
        results = {}
        for which in runs:
            cmd = [
                sys.executable,
                __file__,
                "--_one",
                which,
                "--_folder",
                str(folder),
                "--host-root",
                str(args.host_root),
                "--threads",
                str(args.threads),
            ]
            r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            results[which] = json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps(results[which]), flush=True)
        print(
            f"\n{'run':>5} {'templates s':>11} {'scores s':>9} {'ROC+TAR s':>9} {'total s':>8} {'CPU s':>7} "
            f"{'peak MB':>8} {'input MB':>8}"
        )
        for which, r in results.items():
            print(
                f"{which:>5} {r['template_s']:>11} {r['score_s']:>9} {r.get('roc_tar_auc_s', '-'):>9} "
                f"{r['total_s']:>8} {r['cpu_s']:>7} {r['peak_rss_mb']:>8} {r['input_mb']:>8}"
            )
        if "host" in results:
            diff = float(np.max(np.abs(np.load(folder / "scores_ours.npy") - np.load(folder / "scores_host.npy"))))
            o, h = results["ours"], results["host"]
            print(f"\nscores max |ours - host| = {diff:.3g}")
            print(
                f"template features: host / ours = {h['template_s'] / max(o['template_s'], 1e-9):.1f}x; "
                f"pair scores: {h['score_s'] / max(o['score_s'], 1e-9):.2f}x; "
                f"both: {h['template_and_score_s'] / max(o['template_and_score_s'], 1e-9):.2f}x; "
                f"peak memory host / ours = {h['peak_rss_mb'] / max(o['peak_rss_mb'], 1):.2f}x"
            )
            if diff > 1e-12:
                print("SCORES DIFFER", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
