"""The ScoreMix stages: each a few lines over the library functions, returning its typed result.

========== ================================================================================
data       the toy identity dataset (``recipe.data.toy``) or a real InsightFace folder
           (``recipe.data.rec``, with its ``<target>.bin`` files beside it)
baseline   recogniser trained on the real data (``recipe.recogniser`` config file)
generator  class-conditional EDM generator trained on the same data (``recipe.generator``)
centres    baseline exported to ONNX; class centres in its embedding space (+ its head's
           weights) and the generator's condition vectors, as centres files
select     pairs of classes (``recipe.selection``: strategy, space, number of identities)
generate   ScoreMix identities into RecordIO shards + manifest (``recipe.generation``)
dataset_report
           the synthetic and the real set under the baseline: genuine / impostor statistics, leaks
           into training and evaluation data, and the quality gate (``recipe.dataset_report``,
           ``recipe.quality_gate``): a failed gate stops the run before merge and ScoreMix training
merge      real + synthetic merged into one arcface_torch folder with its config
           (``DIR/merged/``: the route for an unchanged host)
scoremix   recogniser trained on real + synthetic through ``config.dataset = "scoremix"``
verify     both recognisers on the verification targets (``recipe.verification``: .bin sets, and
           IJB-B / IJB-C when ``verification.ijb`` names a folder in the IJB release layout, TinyFace
           rank-1/5/20 when ``verification.tinyface`` names a TinyFace root)
align      linear CKA / mutual kNN of generator conditions vs recogniser centres
report     ``DIR/report.md`` + ``DIR/report.json`` + figures under ``DIR/figures/``
========== ================================================================================

Each stage's ``settings`` are exactly what it reads from the recipe: they, the config files it reads and
its inputs' run ids make its fingerprint, so changing them here re-runs finished output folders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scoremix_plugin.generation.pretrained import is_pretrained_ref
from scoremix_plugin.io_utils import write_json_atomic
from scoremix_plugin.pipeline.results import (
    AlignResult,
    CentresResult,
    DataResult,
    DatasetReportResult,
    GenerateResult,
    GeneratorResult,
    MergeResult,
    RecogniserResult,
    SelectResult,
    VerifyResult,
)
from scoremix_plugin.pipeline.runner import Context, PipelineError, Stage, to_json


def verification_targets(ctx: Context) -> dict[str, str]:
    """The verification targets to score: ``{name: path.bin}`` from the data stage."""
    bins = ctx.result("data").bins
    wanted = ctx.recipe.verification.targets or list(bins)
    missing = [t for t in wanted if t not in bins]
    if missing:
        raise PipelineError(
            f"recipe.verification.targets {missing} have no .bin file in the data folder (found {sorted(bins)})"
        )
    return {t: bins[t] for t in wanted}


# Stage: data.


def data_settings(ctx: Context) -> Any:
    d = ctx.recipe.data
    if d.rec:
        rec = ctx.resolve(d.rec)
        stat = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(rec.glob("*")) if f.is_file()]
        return {"rec": str(rec), "files": stat}
    return {"toy": d.toy, "seed": toy_seed(ctx.recipe)}


def data_outputs(ctx: Context) -> list[Path]:
    return [ctx.dir("data") / ("data.json" if ctx.recipe.data.rec else "toy_meta.json")]


def run_data(ctx: Context) -> DataResult:
    d, out = ctx.recipe.data, ctx.dir("data")
    if d.rec:
        from scoremix_plugin.recordio import FaceRecFolder

        rec = ctx.resolve(d.rec)
        with FaceRecFolder(rec) as folder:
            num_classes, num_image = int(folder.num_classes), len(folder)
        res = DataResult(str(rec), num_classes, num_image, {p.stem: str(p) for p in sorted(rec.glob("*.bin"))}, False)
        write_json_atomic(out / "data.json", to_json(res))
        return res
    from scoremix_plugin.toydata import write_toy_dataset

    t = d.toy
    s = write_toy_dataset(
        out,
        num_identities=t.identities,
        images_per_identity=t.images_per_identity,
        num_test_identities=t.test_identities,
        num_pairs=t.pairs,
        seed=toy_seed(ctx.recipe),
        progress=ctx.progress,
    )
    bins = {name: str(out / b["file"]) for name, b in s["test"]["bins"].items()}
    return DataResult(str(out), s["train"]["num_classes"], s["train"]["num_image"], bins, True)


# Stages: the two recognisers.


def recogniser_job(ctx: Context, stage: str) -> dict[str, Any]:
    """The recipe's recogniser config with this run's data, sizes and output filled in."""
    from scoremix_plugin.config import read_config_file

    cfg = read_config_file(ctx.resolve(ctx.recipe.recogniser))
    data = ctx.result("data")
    # No verification inside training: the verify stage scores both recognisers the same way, once.
    cfg.update(
        rec=data.rec,
        num_classes=data.num_classes,
        num_image=data.num_image,
        output=str(ctx.dir(stage)),
        val_targets=[],
        dataset="rec",
    )
    cfg.pop("scoremix", None)
    if stage == "scoremix":
        from scoremix_plugin.synthesis.manifest import Manifest

        manifest = Manifest.read(ctx.result("generate").manifest)
        block = {k: ctx.recipe.scoremix[k] for k in ("ratio", "aug_real", "aug_synthetic")}
        cfg.update(
            dataset="scoremix",
            scoremix={"manifest": str(manifest.path), **block},
            num_classes=manifest.num_classes,
            num_image=manifest.num_image,
        )
        if ctx.recipe.scoremix.same_steps:
            # As many optimiser steps as the baseline: the comparison is then about the data,
            # not about a longer schedule.
            cfg["num_epoch"] = max(1, round(int(cfg.get("num_epoch", 1)) * data.num_image / cfg["num_image"]))
    if ctx.recipe.device:
        cfg["device"] = ctx.recipe.device
    return cfg


def run_recogniser(ctx: Context, stage: str) -> RecogniserResult:
    from scoremix_plugin.config import recogniser_config, write_config_file
    from scoremix_plugin.recognition.train import train

    job = recogniser_job(ctx, stage)
    src = ctx.resolve(ctx.recipe.recogniser)
    # The file is the run's record (and what `scoremix train` / torchrun reruns); training reads the same job.
    path = write_config_file(
        ctx.dir(stage) / "config.py", job, f"Written by `scoremix pipeline` (stage {stage}) from {src}."
    )
    res = train(recogniser_config(job, source=str(path)), progress=ctx.progress)
    return RecogniserResult(
        str(path),
        res["model"],
        job.get("network"),
        job["num_classes"],
        job["num_image"],
        job.get("num_epoch"),
        res.get("global_step"),
        job.get("image_degrade"),
    )


def recogniser_settings(stage: str) -> Callable[[Context], Any]:
    def settings(ctx: Context) -> Any:
        extra = dict(ctx.recipe.scoremix) if stage == "scoremix" else {}
        return {"device": ctx.recipe.device, **extra}

    return settings


# Stage: generator.


def run_generator(ctx: Context) -> GeneratorResult:
    """Train the generator (recipe.generator a config) or take a trained one (a ``.pt``); then, as the recipe
    asks, reconstruct its post-hoc EMA (``generator_sigma_rel``) and make the autoguidance guide (``guide``)."""
    import math

    from scoremix_plugin.config import read_config_file, write_config_file
    from scoremix_plugin.generation.checkpoint import load_checkpoint

    src, out, data = generator_source(ctx), ctx.dir("generator"), ctx.result("data")
    spec = guide_spec(ctx.recipe)
    sigma_rel = ctx.recipe.get("generator_sigma_rel")  # .get: experiments build recipes without the newer keys
    pretrained, sha256 = None, None
    if is_pretrained_ref(ctx.recipe.generator):
        pretrained, sha256 = check_pretrained_fits(ctx)
    if src.suffix == ".pt":
        ckpt = load_checkpoint(src)
        if int(ckpt["num_classes"]) != data.num_classes:
            raise PipelineError(
                f"recipe.generator {src}: trained on {ckpt['num_classes']} classes, the data stage "
                f"has {data.num_classes}"
            )
        cfg = dict(ckpt["config"], rec=data.rec)  # a guide trained here learns the same data
        run_dir, step, loss, stopped, trained = src.parent, int(ckpt["step"]), math.nan, False, False
    else:
        from scoremix_plugin.generation.train import train_generator

        cfg = read_config_file(src)
        cfg.update(rec=data.rec, output=str(out))
        cfg.setdefault("seed", ctx.recipe.seed)
        if ctx.recipe.device:
            cfg["device"] = ctx.recipe.device
        if spec and spec["kind"] == "snapshot" and sigma_rel is None and not cfg.get("snapshot_every"):
            # The early snapshot autoguidance uses: keep one every fraction of the run.
            cfg["snapshot_every"] = max(1, round(spec["fraction"] * int(cfg.get("total_steps", 1))))
        write_config_file(out / "config.py", cfg, f"Written by `scoremix pipeline` (stage generator) from {src}.")
        res = train_generator(cfg, progress=ctx.progress)
        # bool()/float()/int(): the result goes into a JSON marker, and these may come back as 0-d tensors.
        run_dir, step, loss, stopped, trained = (
            out,
            int(res["step"]),
            float(res["final_loss"]),
            bool(res.get("stopped_early")),
            True,
        )
        src = Path(res["checkpoint"])
    checkpoint = src
    if sigma_rel is not None:
        checkpoint = _posthoc_checkpoint(run_dir, float(sigma_rel), None, out / "generator-ema.pt")
    guide, guide_step = None, None
    if spec is not None:
        guide, guide_step = _make_guide(spec, run_dir, step, sigma_rel, cfg, out, ctx)
    if pretrained is not None:
        sigma_rel = ckpt.get("posthoc_ema", {}).get("sigma_rel")  # the shipped file is that reconstruction
    return GeneratorResult(
        str(checkpoint),
        step,
        data.num_classes,
        loss,
        stopped,
        trained,
        None if sigma_rel is None else float(sigma_rel),
        None if guide is None else str(guide),
        None if spec is None else spec["kind"],
        guide_step,
        pretrained,
        sha256,
    )


def generator_source(ctx: Context) -> Path:
    """recipe.generator as a file: a training config, a checkpoint, or a shipped generator's ``.pt``."""
    from scoremix_plugin.generation.pretrained import pretrained_dir

    g = ctx.recipe.generator
    if is_pretrained_ref(g):
        return pretrained_dir() / f"{g[len('pretrained:') :]}.pt"
    return ctx.resolve(g)


