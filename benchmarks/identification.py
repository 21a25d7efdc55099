"""Identification scoring at real sizes: ours vs the reference functions, side by side.

    python benchmarks/identification.py --adaface tinyface_helper.py --insightface ijb_1n.py
    python benchmarks/identification.py                 # ours only (no reference files at hand)

Cases (random unit features with identity structure, seed 0, D = 512):
- TinyFace-sized: 3,728 probes of 157 identities against 4,443 matches + 153,428 distractors (float32);
  reference = AdaFace ``validation_lq/tinyface_helper.py``'s ``inner_product`` + ``DIR_FAR`` (ranks 1, 5, 20);
- IJB-C-1:N-sized: 19,593 probe templates against 3,531 gallery templates (float64 template features);
  reference = insightface ``recognition/_evaluation_/ijb/ijb_1n.py``'s ``evaluation`` (rank 1/5/10, TPIR@FPIR).

The reference files are not part of this repository: pass their paths. Their functions are taken out with
``ast`` and run unmodified, with numpy's removed aliases (``np.bool`` ...) mapped to the builtins. Each side
runs in its own process, so its peak memory (ru_maxrss) is its own; the numbers (counts) must be identical.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "tinyface": dict(probes=3728, identities=157, matches=4443, distractors=153428),
    "ijbc_1n": dict(probes=19593, gallery=3531),
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tinyface_data(scale: float, dim: int = 512):
    s = {k: max(2, int(v * scale)) if k != "identities" else v for k, v in SIZES["tinyface"].items()}
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((s["identities"], dim))
    p_lab = np.r_[np.arange(s["identities"]), rng.integers(0, s["identities"], s["probes"] - s["identities"])]
    m_lab = np.r_[np.arange(s["identities"]), rng.integers(0, s["identities"], s["matches"] - s["identities"])]
    probes = _unit(centres[p_lab] * 0.35 + rng.standard_normal((p_lab.size, dim)) / np.sqrt(dim) * 50)
    matches = _unit(centres[m_lab] * 0.35 + rng.standard_normal((m_lab.size, dim)) / np.sqrt(dim) * 3)
    # float32 from the start: a float64 draw of 153k x 512 would itself set the process's peak memory
    gallery = np.empty((m_lab.size + s["distractors"], dim), dtype=np.float32)
    gallery[: m_lab.size] = matches
    gallery[m_lab.size :] = rng.standard_normal((s["distractors"], dim), dtype=np.float32)
    gallery[m_lab.size :] /= np.linalg.norm(gallery[m_lab.size :], axis=1, keepdims=True)
    g_lab = np.r_[m_lab, np.full(s["distractors"], -100)]
    return probes.astype(np.float32), p_lab, gallery, g_lab


def ijb_data(scale: float, dim: int = 512):
    s = {k: max(2, int(v * scale)) for k, v in SIZES["ijbc_1n"].items()}
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((s["gallery"], dim))
    p_sub = np.r_[np.arange(s["gallery"]), rng.integers(0, s["gallery"], max(0, s["probes"] - s["gallery"]))]
    gallery = _unit(centres * 0.5 + rng.standard_normal((s["gallery"], dim)) / np.sqrt(dim) * 2)
    probes = _unit(centres[p_sub] * 0.5 + rng.standard_normal((p_sub.size, dim)) / np.sqrt(dim) * 80)
    return probes, p_sub, gallery, np.arange(s["gallery"])


def _numpy_with_aliases():
    mod = types.ModuleType("numpy_with_aliases")
    mod.__getattr__ = lambda name: getattr(np, name)
    mod.int, mod.float, mod.bool, mod.object = int, float, bool, object
    return mod


def _functions(path: str, names: tuple[str, ...]) -> dict:
    import heapq
    import math

    tree = ast.parse(Path(path).read_text())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    ns: dict = {"np": _numpy_with_aliases(), "math": math, "heapq": heapq}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)
    return ns


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(case: str, side: str, scale: float, ref_path: str | None) -> dict:
    t0 = time.perf_counter()
    if case == "tinyface":
        probes, p_lab, gallery, g_lab = tinyface_data(scale)
        t_data, rss_data = time.perf_counter() - t0, _rss_mb()
        t0 = time.perf_counter()
        if side == "ours":
            from scoremix_plugin.verification.identification import cmc_counts, open_set_dir, search

            g = np.where(g_lab < 0, np.iinfo(np.int64).min, g_lab)
            stats = search(probes, p_lab, gallery, g)
            counts = cmc_counts(stats.rank, (1, 5, 20))
            open_set_dir(stats, (1e-3, 1e-2, 1e-1))
        else:
            ref = _functions(ref_path, ("inner_product", "DIR_FAR", "find_thresholds_by_FAR"))
            with contextlib.redirect_stdout(io.StringIO()):
                score_mat = ref["inner_product"](probes, gallery)
                label_mat = p_lab[:, None] == g_lab[None, :]
                dirs, _, _ = ref["DIR_FAR"](score_mat, label_mat, [1, 5, 20])
            counts = [int(round(float(d) * p_lab.size)) for d in dirs]
        result = {"cmc_count": counts, "probes": int(p_lab.size), "gallery": int(g_lab.size)}
    else:
        probes, p_sub, gallery, g_sub = ijb_data(scale)
        t_data, rss_data = time.perf_counter() - t0, _rss_mb()
        t0 = time.perf_counter()
        if side == "ours":
            from scoremix_plugin.verification.identification import cmc_counts, search, tpir_at_fpir

            stats = search(probes, p_sub, gallery, g_sub, keep_top=int(np.ceil(p_sub.size * 0.1)))
            counts = cmc_counts(stats.rank, (1, 5, 10))
            tpir = [t["tpir_count"] for t in tpir_at_fpir(stats, (0.01, 0.1))]
        else:
            ref = _functions(ref_path, ("evaluation", "gen_mask"))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                ref["evaluation"](probes, gallery, list(p_sub))  # gallery template k is subject k: mask = subject
            text, q = out.getvalue(), p_sub.size
            counts = [int(round(float(re.search(rf"top{k} = (\S+)", text).group(1)) * q)) for k in (1, 5, 10)]
            tpir = [int(round(float(m.group(1)) * q)) for m in re.finditer(r"pr = (\S+)", text)]
        result = {"rank_count": counts, "tpir_count": tpir, "probes": int(p_sub.size), "gallery": int(g_sub.size)}
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "data_seconds": t_data, "peak_rss_mb": peak_mb, "rss_after_data_mb": rss_data, **result}


def run_side(case: str, side: str, scale: float, ref_path: str | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, side, "--scale", str(scale)] + (
        ["--ref", ref_path] if ref_path else []
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adaface", help="AdaFace validation_lq/tinyface_helper.py (reference for TinyFace)")
    ap.add_argument("--insightface", help="insightface recognition/_evaluation_/ijb/ijb_1n.py (reference for IJB 1:N)")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor (1 = the real sizes)")
    ap.add_argument("--cases", default="tinyface,ijbc_1n")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.scale, args.ref)))
        return
    refs = {"tinyface": args.adaface, "ijbc_1n": args.insightface}
    report = {"scale": args.scale, "threads": os.environ.get("OMP_NUM_THREADS"), "cases": {}}
    for case in args.cases.split(","):
        ours = run_side(case, "ours", args.scale, None)
        ref = run_side(case, "reference", args.scale, refs[case]) if refs[case] else None
        report["cases"][case] = {"ours": ours, "reference": ref}
        print(f"{case} (scale {args.scale:g}):")
        for name, r in (("ours", ours), ("reference", ref)):
            if r is None:
                print(f"  {name:9s}: not run (no reference file given)")
            elif "error" in r:
                print(f"  {name:9s}: failed: {r['error']}")
            else:
                nums = {k: v for k, v in r.items() if k.endswith("_count")}
                print(
                    f"  {name:9s}: {r['seconds']:7.1f} s, peak RSS {r['peak_rss_mb']:7.0f} MB (features alone "
                    f"{r['rss_after_data_mb']:.0f} MB), {nums}"
                )
        if ref and "error" not in ref and "error" not in ours:
            same = all(ours[k] == ref[k] for k in ours if k.endswith("_count"))
            print(
                f"  ratio ours/reference: time {ours['seconds'] / ref['seconds']:.2f}, peak memory "
                f"{ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}; numbers identical: {same}"
            )
            report["cases"][case]["identical"] = same
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
