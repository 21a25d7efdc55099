"""RecordIO write speed: this tree's FaceRecWriter against a baseline revision's, side by side, one core.

    python benchmarks/recordio_write.py                          # vs the writer before the speed-up
    python benchmarks/recordio_write.py --baseline-rev main~5    # any git revision of this repository
    python benchmarks/recordio_write.py --mxnet-python /opt/mx/bin/python   # also real mxnet, same file

The method is benchmarks/recordio_read.py's: --records 112x112 JPEG q95 records (~6.5 kB, face-like),
cycled from --distinct pictures, written with ``FaceRecWriter.write(jpeg_bytes, label)`` (IRHeader pack,
framing, .idx line, and at close the identity records, key 0, fsync and rename) into a fresh folder.
Each run is a child process pinned to one CPU; baseline and current runs alternate (A B A B ...), so
load from other processes hits both alike; rates are medians of --repeats runs, by wall clock and by
the child's CPU time. Both writers must produce byte-identical files (checked).

Without mxnet here, the ratio to mxnet 1.9.1 is estimated from issue 18's same-machine measurement of
the baseline writer (31k records/s) against mxnet (48k records/s): new / mxnet ~= (new / old) x 31 / 48.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# main just before the writer speed-up of issue 18 (its writer is the one the issue measured at 31k records/s).
BASELINE_REV = "084601adffd11798ed283c6906653bbd7f87b4b2"
ISSUE_OLD_PER_S, ISSUE_MXNET_PER_S = 31_000, 48_000

CHILD = r"""
import hashlib, json, os, struct, sys, time
from pathlib import Path
jpeg_file, out_dir, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import scoremix_plugin
from scoremix_plugin.recordio import FaceRecWriter
blob = Path(jpeg_file).read_bytes()
jpegs, pos = [], 0
while pos < len(blob):
    (k,) = struct.unpack_from("<I", blob, pos); jpegs.append(blob[pos + 4:pos + 4 + k]); pos += 4 + k
labels = [i // 20 for i in range(n)]  # 20 images per identity, as recordio_read.py
m = len(jpegs)
t, c = time.perf_counter(), time.process_time()
with FaceRecWriter(out_dir) as w:
    for i in range(n):
        w.write(jpegs[i % m], labels[i])
wall, cpu = time.perf_counter() - t, time.process_time() - c
digest = hashlib.sha256((out_dir / "train.rec").read_bytes() + (out_dir / "train.idx").read_bytes()).hexdigest()
print("RESULT " + json.dumps({"wall": n / wall, "cpu": n / cpu, "sha256": digest, "package": scoremix_plugin.__file__}))
"""


def _run_child(src_root: Path, jpeg_file: Path, out_dir: Path, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src_root), OMP_NUM_THREADS="1", OPENCV_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(jpeg_file), str(out_dir), str(n)],
        capture_output=True,
        text=True,
        env=env,
        cwd=src_root,
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"writer run failed ({src_root}, rc {r.returncode}):\n{r.stderr[-2000:]}")
    res = json.loads(line[len("RESULT ") :])
    if not res["package"].startswith(str(src_root)):
        raise SystemExit(f"the run imported {res['package']}, not the tree under {src_root}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5, help="runs per writer, alternating (median reported)")
    ap.add_argument("--distinct", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of this repository to compare with")
    ap.add_argument(
        "--mxnet-python",
        default=os.environ.get("SCOREMIX_MXNET_PYTHON"),
        help="a Python with mxnet: also measure MXIndexedRecordIO.write_idx on the same records",
    )
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from benchmarks.recordio_read import face_like_jpegs, measure_mxnet

    with tempfile.TemporaryDirectory(prefix="scoremix-recwrite-") as d:
        work = Path(d)
        base_root = work / "baseline"
        base_root.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.baseline_rev, "scoremix_plugin"], capture_output=True
        )
        if archive.returncode != 0:
            raise SystemExit(f"cannot read revision {args.baseline_rev}: {archive.stderr.decode()[-500:]}")
        subprocess.run(["tar", "-x", "-C", str(base_root)], input=archive.stdout, check=True)
        jpegs = face_like_jpegs(args.distinct, args.seed)
        jpeg_file = work / "jpegs.bin"
        jpeg_file.write_bytes(b"".join(struct.pack("<I", len(j)) + j for j in jpegs))
        runs: dict[str, list[dict]] = {"baseline": [], "current": []}
        for r in range(args.repeats):
            for name, root in (("baseline", base_root), ("current", REPO)):
                out = work / f"{name}{r}"
                runs[name].append(_run_child(root, jpeg_file, out, args.records))
                if r < args.repeats - 1 or name == "baseline":
                    for f in out.iterdir():
                        f.unlink()
        digests = {res["sha256"] for v in runs.values() for res in v}
        if len(digests) != 1:
            raise SystemExit("the two writers wrote different bytes: " + ", ".join(sorted(digests)))
        med = {name: {k: float(np.median([x[k] for x in v])) for k in ("wall", "cpu")} for name, v in runs.items()}
        mxnet = None
        if args.mxnet_python:
            mxnet = measure_mxnet(
                args.mxnet_python, work / f"current{args.repeats - 1}", work, 1000, 100, args.repeats, args.seed
            )["writes_per_s"]

    ratio = {k: med["current"][k] / med["baseline"][k] for k in ("wall", "cpu")}
    est = {k: ratio[k] * ISSUE_OLD_PER_S / ISSUE_MXNET_PER_S for k in ratio}
    mean_kib = sum(len(j) for j in jpegs) / len(jpegs) / 1024
    print(
        f"{args.records} records of 112x112 JPEG q95 (mean {mean_kib:.1f} KiB) per run, one core, median of "
        f"{args.repeats} alternating runs; files byte-identical: yes"
    )
    print(f"baseline: scoremix_plugin at {args.baseline_rev[:12]}")
    print(f"{'writer':<10}{'wall rec/s':>12}{'cpu rec/s':>12}")
    for name in ("baseline", "current"):
        print(f"{name:<10}{med[name]['wall']:>12,.0f}{med[name]['cpu']:>12,.0f}")
    print(f"current / baseline: wall {ratio['wall']:.2f}x, cpu {ratio['cpu']:.2f}x")
    if mxnet is not None:
        print(
            f"mxnet (measured)  {mxnet['wall']:>12,.0f}{mxnet['cpu']:>12,.0f}   current / mxnet: wall "
            f"{med['current']['wall'] / mxnet['wall']:.2f}x, cpu {med['current']['cpu'] / mxnet['cpu']:.2f}x"
        )
    else:
        print(
            f"current / mxnet 1.9.1, estimated from issue 18's same-machine 31k vs 48k records/s: "
            f"wall {est['wall']:.2f}x, cpu {est['cpu']:.2f}x (NOT measured here: no mxnet)"
        )
    if args.json:
        from scoremix_plugin.io_utils import write_json_atomic

        write_json_atomic(
            args.json,
            {
                "records": args.records,
                "baseline_rev": args.baseline_rev,
                "median": med,
                "runs": runs,
                "ratio": ratio,
                "mxnet_measured": mxnet,
                "mxnet_estimated_ratio": None if mxnet else est,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