def check_pretrained_fits(ctx: Context) -> tuple[str, str]:
    """(name, sha256) of the recipe's shipped generator, after checking that the data stage made the toy data it
    was trained on: the same identities, images and seed, rendered by the same renderer (its fingerprint)."""
    from scoremix_plugin.generation.pretrained import resolve
    from scoremix_plugin.toydata import toy_fingerprint

    ref = ctx.recipe.generator
    path, prov = resolve(ref)
    d = ctx.recipe.data
    if d.rec:
        raise PipelineError(
            f"recipe.generator {ref!r} was trained on the toy data; recipe.data.rec ({d.rec}) is "
            "another dataset: train a generator on it (recipe.generator = a generator config)"
        )
    want = prov["toy"]
    fp = toy_fingerprint(
        num_identities=d.toy.identities,
        images_per_identity=d.toy.images_per_identity,
        seed=toy_seed(ctx.recipe),
        size=int(want.get("size", 112)),
    )
    diff = [k for k in fp if fp[k] != want.get(k)]
    if diff:
        raise PipelineError(
            f"recipe.generator {ref!r}: the toy data here differs from the data it was trained on "
            f"in {diff} (recipe: {[fp[k] for k in diff]}, {path.name}: {[want.get(k) for k in diff]}); "
            "set recipe.data.toy to its identities / images_per_identity / seed, or train a "
            "generator (recipe.generator = a generator config)"
        )
    return ref[len("pretrained:") :], prov["weights"]["sha256"]


