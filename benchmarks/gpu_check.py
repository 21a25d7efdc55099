"""One prepared GPU check: every CUDA path of the project run and timed in one short lease (<= 8 min).

On the GPU machine, from the checkout root (nothing to pip install; see docs/gpu_check.md)::

    bash benchmarks/gpu_check.sh --out gpu_check_out          # == python3 benchmarks/gpu_check.py ...

Here, before the lease (network needed once): copy the host and download the wheels the GPU image lacks::

    python benchmarks/gpu_check.py --prepare                  # -> .gpu_host/arcface_torch, .whl/

In CI (and anywhere without a GPU), the same parts at tiny sizes on the CPU, in seconds::

    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_smoke

Parts, each in its own process with its own time budget, so a failing or hanging part is recorded
(error text, its output's tail) and the next one still runs: ``data`` (toy RecordIO folder), ``env``
(device, versions, the card's bf16 matmul peak measured now), ``tests`` (pytest ``-m cuda``),
``generator`` (training steps/s and the sampler's images/s against the bf16 FLOP floor, eager /
channels_last / torch.compile / CUDA graphs), ``recogniser`` (our trainer, r50), ``host`` (the real
``train_v2.py`` through ``scoremix arcface-train``), ``loader`` (decoded images/s per worker count).
Results: ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``, rewritten after every part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without pip install
    sys.path.insert(0, str(REPO))

from benchmarks import gpu_report  # noqa: E402
from benchmarks.gpu_settings import BUDGETS_S, PARTS, Settings  # noqa: E402

HOST_COPY = REPO / ".gpu_host" / "arcface_torch"
WHEELS = REPO / ".whl"
SITE = REPO / ".gpu_site"  # carried wheels unpack here (ignored); first on the path of every part


# Parts (each runs in a child process: python benchmarks/gpu_check.py --run-part NAME ...).


def find_host(explicit: str | None) -> Path | None:
    """The host checkout: --arcface-root, $ARCFACE_ROOT, the carried copy, $SCOREMIX_SHARED/host, ../shared/host."""
    shared = os.environ.get("SCOREMIX_SHARED")
    for cand in (
        explicit,
        os.environ.get("ARCFACE_ROOT"),
        HOST_COPY,
        shared and Path(shared) / "host" / "arcface_torch",
        REPO.parent / "shared" / "host" / "arcface_torch",
    ):
        if cand and (Path(cand) / "train_v2.py").is_file():
            return Path(cand).resolve()
    return None


def run_part(name: str, settings: Settings, work: Path, result_path: Path, deadline: float) -> None:
    """Child side: run one part, writing its (partial) results to ``result_path`` as they come."""
    from benchmarks import gpu_parts

    record: dict[str, Any] = {}

    def save(update: dict[str, Any] | None = None) -> None:
        if update:
            record.update(update)
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, result_path)

    fn = getattr(gpu_parts, f"part_{name}")
    fn(settings, work, deadline, save)
    save()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def spawn_part(name: str, settings: Settings, work: Path, limit_s: float, env: dict[str, str]) -> dict[str, Any]:
    """Parent side: run a part in its own process group, kill it at ``limit_s``; never raises."""
    result_path, log_path = work / f"part_{name}.json", work / f"part_{name}.log"
    result_path.unlink(missing_ok=True)
    deadline = time.time() + limit_s - 5  # the child stops starting new measurements 5 s before the kill
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--run-part",
        name,
        "--work",
        str(work),
        "--result",
        str(result_path),
        "--deadline",
        f"{deadline:.3f}",
        "--settings",
        settings.to_json(),
    ]
    t0 = time.perf_counter()
    status, error = "ok", None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(limit_s, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group: its workers and torchrun too
            proc.wait()
            rc, status, error = None, "timeout", f"killed after its budget of {limit_s:.0f} s"
    if rc not in (0, None):
        status, error = "failed", f"exit code {rc}"
    elif status == "timeout":
        error += f" (ran {time.perf_counter() - t0:.1f} s)"
    try:
        results = json.loads(result_path.read_text())
    except (OSError, ValueError):
        results = {}
    if status != "ok" or results.get("error"):
        error = "; ".join(e for e in (error, results.pop("error", None)) if e)
        results["log_tail"] = _tail(log_path)
        status = "failed" if status == "ok" else status
    if results.get("skipped") and status == "ok":
        status = "skipped"
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - t0, 1), **results}


def inline_part(name: str, settings: Settings, work: Path, limit_s: float) -> dict[str, Any]:
    """Run a part in this process (the CPU smoke run: no interpreter start per part); never raises."""
    import traceback

    result_path = work / f"part_{name}.json"
    result_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        run_part(name, settings, work, result_path, time.time() + limit_s)
    except Exception as e:  # noqa: BLE001 - recorded; the next part still runs
        status, error = "failed", f"{type(e).__name__}: {e}"
        trace = traceback.format_exc()
    try:
        results = json.loads(result_path.read_text())
    except (OSError, ValueError):
        results = {}
    if error:
        results["log_tail"] = trace[-3000:]
    elif results.get("error"):
        status, error = "failed", results.pop("error")
    elif results.get("skipped"):
        status = "skipped"
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - t0, 1), **results}


def part_env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(p) for p in (site, REPO) if p.is_dir()]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env["PYTHONPATH"]] if env.get("PYTHONPATH") else paths)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_check(settings: Settings, out: Path, parts: list[str], total_s: float, isolate: bool = True) -> dict[str, Any]:
    """Every part in order, each within its budget plus what earlier parts left unused, all within total_s.

    ``isolate``: each part in its own process, killed at its budget (the GPU run); else in this process
    with the budgets as deadlines only (the CPU smoke run, where starting 7 interpreters costs most).
    """
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_", dir=settings.work_root or None))
    env = part_env(SITE)
    report: dict[str, Any] = {"meta": gpu_report.meta(settings, parts), "parts": {}}
    start = time.perf_counter()
    spare = 0.0
    budgets = BUDGETS_S["smoke" if settings.smoke else "gpu"]
    scale = total_s / sum(budgets[p] for p in parts)  # the chosen parts share the whole total
    for name in parts:
        left = total_s - (time.perf_counter() - start)
        limit = min(budgets[name] * scale + spare, left)
        if limit < 10 and not settings.smoke:
            report["parts"][name] = {
                "status": "skipped",
                "error": f"{limit:.0f} s of budget ({left:.0f} s left in all)",
            }
            continue
        print(f"[gpu_check] {name}: budget {limit:.0f} s", flush=True)
        res = spawn_part(name, settings, work, limit, env) if isolate else inline_part(name, settings, work, limit)
        spare = max(0.0, limit - res["seconds"])
        report["parts"][name] = res
        print(
            f"[gpu_check] {name}: {res['status']} in {res['seconds']} s"
            + (f" ({res['error']})" if res.get("error") else ""),
            flush=True,
        )
        if name == "env" and res.get("peak_tflops"):
            settings.peak_tflops = res["peak_tflops"]
        report["meta"]["total_seconds"] = round(time.perf_counter() - start, 1)
        gpu_report.write(out, report)
    if not settings.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    paths = gpu_report.write(out, report)
    print(gpu_report.fastest_lines(report), flush=True)
    print(f"[gpu_check] report: {paths['markdown']} and {paths['json']}", flush=True)
    return report


# Preparation (here, with network) and the carried wheels (there, without).


def prepare(args) -> None:
    from benchmarks.gpu_wheels import download_wheels

    host = find_host(args.arcface_root) if args.arcface_root or not HOST_COPY.is_dir() else HOST_COPY
    if host is None:
        print(
            "[prepare] no host checkout found (--arcface-root, $ARCFACE_ROOT, ../shared/host/arcface_torch): "
            "the host part will be skipped",
            flush=True,
        )
    elif host != HOST_COPY:
        if HOST_COPY.exists():
            shutil.rmtree(HOST_COPY)
        shutil.copytree(host, HOST_COPY, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "work_dirs"))
        print(f"[prepare] host copied: {host} -> {HOST_COPY}", flush=True)
    download_wheels(WHEELS, groups=args.wheels, python_version=args.wheel_python)


def install_wheels(wheels: Path, site: Path) -> list[str]:
    """Unpack carried wheels into ``site`` (no index, no deps), skipping any distribution already at that version."""
    from benchmarks.gpu_wheels import missing_wheels

    todo = missing_wheels(wheels)
    if todo:
        site.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(site),
            *map(str, todo),
        ]
        subprocess.run(cmd, check=True)
    return [w.name for w in todo]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (CI): seconds, not minutes")
    p.add_argument("--budget", type=float, default=None, help="total seconds for all parts (GPU default 470)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--presets", default=None, help="generator presets (default: every 112-px preset of the registry)")
    p.add_argument(
        "--arcface-root", default=None, help="host checkout (default: $ARCFACE_ROOT, .gpu_host, ../shared/host)"
    )
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder (data, logs)")
    p.add_argument("--isolate", action="store_true", help="one process per part also with --cpu-smoke (always on GPU)")
    p.add_argument("--no-install", action="store_true", help="do not install the carried .whl/ wheels")
    p.add_argument("--prepare", action="store_true", help="copy the host to .gpu_host/ and download wheels to .whl/")
    p.add_argument("--wheels", default="core", help="wheel groups for --prepare: core[,opencv,host,pytest] or all")
    p.add_argument("--wheel-python", default="3.12", help="the GPU machine's Python version (for --prepare)")
    p.add_argument("--run-part", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.run_part:
        run_part(args.run_part, Settings.from_json(args.settings), Path(args.work), Path(args.result), args.deadline)
        return 0
    if args.prepare:
        prepare(args)
        return 0
    if not args.out:
        p.error("--out is required (or --prepare)")
    parts = [s for s in args.parts.split(",") if s]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {unknown}; choose from {PARTS}")
    if "data" not in parts and any(x in parts for x in ("generator", "recogniser", "host", "loader", "tests")):
        parts.insert(0, "data")  # the toy folder every later part reads
    if WHEELS.is_dir() and not args.no_install:
        installed = install_wheels(WHEELS, SITE)
        if installed:
            print(f"[gpu_check] installed {len(installed)} carried wheel(s) into {SITE}", flush=True)
    host = find_host(args.arcface_root)
    settings = Settings.for_mode(
        smoke=args.cpu_smoke, presets=args.presets, host=str(host) if host else None, keep_work=args.keep_work
    )
    total = args.budget if args.budget is not None else (120.0 if args.cpu_smoke else 470.0)
    run_check(
        settings, Path(args.out), [x for x in PARTS if x in parts], total, isolate=args.isolate or not args.cpu_smoke
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
