"""The dataset report (``scoremix report-dataset``): what a face team checks before it trusts a set.

    scoremix report-dataset --data syn/manifest.json --model model.onnx --targets toy_lfw,toy_cfp_fp --out rep
    scoremix report-dataset --data data/real --model model.pt --network r50 --bins data/bins --out rep

``data`` is a RecordIO folder or a generation manifest. The REAL set is ``--real``, else the manifest's own
real folder, else (a RecordIO ``data``) the data itself; the leak threshold comes from its impostors (from
the data's own when there is no real set, which the report states). Evaluation sets: ``--targets`` names
looked up in ``--bins`` (else in the real folder, where arcface_torch keeps them), or every ``.bin`` of
``--bins``.

``OUT/report.json`` (``format`` "scoremix-dataset-report/1"; embeddings are flip-added and unit; labels
are final labels; an identity-vs-X cosine is the MEAN over its images' pairs with X, leaks.py says why)::

    {"format", "model", "far",
     "threshold": {"far", "cosine", "achieved_far", "impostor_pairs", "too_few_pairs"},
     "threshold_from": "real" | "synthetic",   # whose impostor pairs set it
     "data": SET, "real": SET | null,          # SET: {"name", "path", "kind" ("rec" | "manifest"), "images",
         # "identities", "stats": {"genuine_pairs", "impostor_pairs", "genuine_total", "impostor_total",
         #   "genuine_mean", "genuine_std", "impostor_mean", "impostor_std", "eer", "eer_threshold", "d_prime",
         #   "fdr", "fnmr_at_fmr": [{"fmr", "threshold", "fnmr", "achieved_fmr", "too_few_pairs"}]},
         # "consistency": {"n", "mean", "std", "min", "p05", "median", "p95", "max"} of per-identity mean
         #   intra cosines, "worst": [[label, intra], ...] (20 least consistent)}
     "evaluation": [{"target", "path", "images"}],
     "leaks": [{"label", "kind" ("training_source" | "training_other" | "evaluation" | "real_evaluation"),
                "cosine", "match" ("class C" | "TARGET:IMAGE_INDEX"), "matches"}],
     "comparisons": {KIND: identity-vs-class or identity-vs-image comparisons made},
     "leak_counts": {"training_source", "training_other", "evaluation", "real_evaluation": identities},
     "leak_checks": {KIND: {"identities", "comparisons", "chance_at_far" (comparisons x far)}},
     "identities": [{"label", "new_label", "sources", "source_cos", "intra", "accept_rate", "nearest_real",
                     "nearest_real_cos", "nearest_other_real", "nearest_other_real_cos", "nearest_synthetic",
                     "nearest_synthetic_cos"}],       # manifest data only
     "gate": {"passed", "far", "threshold", "threshold_from", "identities", "recognised", "share", "min_share",
              "real_share", "conclusive", "synthetic_genuine_median", "real_genuine_median",
              "synthetic_intra_mean", "advice"} | null,
     "figures": {"scores", "consistency", "worst", "sources"?: PNG names}}

``report.md`` shows the same numbers; ``scores.png`` (genuine vs impostor histograms, real beside data),
``consistency.png``, ``worst_identities.png`` (a grid, one row per identity) and, for a manifest,
``sources.png`` (each identity's cosine to its two sources) sit beside it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.datareport import metrics as M
from scoremix_plugin.datareport.embeddings import ImageSet
from scoremix_plugin.datareport.leaks import GateVerdict, Leak, Threshold
from scoremix_plugin.errors import ScoreMixError

FORMAT = "scoremix-dataset-report/1"
WORST = 20  # identities in the worst-consistency grid
LEAK_KINDS = ("training_source", "training_other", "evaluation", "real_evaluation")


class ReportError(ScoreMixError, ValueError):
    """Bad input to the dataset report (a missing target, a manifest without its selection, ...)."""


@dataclass(frozen=True)
class SetReport:
    name: str
    path: str
    kind: str
    images: int
    identities: int
    stats: M.ScoreStats
    consistency: dict[str, float] | None
    worst: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class SyntheticIdentity:
    label: int
    new_label: int
    sources: tuple[int, ...]
    source_cos: tuple[float, ...]
    intra: float
    accept_rate: float  # share of its own pairs above the threshold
    nearest_real: int
    nearest_real_cos: float
    nearest_other_real: int  # best real class that is not one of its sources
    nearest_other_real_cos: float
    nearest_synthetic: int
    nearest_synthetic_cos: float


@dataclass(frozen=True)
class DatasetReport:
    model: str
    far: float
    threshold: Threshold
    threshold_from: str
    data: SetReport
    real: SetReport | None
    evaluation: tuple[dict[str, Any], ...]
    leaks: tuple[Leak, ...]
    comparisons: dict[str, int]  # leak kind -> identity-vs-class / identity-vs-image comparisons made
    identities: tuple[SyntheticIdentity, ...]
    gate: GateVerdict | None
    figures: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def leak_counts(self) -> dict[str, int]:
        return {k: len({lk.label for lk in self.leaks if lk.kind == k}) for k in LEAK_KINDS}

    @property
    def leak_checks(self) -> dict[str, dict[str, float]]:
        """Per check: identities found, comparisons made, and comparisons x FAR (single-pair chance level)."""
        return {
            k: {
                "identities": n,
                "comparisons": self.comparisons.get(k, 0),
                "chance_at_far": self.comparisons.get(k, 0) * self.far,
            }
            for k, n in self.leak_counts.items()
        }

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["leak_counts"] = self.leak_counts
        d["leak_checks"] = self.leak_checks
        return _finite(d)

    def headline(self) -> dict[str, Any]:
        """The few numbers a pipeline report shows for each set: EER, FNMR@FMR, d', FDR, leaks, gate."""

        def one(s: SetReport | None):
            if s is None:
                return None
            st = s.stats
            return {
                "images": s.images,
                "identities": s.identities,
                "eer": st.eer,
                "d_prime": st.d_prime,
                "fdr": st.fdr,
                **{f"fnmr@{f.fmr:g}": f.fnmr for f in st.fnmr_at_fmr},
                "consistency_mean": (s.consistency or {}).get("mean"),
            }

        return _finite(
            {
                "data": one(self.data),
                "real": one(self.real),
                "far": self.far,
                "threshold": self.threshold.cosine,
                "leaks": self.leak_counts,
                "gate": None if self.gate is None else {"passed": self.gate.passed, "share": self.gate.share},
            }
        )

    def leak_reasons(self) -> dict[int, list[str]]:
        """label -> why it leaks (training and evaluation leaks of the DATA's identities only)."""
        out: dict[int, list[str]] = {}
        for lk in self.leaks:
            if lk.kind != "real_evaluation":
                out.setdefault(lk.label, []).append(
                    f"{lk.kind.replace('_', ' ')} leak: {lk.match} at cosine {lk.cosine:.4f} > "
                    f"{self.threshold.cosine:.4f}"
                    f" (FAR {self.far:g} of {self.threshold_from} impostors)"
                )
        return out