def toy_seed(recipe: Any) -> int:
    """The toy data's seed: recipe.data.toy.seed, else the recipe's seed."""
    s = recipe.data.toy.get("seed")
    return int(recipe.seed if s is None else s)


def guide_spec(recipe: Any) -> dict[str, Any] | None:
    """recipe.guide as ``{"kind": "checkpoint", "path"} | {"kind": "snapshot"|"smaller", "fraction", "preset"}``.

    Checked at recipe load (``recipe.check_guide``) so a bad guide fails before anything trains.
    """
    g = recipe.get("guide")
    if g is None:
        return None
    if isinstance(g, (str, Path)):
        return {"kind": "checkpoint", "path": str(g)}
    return {"kind": g["kind"], "fraction": float(g.get("fraction", 0.25)), "preset": g.get("preset")}


def _posthoc_checkpoint(run_dir: Path, sigma_rel: float, step: int | None, dest: Path) -> Path:
    from scoremix_plugin.generation.posthoc_ema import write_reconstruction

    write_reconstruction(run_dir, sigma_rel, dest, step)
    return dest


def _make_guide(spec: dict, run_dir: Path, step: int, sigma_rel, cfg: dict, out: Path, ctx: Context):
    """(guide checkpoint, its step): autoguidance's weaker model, by the kind the recipe names."""
    from scoremix_plugin.generation.checkpoint import load_checkpoint
    from scoremix_plugin.generation.guide import guide_snapshot, nearest_earlier_step, train_guide

    if spec["kind"] == "checkpoint":
        path = ctx.resolve(spec["path"])
        return path, int(load_checkpoint(path)["step"])
    if spec["kind"] == "snapshot":
        if sigma_rel is not None:
            # A post-hoc EMA run: the guide is the same EMA length reconstructed at an early snapshot step.
            from scoremix_plugin.generation.posthoc_ema import list_snapshots

            steps = [s for s, _ in list_snapshots(run_dir) if s < step]
            if not steps:
                raise PipelineError(f"recipe.guide: {run_dir} has no post-hoc EMA snapshot before step {step}")
            g_step = nearest_earlier_step(steps, spec["fraction"], step)
            return _posthoc_checkpoint(run_dir, float(sigma_rel), g_step, out / "guide.pt"), g_step
        path = guide_snapshot(run_dir, spec["fraction"], main_step=step)
        return path, int(load_checkpoint(path)["step"])
    overrides = {"device": ctx.recipe.device} if ctx.recipe.device else {}
    res = train_guide(
        cfg, preset=spec["preset"], fraction=spec["fraction"], output=out / "guide", progress=ctx.progress, **overrides
    )
    return Path(res["checkpoint"]), int(res["step"])


