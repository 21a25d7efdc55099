"""Run the hostile command-line corpus (tests/hostile_corpus.py) and print the verdict counts.

    OMP_NUM_THREADS=1 python benchmarks/bad_inputs.py [--json FILE] [--verbose]

Counts: clean errors / tracebacks / silent wrong results or data losses / crashes / unclear errors
(see the corpus module for the definitions). Runs the package importable from this interpreter, so
the same script measures an older checkout with ``PYTHONPATH=OLD_CHECKOUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hostile_corpus as hc  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write every case's verdict and message here")
    p.add_argument("--verbose", action="store_true", help="print every case, not only the counts")
    p.add_argument("-k", default=None, help="only cases whose name contains this text")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="scoremix-bad-") as d:
        fx = hc.build_fixtures(Path(d) / "fixtures")
        names = [n for n in hc.CASES if args.k is None or args.k in n]
        for i, name in enumerate(names):
            o = hc.run_case(name, fx, Path(d) / f"case{i:03d}")
            outcomes.append(o)
            if args.verbose or o.verdict != "clean":
                print(f"{o.verdict:9s} rc={o.rc!s:9s} {name}: {o.message[:200]}")
    c = hc.counts(outcomes)
    print(
        f"{len(outcomes)} bad invocations in {time.perf_counter() - t0:.1f} s: "
        + ", ".join(f"{v} {c[v]}" for v in hc.VERDICTS)
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"counts": c, "cases": [o.__dict__ for o in outcomes]}, indent=2, default=str) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