def _finite(obj):
    """JSON has no NaN / Infinity: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def resolve_bins(
    targets: list[str] | None, bins_dir: str | os.PathLike | None, fallback: str | os.PathLike | None
) -> dict[str, Path]:
    """{target: .bin path}: named targets in ``bins_dir`` (else ``fallback``), or every .bin of ``bins_dir``."""
    where = Path(bins_dir) if bins_dir else (Path(fallback) if fallback else None)
    if targets:
        if where is None:
            raise ReportError(f"--targets {','.join(targets)}: no folder to find them in (give --bins DIR)")
        out = {}
        for t in targets:
            p = where / f"{t}.bin"
            if not p.is_file():
                have = sorted(q.stem for q in where.glob("*.bin"))
                raise ReportError(f"target {t!r}: {p} not found (.bin files there: {have})")
            out[t] = p
        return out
    if bins_dir:
        if not Path(bins_dir).is_dir():
            raise ReportError(f"--bins {bins_dir}: not a folder")
        return {p.stem: p for p in sorted(Path(bins_dir).glob("*.bin"))}
    return {p.stem: p for p in sorted(where.glob("*.bin"))} if where is not None and where.is_dir() else {}


def _set_report(s: ImageSet, emb: np.ndarray, *, genuine_cap: int, impostor_cap: int, seed: int):
    gp, ip = M.genuine_pairs(s.labels, genuine_cap, seed), M.impostor_pairs(s.labels, impostor_cap, seed)
    if len(gp.a) == 0 or len(ip.a) == 0:
        raise ReportError(
            f"{s.path}: {len(gp.a)} genuine and {len(ip.a)} impostor pairs; a report needs "
            "identities with two or more images, and two or more identities"
        )
    g, i = M.pair_scores(emb, gp), M.pair_scores(emb, ip)
    st = M.score_stats(g, i, genuine_total=gp.total, impostor_total=ip.total)
    uniq, _, intra = M.identity_stats(emb, s.labels)
    order = [j for j in np.argsort(intra) if np.isfinite(intra[j])][:WORST]
    rep = SetReport(
        s.name,
        str(s.path),
        s.kind,
        len(s),
        len(uniq),
        st,
        M.distribution(intra),
        tuple((int(uniq[j]), float(intra[j])) for j in order),
    )
    _, means = M.identity_means(emb, s.labels)  # what every leak check compares (leaks.py)
    return rep, g, i, uniq, means, intra


def report_dataset(
    data: str | os.PathLike,
    embedder,
    out: str | os.PathLike,
    *,
    real: str | os.PathLike | None = None,
    bins: dict[str, Path] | None = None,
    far: float = 1e-4,
    network: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    genuine_cap: int = 10**6,
    impostor_cap: int = 10**6,
    seed: int = 0,
    min_share: float = 0.5,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
    verify: bool = True,
) -> DatasetReport:
    """Embed, measure, check leaks, write ``OUT/report.{md,json}`` + PNGs; return the typed report.

    ``embedder``: a model path (.onnx / .pt with ``network``; embeddings then cached in ``cache_dir``,
    default ``OUT/cache``) or an embedder callable (no cache). ``bins``: {target: .bin path}
    (:func:`resolve_bins`); None = the .bin files beside the real folder.
    """
    from scoremix_plugin.datareport import leaks as L
    from scoremix_plugin.datareport.embeddings import (
        EmbeddingCache,
        embed_set,
        model_key,
        open_bin,
        open_data,
        open_rec,
        real_rec_of,
    )
    from scoremix_plugin.datareport.figures import write_figures
    from scoremix_plugin.datareport.markdown import write_markdown
    from scoremix_plugin.io_utils import write_json_atomic

    out = Path(out)
    cache = None
    model_name = getattr(embedder, "path", None) or type(embedder).__name__
    if isinstance(embedder, (str, os.PathLike)):
        from scoremix_plugin.verification.evaluate import load_embedder

        model_name = str(embedder)
        cache = EmbeddingCache(cache_dir or out / "cache", model_key(embedder, network))
        embedder = load_embedder(embedder, network=network, device=device)

    def embed(s):
        return embed_set(embedder, s, cache=cache, batch_size=batch_size, progress=progress)

    # Sets.
    ds = open_data(data, verify=verify)  # verify: shard sha256 against the manifest
    real_path = Path(real) if real else (real_rec_of(ds.manifest) if ds.kind == "manifest" else None)
    if real and ds.kind == "manifest":
        from scoremix_plugin.synthesis.manifest import check_provenance

        check_provenance(ds.manifest, real_dir=real, what="--real")
    rs = open_rec(real_path, "real") if real_path else None
    if bins is None:
        bins = resolve_bins(None, None, real_path or (ds.path if ds.kind == "rec" else None))
    d_emb = embed(ds)
    r_emb = embed(rs) if rs is not None else None
    ev = {t: open_bin(p, t) for t, p in bins.items()}
    ev_emb = {t: embed(s) for t, s in ev.items()}

    # Distributions and the threshold.
    d_rep, d_gen, d_imp, d_uniq, d_mean, d_intra = _set_report(
        ds, d_emb, genuine_cap=genuine_cap, impostor_cap=impostor_cap, seed=seed
    )
    r_rep = r_gen = r_imp = None
    if rs is not None:
        r_rep, r_gen, r_imp, r_uniq, r_mean, _ = _set_report(
            rs, r_emb, genuine_cap=genuine_cap, impostor_cap=impostor_cap, seed=seed
        )
    if r_imp is not None:
        thr, thr_from = M.threshold_at_far(r_imp, far), "real"
    else:
        thr, thr_from = M.threshold_at_far(d_imp, far), ("real" if ds.kind == "rec" else "synthetic")
    t = thr.cosine

    # Identities and leaks.
    leaks: list[Leak] = []
    n_eval = sum(len(v) for v in ev_emb.values())
    comparisons: dict[str, int] = {}
    identities: list[SyntheticIdentity] = []
    gate = None
    if ds.kind == "manifest":
        m = ds.manifest
        c_real = m.real_num_classes
        sources = _sources(m, d_uniq - c_real)
        syn_nb = L.neighbours(d_mean, d_mean, 1, exclude_self=True)
        _, rate = M.identity_accept_rate(d_emb, ds.labels, t)
        if rs is not None:
            tl, ex = L.training_leaks(d_uniq, d_mean, sources, r_uniq, r_mean, t)
            leaks += tl
            comparisons["training_source"] = int(sources.size)
            comparisons["training_other"] = len(d_uniq) * len(r_uniq) - int(sources.size)
        else:
            ex = None
        for j, lab in enumerate(d_uniq.tolist()):
            identities.append(
                SyntheticIdentity(
                    label=lab,
                    new_label=lab - c_real,
                    sources=tuple(int(c) for c in sources[j]),
                    source_cos=tuple(float(v) for v in ex["source_cos"][j]) if ex else (),
                    intra=float(d_intra[j]),
                    accept_rate=float(rate[j]),
                    nearest_real=int(ex["nearest_real"][j]) if ex else -1,
                    nearest_real_cos=float(ex["nearest_real_cos"][j]) if ex else float("nan"),
                    nearest_other_real=int(ex["nearest_other"][j]) if ex else -1,
                    nearest_other_real_cos=float(ex["nearest_other_cos"][j]) if ex else float("nan"),
                    nearest_synthetic=int(d_uniq[syn_nb.index[j, 0]]) if syn_nb.index[j, 0] >= 0 else -1,
                    nearest_synthetic_cos=float(syn_nb.cosine[j, 0]),
                )
            )
        leaks += L.evaluation_leaks(d_uniq, d_mean, ev_emb, t, "evaluation")
        comparisons["evaluation"] = len(d_uniq) * n_eval
        if rs is not None:
            leaks += L.evaluation_leaks(r_uniq, r_mean, ev_emb, t, "real_evaluation")
            comparisons["real_evaluation"] = len(r_uniq) * n_eval
        gate = L.quality_gate(
            d_emb,
            ds.labels,
            thr,
            threshold_from=thr_from,
            min_share=min_share,
            real_emb=r_emb,
            real_labels=None if rs is None else rs.labels,
            real_genuine=r_gen,
            synthetic_genuine=d_gen,
            manifest=m.to_json(),
        )
    else:
        leaks += L.evaluation_leaks(d_uniq, d_mean, ev_emb, t, "real_evaluation")
        comparisons["real_evaluation"] = len(d_uniq) * n_eval

    rep = DatasetReport(
        model=str(model_name),
        far=float(far),
        threshold=thr,
        threshold_from=thr_from,
        data=d_rep,
        real=r_rep,
        evaluation=tuple({"target": k, "path": str(bins[k]), "images": len(v)} for k, v in ev.items()),
        leaks=tuple(leaks),
        comparisons=comparisons,
        identities=tuple(identities),
        gate=gate,
    )
    figures = write_figures(
        out, rep, ds, {"data": (d_gen, d_imp), "real": (r_gen, r_imp) if r_gen is not None else None}, d_intra
    )
    rep = DatasetReport(**{**{f: getattr(rep, f) for f in rep.__dataclass_fields__}, "figures": figures})
    write_json_atomic(out / "report.json", rep.to_json())
    write_markdown(out / "report.md", rep)
    return rep


def _sources(manifest, new_labels: np.ndarray) -> np.ndarray:
    """[L, K] real classes each synthetic identity was mixed from (the selection file's rows)."""
    from scoremix_plugin.synthesis.select import read_pairs

    f = manifest.selection.get("file")
    p = (manifest.root / f) if f else None
    if p is None or not p.is_file():
        raise ReportError(
            f"{manifest.path}: its selection file {p} is missing; the report needs each identity's sources"
        )
    sel = read_pairs(p)
    if new_labels.max(initial=-1) >= len(sel):
        raise ReportError(f"{p}: {len(sel)} rows, the manifest has new label {int(new_labels.max())}")
    return sel.classes[new_labels]


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """``report.json`` (a file or its folder) as a dict, format checked."""
    p = Path(path)
    p = p / "report.json" if p.is_dir() else p
    d = json.loads(p.read_text())
    if d.get("format") != FORMAT:
        raise ReportError(f"{p}: format {d.get('format')!r}, expected {FORMAT!r}")
    return d