# Stage: centres (export the baseline, embed the real classes, the generator's conditions).


def run_centres(ctx: Context) -> CentresResult:
    from scoremix_plugin.generation.conditions import export_conditions
    from scoremix_plugin.recognition.embed import write_embedding_centres, write_head_centres
    from scoremix_plugin.recognition.export import export_model
    from scoremix_plugin.verification.evaluate import load_embedder

    out, base = ctx.dir("centres"), ctx.result("baseline")
    onnx = export_model(base.model, base.network, out / "baseline.onnx")["onnx"]
    # Centres of the real images as they are (not through image_degrade): the verification images
    # are not degraded either, so selection and evaluation see the recogniser the same way.
    write_embedding_centres(
        load_embedder(onnx, device=ctx.recipe.device),
        ctx.result("data").rec,
        out / "embedding.npz",
        batch_size=ctx.recipe.centres.batch_size,
        progress=ctx.progress,
    )
    head_ckpt, head = ctx.dir("baseline") / "checkpoint_rank0.pt", None
    if head_ckpt.is_file():
        head = str(out / "head.npz")
        write_head_centres([head_ckpt], head)
    export_conditions(ctx.result("generator").checkpoint, out / "condition.npz")
    return CentresResult(str(onnx), str(out / "embedding.npz"), str(out / "condition.npz"), head)


