"""The GPU check's report: one JSON (everything) and one Markdown page (the tables and the targets)."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

# Targets from the FLOP count (issue 15, docs/gpu_check.md): the sampler's 2-way mix at >= 50% of the
# card's bf16 peak, and our recogniser trainer within 10% of the host's images/s.
SAMPLER_FRACTION_TARGET = 0.5
TRAINER_RATIO_TARGET = 0.9


def meta(settings, parts: list[str]) -> dict[str, Any]:
    import torch

    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": "cpu-smoke" if settings.smoke else "gpu",
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "parts": parts,
        "presets": settings.presets,
    }


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "/").replace("\n", " ")


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(_fmt(c) if not isinstance(c, str) else c.replace("|", "/") for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows), ""]


def fastest(variants: dict[str, Any], key: str) -> str | None:
    timed = {k: v[key] for k, v in variants.items() if isinstance(v, dict) and isinstance(v.get(key), (int, float))}
    return max(timed, key=timed.get) if timed else None


def fastest_lines(report: dict[str, Any]) -> str:
    lines = []
    gen = report["parts"].get("generator", {})
    for preset, row in (gen.get("presets") or {}).items():
        s = fastest(row.get("sampler_variants_mix2", {}), "images_per_s")
        t = fastest(row.get("train_step_variants", {}), "images_per_s")
        lines.append(
            f"[gpu_check] fastest for {preset}: sampler {s or 'not measured'}, training step {t or 'not measured'}"
        )
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    gen = report["parts"].get("generator", {})
    for preset, row in (gen.get("presets") or {}).items():
        mix = row.get("sampler_variants_mix2") or {}
        best = fastest(mix, "images_per_s")
        frac = mix[best].get("fraction_of_peak") if best else None
        verdict = "not measured" if frac is None else ("met" if frac >= SAMPLER_FRACTION_TARGET else "missed")
        rows.append(
            [
                f"sampler {preset}, 2-way mix, Heun ({best or '-'})",
                f">= {_pct(SAMPLER_FRACTION_TARGET)} of peak",
                _pct(frac) + (f" ({_fmt(mix[best].get('images_per_h'), 0)} images/h)" if best else ""),
                verdict,
            ]
        )
    ours = report["parts"].get("recogniser", {}).get("images_per_s")
    host = report["parts"].get("host", {}).get("images_per_s")
    ratio = ours / host if ours and host else None
    rows.append(
        [
            "recogniser: ours / host images/s",
            f">= {TRAINER_RATIO_TARGET:.2f}",
            _fmt(ratio, 3),
            "not measured" if ratio is None else ("met" if ratio >= TRAINER_RATIO_TARGET else "missed"),
        ]
    )
    return rows


def markdown(report: dict[str, Any]) -> str:
    m, parts = report["meta"], report["parts"]
    env = parts.get("env", {})
    out = [
        f"# GPU check ({m['mode']})",
        "",
        f"{m['date']} · {env.get('device', '?')} · torch {m['torch']} (CUDA {env.get('cuda') or '-'}) · "
        f"Python {m['python']} · total {m.get('total_seconds', '?')} s · measured peak "
        f"{_fmt(env.get('peak_tflops'), 3)} TFLOP/s ({env.get('peak_how', '-')})",
        "",
    ]
    out += ["## Targets", ""] + _table(["what", "target", "measured", "verdict"], targets(report))
    out += ["## Parts", ""] + _table(
        ["part", "status", "seconds", "error"],
        [
            [name, p.get("status"), p.get("seconds"), p.get("error") or p.get("skipped") or ""]
            for name, p in parts.items()
        ],
    )
    tests = parts.get("tests", {}).get("tests")
    if tests:
        out += ["## Tests marked cuda", ""] + _table(
            ["test", "outcome", "s", "message"],
            [[t["name"], t["outcome"], t["seconds"], t["message"][:120]] for t in tests],
        )
    amp = parts.get("generator", {}).get("autocast", "?")
    for preset, row in (parts.get("generator", {}).get("presets") or {}).items():
        out += [
            f"## Generator {preset}",
            "",
            f"{_fmt(row.get('parameters_m'), 2)} M parameters, {row.get('resolution')} px, "
            f"{_fmt(row.get('gflops_per_forward'), 2)} GFLOP per forward (torch's counter).",
            "",
        ]
        tr = row.get("train", {})
        out += _table(
            [
                f"training (train_generator, autocast {amp})",
                "batch",
                "steps/s",
                "images/s",
                "TFLOP/s",
                "of peak",
                "note",
            ],
            [
                [
                    "real loop",
                    tr.get("batch"),
                    tr.get("steps_per_s"),
                    tr.get("images_per_s"),
                    _fmt(tr.get("tflops"), 3),
                    _pct(tr.get("fraction_of_peak")),
                    tr.get("error") or tr.get("skipped") or "",
                ]
            ],
        )
        cases = row.get("sampler", {})
        out += _table(
            [
                f"sampler (eager, autocast {amp})",
                "images/s",
                "images/h",
                "NFE/image",
                "NFE/s",
                "TFLOP/s",
                "of peak",
                "floor images/h",
                "note",
            ],
            [
                [
                    c,
                    r.get("images_per_s"),
                    r.get("images_per_h"),
                    r.get("nfe_per_image"),
                    r.get("network_evals_per_s"),
                    _fmt(r.get("tflops"), 3),
                    _pct(r.get("fraction_of_peak")),
                    r.get("floor_images_per_h"),
                    r.get("error") or r.get("skipped") or "",
                ]
                for c, r in cases.items()
            ],
        )
        for title, key, what in (
            ("sampler 2-way mix", "sampler_variants_mix2", "images_per_s"),
            ("training step", "train_step_variants", "images_per_s"),
        ):
            variants = row.get(key) or {}
            if variants:
                best = fastest(variants, what)
                out += _table(
                    [f"{title}: variant", "images/s", "of peak", "warm-up s", "max abs diff vs eager", "note"],
                    [
                        [
                            v + (" (fastest)" if v == best else ""),
                            r.get(what),
                            _pct(r.get("fraction_of_peak")),
                            r.get("warmup_s"),
                            r.get("max_abs_diff_vs_eager"),
                            r.get("error") or r.get("skipped") or "",
                        ]
                        for v, r in variants.items()
                    ],
                )
    ours, host = parts.get("recogniser", {}), parts.get("host", {})
    out += ["## Recogniser training", ""] + _table(
        ["trainer", "network", "batch", "fp16", "workers", "images/s (median)", "windows", "note"],
        [
            [
                "ours (scoremix train)",
                ours.get("network"),
                ours.get("batch"),
                ours.get("fp16"),
                ours.get("workers"),
                ours.get("images_per_s"),
                len(ours.get("windows") or []),
                ours.get("error") or "",
            ],
            [
                "host train_v2.py (scoremix arcface-train)",
                host.get("network"),
                host.get("batch"),
                host.get("fp16"),
                host.get("workers"),
                host.get("images_per_s"),
                len(host.get("windows") or []),
                host.get("error") or host.get("skipped") or "",
            ],
        ],
    )
    loader = parts.get("loader", {})
    if loader.get("rows"):
        out += ["## Loader alone (decode + flip + normalise, batches on the device)", ""] + _table(
            ["workers", "images/s", "start-up s", "batch device"],
            [
                [r.get("workers"), r.get("images_per_s"), r.get("startup_s"), r.get("batch_device") or r.get("skipped")]
                for r in loader["rows"]
            ],
        )
    if env.get("versions"):
        out += ["## Versions", ""] + _table(
            ["distribution", "version"], [[k, v or "absent"] for k, v in env["versions"].items()]
        )
    return "\n".join(out) + "\n"


def write(out: Path, report: dict[str, Any]) -> dict[str, Path]:
    from scoremix_plugin.io_utils import write_json_atomic, write_text_atomic

    paths = {"json": out / "gpu_check.json", "markdown": out / "gpu_check.md"}
    write_json_atomic(paths["json"], report)
    write_text_atomic(paths["markdown"], markdown(report))
    return paths
