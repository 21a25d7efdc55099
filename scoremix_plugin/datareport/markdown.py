"""``report.md``: the dataset report's numbers for people (``report.json`` holds all of them)."""

from __future__ import annotations

import os

from scoremix_plugin.io_utils import write_text_atomic

MAX_ROWS = 50  # rows of a per-identity table in Markdown; the JSON has every row


def _f(v, fmt=".4f") -> str:
    return "n/a" if v is None or v != v else format(v, fmt)


def write_markdown(path: str | os.PathLike, rep) -> None:
    t = rep.threshold
    lines = [
        f"# Dataset report: {rep.data.name}",
        "",
        f"Model `{rep.model}`; embeddings flip-added and normalised; cosine similarity.",
        "",
        "## Genuine vs impostor pairs",
        "",
        "| set | images | identities | genuine pairs | impostor pairs | EER | "
        + " | ".join(f"FNMR@FMR {f.fmr:g}" for f in rep.data.stats.fnmr_at_fmr)
        + " | d' | FDR | consistency |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(rep.data.stats.fnmr_at_fmr) + "---:|---:|---:|",
    ]
    for key, s in (("real", rep.real), ("data", rep.data)):
        if s is None:
            continue
        st = s.stats
        pairs = lambda n, tot: f"{n:,}" + (f" of {tot:,}" if tot != n else "")  # noqa: E731
        fn = " | ".join(f"{100 * f.fnmr:.2f} %" + (" (few pairs)" if f.too_few_pairs else "") for f in st.fnmr_at_fmr)
        lines.append(
            f"| {key}: {s.name} | {s.images:,} | {s.identities:,} | {pairs(st.genuine_pairs, st.genuine_total)} "
            f"| {pairs(st.impostor_pairs, st.impostor_total)} | {100 * st.eer:.2f} % | {fn} | "
            f"{st.d_prime:.3f} | {st.fdr:.3f} | {_f((s.consistency or {}).get('mean'), '.3f')} |"
        )
    lines += [
        "",
        'Pairs are sampled uniformly with a seed where a set holds more than the cap ("n of total"). '
        "Consistency: mean over identities of the mean cosine between an identity's own images.",
        "",
        "![genuine vs impostor](scores.png)",
        "",
        "![consistency](consistency.png)",
        "",
    ]
    lines += [
        "## Leak checks",
        "",
        f"One threshold: cosine **{t.cosine:.4f}**, where {rep.threshold_from} impostor pairs reach FAR "
        f"{rep.far:g} ({t.impostor_pairs:,} pairs, achieved {t.achieved_far:.2e}"
        + ("; FEWER than 1/FAR pairs: the largest impostor score stands in" if t.too_few_pairs else "")
        + ").",
        "An identity is scored against a class or an image by the MEAN cosine of its images' pairs with "
        'it, the scale of the image pairs that set the threshold. "chance" is comparisons x FAR: about how '
        "many single image pairs of strangers would pass by chance (identity means spread less).",
        "",
    ]
    ev = ", ".join(f"{e['target']} ({e['images']} images)" for e in rep.evaluation) or "none (no .bin files given)"
    lines += [f"Evaluation sets: {ev}.", "", "| check | identities | comparisons | chance |", "|---|---:|---:|---:|"]
    names = {
        "training_source": "(a) training leak: near-copy of one of its sources",
        "training_other": "(a) training leak: close to another real class",
        "evaluation": "(b) evaluation leak: close to an evaluation image",
        "real_evaluation": "(c) real training class close to an evaluation image",
    }
    for k, c in rep.leak_checks.items():
        lines.append(f"| {names[k]} | {c['identities']} | {c['comparisons']:,} | {c['chance_at_far']:.3g} |")
    if rep.leaks:
        lines += ["", "| label | kind | match | cosine | matches |", "|---:|---|---|---:|---:|"]
        lines += [
            f"| {lk.label} | {lk.kind} | {lk.match} | {lk.cosine:.4f} | {lk.matches} |" for lk in rep.leaks[:MAX_ROWS]
        ]
        if len(rep.leaks) > MAX_ROWS:
            lines.append(f"| ... | {len(rep.leaks) - MAX_ROWS} more in report.json | | | |")
    if rep.gate is not None:
        lines += ["", "## Quality gate", "", "```", rep.gate.text(), "```"]
    lines += ["", "## Least consistent identities", "", ", ".join(f"{lab} ({v:.3f})" for lab, v in rep.data.worst), ""]
    if "worst" in rep.figures:
        lines += ["![least consistent identities, one per row](worst_identities.png)", ""]
    if rep.identities:
        lines += [
            "## Synthetic identities",
            "",
            "Each identity against its sources (mean cosine of image pairs; a mix should sit between them), its "
            "nearest real class that is not a source, and its nearest other synthetic identity.",
            "",
        ]
        if "sources" in rep.figures:
            lines += ["![cosine to each source](sources.png)", ""]
        lines += [
            "| label | sources | cosine to sources | intra | accepted | nearest other real | nearest synthetic |",
            "|---:|---|---|---:|---:|---|---|",
        ]
        for r in rep.identities[:MAX_ROWS]:
            lines.append(
                f"| {r.label} | {', '.join(map(str, r.sources))} | "
                f"{', '.join(_f(v, '.3f') for v in r.source_cos) or 'n/a'} | {_f(r.intra, '.3f')} | "
                f"{_f(r.accept_rate, '.2f')} | {r.nearest_other_real} ({_f(r.nearest_other_real_cos, '.3f')}) | "
                f"{r.nearest_synthetic} ({_f(r.nearest_synthetic_cos, '.3f')}) |"
            )
        if len(rep.identities) > MAX_ROWS:
            lines.append(f"| ... {len(rep.identities) - MAX_ROWS} more in report.json | | | | | | |")
    write_text_atomic(path, "\n".join(lines) + "\n")