# Stage: select.


def run_select(ctx: Context) -> SelectResult:
    from scoremix_plugin.synthesis.select import run_selection

    sel, out = ctx.recipe.selection, ctx.dir("select") / "pairs.csv"
    chosen = run_selection(
        ctx.result("centres").path(sel.space),
        out,
        strategy=sel.strategy,
        num_identities=sel.num_identities,
        max_uses=sel.max_uses,
        k=sel.k,
        weights=sel.weights,
        seed=ctx.recipe.seed,
        progress=ctx.progress,
    )
    d = chosen.distance
    return SelectResult(str(out), int(len(d)), sel.strategy, sel.space, float(d.mean()), float(d.min()), float(d.max()))


# Stage: generate (ScoreMix shards + manifest; their quality is the dataset_report stage's).


def run_generate(ctx: Context) -> GenerateResult:
    from scoremix_plugin.synthesis.generate import GenerateSettings, generate

    g, out = ctx.recipe.generation, ctx.dir("generate")
    settings = GenerateSettings(
        ckpt=ctx.result("generator").checkpoint,
        pairs=ctx.result("select").pairs,
        real=ctx.result("data").rec,
        images_per_identity=g.images_per_identity,
        shard_size=g.shard_size,
        steps=g.steps,
        solver=g.solver,
        guidance=g.guidance,
        guidance_scale=g.guidance_scale,
        guide=ctx.result("generator").guide,
        mix_window=None if g.mix_window is None else tuple(g.mix_window),
        seed=ctx.recipe.seed,
        guidance_interval=None if g.guidance_interval is None else tuple(g.guidance_interval),
        batch_size=g.batch_size,
        bf16=g.bf16,
        # Only when asked: AugGen's condition mixing (mix_space "condition") needs a sampler that has it.
        **({"mix_space": g.mix_space} if g.get("mix_space", "score") != "score" else {}),
    )
    manifest = generate(settings, out, device=ctx.recipe.device, grids=True, progress=ctx.progress)
    return GenerateResult(str(manifest.path), manifest.num_synthetic_classes, manifest.num_synthetic_images)


# Stage: dataset_report (the synthetic and the real set under the baseline recogniser; the quality gate).


def run_dataset_report(ctx: Context) -> DatasetReportResult:
    from scoremix_plugin.datareport.report import report_dataset

    r, out = ctx.recipe.dataset_report, ctx.dir("dataset_report")
    rep = report_dataset(
        ctx.result("generate").manifest,
        ctx.result("centres").onnx,
        out,
        real=ctx.result("data").rec,
        bins={t: Path(p) for t, p in verification_targets(ctx).items()},
        far=float(r.far),
        min_share=float(r.min_share),
        seed=ctx.recipe.seed,
        device=ctx.recipe.device,
        progress=ctx.progress,
    )
    gate = rep.gate.text() if rep.gate is not None else "no verdict: no synthetic identities"
    if rep.gate is not None and not rep.gate.passed and ctx.recipe.quality_gate:
        # Training on identities the recogniser cannot tell apart costs accuracy (measured: -1 point at 400
        # toy classes): stop here, with the numbers, before the ScoreMix stage spends its time.
        raise PipelineError(f"{gate}\n(report: {out / 'report.md'}; recipe.quality_gate = False trains anyway)")
    return DatasetReportResult(
        str(out / "report.md"),
        str(out / "report.json"),
        rep.headline(),
        None if rep.gate is None else bool(rep.gate.passed),
        gate,
    )


# Stage: merge (real + synthetic as one arcface_torch folder, the route for an unchanged host).


def run_merge(ctx: Context) -> MergeResult:
    from scoremix_plugin.integration.merge import merge

    m = ctx.recipe.merge
    # overwrite: a rerun replaces the folder (merge builds it under a temporary name, then renames).
    res = merge(
        ctx.result("data").rec,
        ctx.result("generate").manifest,
        ctx.dir("merge"),
        name=m.name,
        config_overrides=dict(m.config_overrides or {}),
        overwrite=True,
        progress=ctx.progress,
    )
    return MergeResult(str(ctx.dir("merge")), res.get("config"), res.get("num_classes"), res.get("num_image"))


# Stage: verify.


def load_embedder_of(ctx: Context, run: RecogniserResult):
    """The embedder of a trained recogniser, on the recipe's device."""
    from scoremix_plugin.verification.evaluate import load_embedder

    return load_embedder(run.model, network=run.network, device=ctx.recipe.device)


def verify_recogniser(ctx: Context, run: RecogniserResult) -> dict:
    """One recogniser on the recipe's targets: ``{target: VerificationResult}``."""
    from scoremix_plugin.verification.evaluate import verify_bins

    embedder = load_embedder_of(ctx, run)
    return verify_bins(
        embedder, verification_targets(ctx), batch_size=ctx.recipe.verification.batch_size, progress=ctx.progress
    )


def ijb_targets(ctx: Context) -> list[dict[str, Any]]:
    """``recipe.verification.ijb``: one ``edict(root=..., target="IJBC", modes="F1N1D1")`` or a list of them."""
    from scoremix_plugin.verification.ijb import check_modes
    from scoremix_plugin.verification.ijb_meta import IJBError, check_target

    given = ctx.recipe.verification.get("ijb")
    if not given:
        return []
    specs = [given] if isinstance(given, dict) else list(given)
    out = []
    for i, spec in enumerate(specs):
        where = "recipe.verification.ijb" + (f"[{i}]" if not isinstance(given, dict) else "")
        if not isinstance(spec, dict) or not spec.get("root") or not spec.get("target"):
            raise PipelineError(
                f"{where}: expected edict(root=<IJB folder>, target='IJBB'|'IJBC', modes='F1N1D1'), got {spec!r}"
            )
        unknown = sorted(set(spec) - {"root", "target", "modes"})
        if unknown:
            raise PipelineError(f"{where}: unknown key(s) {unknown}; known: ['modes', 'root', 'target']")
        try:
            target, modes = check_target(spec["target"]), check_modes(spec.get("modes") or "F1N1D1")
        except IJBError as e:
            raise PipelineError(f"{where}: {e}") from None
        out.append({"root": ctx.resolve(spec["root"]), "target": target, "modes": modes})
    return out


def tinyface_target(ctx: Context) -> dict[str, Any] | None:
    """``recipe.verification.tinyface``: ``edict(root=..., aligned_dir="aligned_pad_0.1_pad_high")`` or None."""
    from scoremix_plugin.verification.tinyface import ALIGNED_DIR

    spec = ctx.recipe.verification.get("tinyface")
    if not spec:
        return None
    where = "recipe.verification.tinyface"
    if not isinstance(spec, dict) or not spec.get("root"):
        raise PipelineError(f"{where}: expected edict(root=<TinyFace root>, aligned_dir='{ALIGNED_DIR}'), got {spec!r}")
    unknown = sorted(set(spec) - {"root", "aligned_dir"})
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {unknown}; known: ['aligned_dir', 'root']")
    return {"root": ctx.resolve(spec["root"]), "aligned_dir": spec.get("aligned_dir") or ALIGNED_DIR}


def verify_settings(ctx: Context) -> dict[str, Any]:
    v = dict(ctx.recipe.verification)
    # No IJB / TinyFace block: the settings stay what they were before these existed, so finished runs keep
    # their fingerprint.
    for key in ("ijb", "tinyface"):
        if not v.get(key):
            v.pop(key, None)
    return v


def run_verify(ctx: Context) -> VerifyResult:
    from scoremix_plugin.verification.ijb import evaluate_ijb
    from scoremix_plugin.verification.report import write_ijb_report, write_report

    runs = ("baseline", "scoremix")
    results = {run: verify_recogniser(ctx, ctx.result(run)) for run in runs}
    paths = write_report(ctx.dir("verify"), results, title=f"{ctx.recipe.name}: baseline vs ScoreMix")
    ijb: dict[str, dict[str, Any]] = {}
    for spec in ijb_targets(ctx):
        found = {
            run: evaluate_ijb(
                spec["root"],
                spec["target"],
                load_embedder_of(ctx, ctx.result(run)),
                spec["modes"],
                batch_size=ctx.recipe.verification.batch_size,
                progress=ctx.progress,
            )
            for run in runs
        }
        files = write_ijb_report(
            ctx.dir("verify") / spec["target"].lower(),
            found,
            title=f"{ctx.recipe.name}: {spec['target']}, baseline vs ScoreMix",
            meta={"root": str(spec["root"])},
        )
        ijb[spec["target"]] = {
            "far": list(found["baseline"].fars),
            "json": str(files["json"]),
            "markdown": str(files["markdown"]),
            "roc": str(files["roc"]),
            **{run: {m: r.to_dict() for m, r in res.modes.items()} for run, res in found.items()},
        }
    tinyface: dict[str, Any] = {}
    spec = tinyface_target(ctx)
    if spec is not None:
        from scoremix_plugin.verification.report import write_tinyface_report
        from scoremix_plugin.verification.tinyface import evaluate_tinyface

        found = {
            run: evaluate_tinyface(
                spec["root"],
                load_embedder_of(ctx, ctx.result(run)),
                aligned_dir=spec["aligned_dir"],
                batch_size=ctx.recipe.verification.batch_size,
                progress=ctx.progress,
            )
            for run in runs
        }
        files = write_tinyface_report(
            ctx.dir("verify") / "tinyface",
            found,
            title=f"{ctx.recipe.name}: TinyFace, baseline vs ScoreMix",
            meta={"root": str(spec["root"])},
        )
        tinyface = {
            "json": str(files["json"]),
            "markdown": str(files["markdown"]),
            "cmc": str(files["cmc"]),
            **{run: r.to_dict() for run, r in found.items()},
        }
    return VerifyResult(
        {run: {t: float(r.accuracy_mean) for t, r in res.items()} for run, res in results.items()},
        {run: {t: float(r.accuracy_std) for t, r in res.items()} for run, res in results.items()},
        str(paths["roc"]),
        str(paths["json"]),
        str(paths["markdown"]),
        ijb,
        tinyface,
    )


# Stage: align.


def run_align(ctx: Context) -> AlignResult:
    from scoremix_plugin.synthesis.align import run_alignment

    c, out = ctx.result("centres"), ctx.dir("align")
    res = run_alignment(c.condition, c.embedding, out_dir=out, seed=ctx.recipe.seed)
    keys = (
        "num_matched",
        "linear_cka",
        "linear_cka_shuffled",
        "rbf_cka",
        "rbf_cka_shuffled",
        "mutual_knn",
        "mutual_knn_shuffled",
    )
    return AlignResult(str(out / "alignment.json"), str(out / "alignment.png"), **{k: res.get(k) for k in keys})


# The stage table.


def _out(*rel: str) -> Callable[[Context], list[Path]]:
    return lambda ctx: [ctx.out / p for p in rel]


def _recogniser_file(ctx: Context) -> list[Path]:
    return [ctx.resolve(ctx.recipe.recogniser)]


def generator_settings(ctx: Context) -> dict[str, Any]:
    return {
        "device": ctx.recipe.device,
        "guide": guide_spec(ctx.recipe),
        "sigma_rel": ctx.recipe.get("generator_sigma_rel"),
    }


def generator_outputs(ctx: Context) -> list[Path]:
    """What must still exist for the stage to count as complete (a trained-elsewhere generator is an input)."""
    out = [] if generator_source(ctx).suffix == ".pt" else [ctx.out / "generator/generator.pt"]
    if ctx.recipe.get("generator_sigma_rel") is not None:
        out.append(ctx.out / "generator/generator-ema.pt")
    return out


def generator_files(ctx: Context) -> list[Path]:
    spec = guide_spec(ctx.recipe)
    return [generator_source(ctx)] + ([ctx.resolve(spec["path"])] if spec and spec["kind"] == "checkpoint" else [])


REPORT_NEEDS = ("data", "baseline", "generator", "select", "generate", "dataset_report", "scoremix", "verify", "align")

STAGES: tuple[Stage, ...] = (
    Stage("data", run_data, (), data_settings, data_outputs, help="toy identities or a real folder", result=DataResult),
    Stage(
        "baseline",
        lambda ctx: run_recogniser(ctx, "baseline"),
        ("data",),
        recogniser_settings("baseline"),
        _out("baseline/model.pt"),
        help="recogniser on real data",
        result=RecogniserResult,
        files=_recogniser_file,
    ),
    Stage(
        "generator",
        run_generator,
        ("data",),
        generator_settings,
        generator_outputs,
        help="class-conditional EDM generator (and its autoguidance guide)",
        result=GeneratorResult,
        files=generator_files,
    ),
    Stage(
        "centres",
        run_centres,
        ("data", "baseline", "generator"),
        lambda ctx: dict(ctx.recipe.centres),
        _out("centres/baseline.onnx", "centres/embedding.npz", "centres/condition.npz"),
        help="ONNX export, class centres, generator conditions",
        result=CentresResult,
    ),
    Stage(
        "select",
        run_select,
        ("centres",),
        lambda ctx: {**ctx.recipe.selection, "seed": ctx.recipe.seed},
        _out("select/pairs.csv"),
        help="pairs of classes to mix",
        result=SelectResult,
    ),
    Stage(
        "generate",
        run_generate,
        ("data", "generator", "centres", "select"),
        lambda ctx: {**ctx.recipe.generation, "seed": ctx.recipe.seed},
        _out("generate/manifest.json"),
        help="ScoreMix identities into shards",
        result=GenerateResult,
    ),
    Stage(
        "dataset_report",
        run_dataset_report,
        ("data", "centres", "generate"),
        lambda ctx: {**ctx.recipe.dataset_report, "quality_gate": ctx.recipe.quality_gate, "seed": ctx.recipe.seed},
        _out("dataset_report/report.json"),
        help="EER / d' / FDR, leak checks and the quality gate of the synthetic set",
        result=DatasetReportResult,
    ),
    Stage(
        "merge",
        run_merge,
        ("data", "generate"),
        lambda ctx: dict(ctx.recipe.merge),
        _out("merged/train.rec", "merged/train.idx"),
        help="real + synthetic as one arcface_torch folder",
        result=MergeResult,
        folder="merged",
    ),
    Stage(
        "scoremix",
        lambda ctx: run_recogniser(ctx, "scoremix"),
        ("data", "generate"),
        recogniser_settings("scoremix"),
        _out("scoremix/model.pt"),
        help="recogniser on real + synthetic",
        result=RecogniserResult,
        files=_recogniser_file,
    ),
    Stage(
        "verify",
        run_verify,
        ("data", "baseline", "scoremix"),
        verify_settings,
        _out("verify/verification.json"),
        help="verification of both recognisers",
        result=VerifyResult,
    ),
    Stage(
        "align",
        run_align,
        ("centres",),
        lambda ctx: {"seed": ctx.recipe.seed},
        _out("align/alignment.json"),
        help="CKA of generator conditions vs recogniser centres",
        result=AlignResult,
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES) + ("report",)
