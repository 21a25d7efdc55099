"""The ScoreMix pipeline end to end, driven by one recipe file (the demo is ``recipes/demo.py``).

``scoremix pipeline RECIPE --out DIR [--stage NAME | --from NAME] [--force] [--list]``

Stages, in order (each writes under ``DIR/<stage>/``):

========== ================================================================================
data       the toy identity dataset (``recipe.data.toy``) or a real InsightFace folder
           (``recipe.data.rec``, with its ``<target>.bin`` files beside it)
baseline   recogniser trained on the real data (``recipe.recogniser`` config file)
generator  class-conditional EDM generator trained on the same data (``recipe.generator``)
centres    baseline exported to ONNX; class centres in its embedding space (+ its head's
           weights) and the generator's condition vectors, as centres files
select     pairs of classes (``recipe.selection``: strategy, space, number of identities)
generate   ScoreMix identities into RecordIO shards + manifest (``recipe.generation``)
merge      real + synthetic merged into one arcface_torch folder with its config
           (``DIR/merged/``: the route for an unchanged host)
scoremix   recogniser trained on real + synthetic through ``config.dataset = "scoremix"``
verify     both recognisers on the verification targets (``recipe.verification``)
align      linear CKA / mutual kNN of generator conditions vs recogniser centres
report     ``DIR/report.md`` + ``DIR/report.json`` + figures under ``DIR/figures/``
========== ================================================================================

Skip when complete: after a stage's outputs are all written, ``DIR/.stages/<stage>.json`` is
written atomically with the stage's *fingerprint* (a hash of the recipe settings it reads, the
contents of the config files it reads, and the run ids of the stages it depends on), its run
id and its duration. A later run skips a stage whose marker matches and whose outputs exist;
a stage that runs again gets a new run id, so every stage after it runs again too.
``--stage NAME`` reruns that one stage (its inputs must be complete), ``--from NAME`` reruns
it and every stage after it, ``--force`` reruns everything.

Recipe format: a Python file defining ``config = edict(...)`` (like an arcface_torch config).
Paths inside are relative to the recipe's folder. Keys::

    config = edict(
        name="demo",                       # shown in the report
        seed=0,                            # seeds the toy data, selection and generation
        device=None,                       # None: cuda when available, else cpu
        data=edict(
            toy=edict(identities=40, images_per_identity=16, test_identities=20, pairs=300),
            rec=None,                      # OR a real InsightFace folder (then toy is ignored)
        ),
        recogniser="demo/recogniser.py",   # arcface_torch-style config: network, lr, epochs,
                                           # image_degrade, ... (rec / num_classes / num_image /
                                           # output are filled in per run; val_targets is
                                           # emptied: the verify stage scores both runs)
        generator="demo/generator.py",     # generator training config (data / classes filled in)
        centres=edict(batch_size=64),      # embedding of the real images for the class centres
        selection=edict(strategy="far", space="embedding", num_identities=40, max_uses=2,
                        k=2, weights=None),  # space: "embedding", "head" or "condition";
                                             # num_identities <= classes * max_uses / k
        generation=edict(images_per_identity=16, solver="heun", steps=8, guidance="cfg",
                         guidance_scale=2.5, mix_window=None,  # or (sigma_lo, sigma_hi)
                         shard_size=1000, batch_size=16, bf16=True),
        scoremix=edict(ratio=None, aug_real=None, aug_synthetic=None,  # -> config.scoremix block
                       same_steps=True),  # ScoreMix run gets the baseline's optimiser steps
        merge=edict(name="scoremix_merged",     # DIR/merged/NAME.py: the host's job config
                    config_overrides=None),     # e.g. {"network": "r50", "num_epoch": 20}
        verification=edict(targets=["toy_lfw", "toy_cfp_fp"], batch_size=64),
        report=edict(grid_pairs=6, grid_images=6),
    )

Launch: ``scoremix pipeline recipes/demo.py --out demo_out`` (``make demo``). Every stage runs in
this one process on one device; for multi-GPU training run that stage's own command under torchrun
(e.g. ``torchrun --nproc_per_node=8 -m scoremix_plugin train DIR/scoremix/config.py``). The last
line printed is the path of ``report.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from easydict import EasyDict as edict

from scoremix_plugin.errors import ScoreMixError
from scoremix_plugin.io_utils import sha256_file, write_json_atomic, write_text_atomic

MARKER_DIR = ".stages"


class PipelineError(ScoreMixError, RuntimeError):
    """A recipe key, a stage name or a stage's inputs are wrong; the message names which."""


# Recipe.

RECIPE_DEFAULTS: dict[str, Any] = {
    "name": "pipeline",
    "seed": 0,
    "device": None,
    "data": {"toy": {"identities": 40, "images_per_identity": 16, "test_identities": 20, "pairs": 300}, "rec": None},
    "recogniser": None,
    "generator": None,
    "centres": {"batch_size": 64},
    "selection": {"strategy": "far", "space": "embedding", "num_identities": 40, "max_uses": 1, "k": 2,
                  "weights": None},
    "generation": {"images_per_identity": 16, "solver": "heun", "steps": 8, "guidance": "cfg",
                   "guidance_scale": 2.5, "mix_window": None, "shard_size": 1000, "batch_size": 16, "bf16": True},
    "scoremix": {"ratio": None, "aug_real": None, "aug_synthetic": None, "same_steps": True},
    "merge": {"name": "scoremix_merged", "config_overrides": None},
    "verification": {"targets": None, "batch_size": 64},
    "report": {"grid_pairs": 6, "grid_images": 6},
}


def _fill(defaults: Mapping[str, Any], given: Mapping[str, Any], path: Path, where: str) -> dict[str, Any]:
    """``given`` over ``defaults``, block by block; a key the defaults do not know is an error."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) in {where}: {unknown}; known: {sorted(defaults)}")
    out = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        if isinstance(default, Mapping) and isinstance(value, Mapping):
            value = _fill(default, value, path, f"{where}.{key}")
        out[key] = value
    return out


def load_recipe(path: str | os.PathLike) -> edict:
    """Read a recipe file and fill in the defaults (a block given in the recipe is merged key by key)."""
    from scoremix_plugin.config import read_config_file

    p = Path(path)
    job = read_config_file(p)
    recipe = _fill(RECIPE_DEFAULTS, job, p, "recipe")
    for key in ("recogniser", "generator"):
        if not recipe[key]:
            raise PipelineError(f"{p}: recipe.{key} (a config file, relative to the recipe) is required")
    recipe["_path"] = str(p.resolve())
    return edict(recipe)


# Stages.


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[["Context"], Mapping[str, Any]]  # does the work; returns a JSON-able summary
    needs: tuple[str, ...]  # stages whose outputs it reads
    settings: Callable[["Context"], Any]  # the recipe settings it reads (fingerprinted)
    outputs: Callable[["Context"], Sequence[Path]]  # files that must exist when it is complete
    files: Callable[["Context"], Sequence[Path]] = lambda ctx: ()  # config files it reads (hashed)
    help: str = ""
    folder: str | None = None  # its output folder under OUT (default: its name; "" = OUT itself)


@dataclass
class Context:
    recipe: edict
    out: Path
    progress: bool = True
    markers: dict[str, dict] = field(default_factory=dict)

    @property
    def recipe_dir(self) -> Path:
        return Path(self.recipe._path).parent

    def resolve(self, rel: str | os.PathLike) -> Path:
        """A path from the recipe (relative to the recipe's folder)."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else (self.recipe_dir / p).resolve()

    def dir(self, stage: str) -> Path:
        """A stage's output folder."""
        return self.out / STAGE_FOLDERS.get(stage, stage)

    def summary(self, stage: str) -> dict:
        """What an earlier stage returned (recorded in its marker)."""
        if stage not in self.markers:
            raise PipelineError(f"stage '{stage}' has not completed in {self.out} (run it first)")
        return self.markers[stage]["summary"]


def marker_path(out: Path, stage: str) -> Path:
    return out / MARKER_DIR / f"{stage}.json"


def read_marker(out: Path, stage: str) -> dict | None:
    p = marker_path(out, stage)
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None  # a damaged marker means "not complete": the stage runs again
    return m if isinstance(m, dict) and m.get("stage") == stage else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    return obj


def fingerprint(stage: Stage, ctx: Context) -> str:
    """Hash of what the stage reads: recipe settings, config file contents, upstream run ids."""
    files = {}
    for f in stage.files(ctx):
        f = Path(f)
        if not f.is_file():
            raise PipelineError(f"stage '{stage.name}': config file not found: {f}")
        files[str(f)] = sha256_file(f)
    upstream = {}
    for dep in stage.needs:
        m = ctx.markers.get(dep)
        if m is None:
            raise PipelineError(f"stage '{stage.name}' needs stage '{dep}', which has not completed in {ctx.out}")
        upstream[dep] = m["run_id"]
    payload = {"stage": stage.name, "settings": _jsonable(stage.settings(ctx)), "files": files, "upstream": upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def is_complete(stage: Stage, ctx: Context, fp: str) -> bool:
    m = read_marker(ctx.out, stage.name)
    if m is None or m.get("fingerprint") != fp:
        return False
    return all(Path(p).exists() for p in stage.outputs(ctx))


def run_stages(stages: Sequence[Stage], ctx: Context, *, only: str | None = None, start: str | None = None,
               force: bool = False, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Run (or skip) each stage in order; returns ``{stage: {"status": "ran"|"skipped", "seconds": s}}``.

    ``only``: rerun that stage alone (its inputs must be complete). ``start``: rerun it and all after.
    """
    names = [s.name for s in stages]
    for opt, value in (("--stage", only), ("--from", start)):
        if value is not None and value not in names:
            raise PipelineError(f"{opt} {value!r}: no such stage; stages: {names}")
    selected = [s for s in stages if only is None or s.name == only]
    forced = set()
    if force:
        forced = set(names)
    elif only is not None:
        forced = {only}
    elif start is not None:
        forced = set(names[names.index(start):])
    # Markers of the stages not run here are the inputs of those that are.
    for s in stages:
        m = read_marker(ctx.out, s.name)
        if m is not None:
            ctx.markers[s.name] = m
    status: dict[str, dict] = {}
    for i, stage in enumerate(selected, start=1):
        fp = fingerprint(stage, ctx)
        head = f"[pipeline {i}/{len(selected)}] {stage.name}"
        if stage.name not in forced and is_complete(stage, ctx, fp):
            m = ctx.markers[stage.name]
            log(f"{head}: complete, skipped (took {m['seconds']:.1f} s when it ran)")
            status[stage.name] = {"status": "skipped", "seconds": m["seconds"]}
            continue
        log(f"{head}: running ({stage.help})")
        # A stage that fails half-way must not look complete next time under its old marker.
        marker_path(ctx.out, stage.name).unlink(missing_ok=True)
        ctx.markers.pop(stage.name, None)
        ctx.dir(stage.name).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        summary = dict(stage.run(ctx))
        seconds = time.perf_counter() - t0
        missing = [str(p) for p in stage.outputs(ctx) if not Path(p).exists()]
        if missing:
            raise PipelineError(f"stage '{stage.name}' finished without writing {missing}")
        marker = {"stage": stage.name, "fingerprint": fp, "run_id": uuid.uuid4().hex, "seconds": round(seconds, 3),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": _jsonable(summary)}
        write_json_atomic(marker_path(ctx.out, stage.name), marker)
        ctx.markers[stage.name] = marker
        status[stage.name] = {"status": "ran", "seconds": marker["seconds"]}
        log(f"{head}: done in {seconds:.1f} s")
    return status


# Helpers shared by the stages.


def write_config_file(path: Path, cfg: Mapping[str, Any], comment: str) -> Path:
    """Write an arcface_torch-style config file (``config = edict(...)``) that reproduces ``cfg``."""
    lines = [f"# {line}" for line in comment.splitlines()] + [
        "from easydict import EasyDict as edict", "", "config = edict()"]
    for key, value in cfg.items():
        value = _plain(value)
        if isinstance(value, dict):
            lines.append(f"config.{key} = edict({value!r})")
        else:
            lines.append(f"config.{key} = {value!r}")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def _cli(argv: Sequence[Any]) -> None:
    """Run one scoremix subcommand in this process; a non-zero status stops the pipeline."""
    from scoremix_plugin import cli

    argv = [str(a) for a in argv]
    rc = cli.main(argv)
    if rc:
        raise PipelineError(f"`scoremix {' '.join(argv)}` failed with status {rc}")


def _targets(ctx: Context) -> dict[str, str]:
    """The verification targets to score: ``{name: path.bin}`` from the data stage."""
    bins = ctx.summary("data")["bins"]
    wanted = ctx.recipe.verification.targets or list(bins)
    missing = [t for t in wanted if t not in bins]
    if missing:
        raise PipelineError(f"recipe.verification.targets {missing} have no .bin file in the data folder "
                            f"(found {sorted(bins)})")
    return {t: bins[t] for t in wanted}


# Stage: data.


def _data_settings(ctx: Context) -> Any:
    d = ctx.recipe.data
    if d.rec:
        rec = ctx.resolve(d.rec)
        stat = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(rec.glob("*")) if f.is_file()]
        return {"rec": str(rec), "files": stat}
    return {"toy": d.toy, "seed": ctx.recipe.seed}


def _data_outputs(ctx: Context) -> list[Path]:
    return [ctx.dir("data") / ("data.json" if ctx.recipe.data.rec else "toy_meta.json")]


def _stage_data(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.recordio import FaceRecFolder

    d, out = ctx.recipe.data, ctx.dir("data")
    if d.rec:
        rec = ctx.resolve(d.rec)
        with FaceRecFolder(rec) as folder:
            num_classes, num_image = int(folder.num_classes), len(folder)
        bins = {p.stem: str(p) for p in sorted(rec.glob("*.bin"))}
        summary = {"rec": str(rec), "num_classes": num_classes, "num_image": num_image, "bins": bins, "toy": False}
        write_json_atomic(out / "data.json", summary)
        return summary
    from scoremix_plugin.toydata import write_toy_dataset

    t = d.toy
    s = write_toy_dataset(out, num_identities=t.identities, images_per_identity=t.images_per_identity,
                          num_test_identities=t.test_identities, num_pairs=t.pairs, seed=ctx.recipe.seed,
                          progress=ctx.progress)
    bins = {name: str(out / b["file"]) for name, b in s["test"]["bins"].items()}
    return {"rec": str(out), "num_classes": s["train"]["num_classes"], "num_image": s["train"]["num_image"],
            "bins": bins, "toy": True}


# Stages: the two recognisers.


def _recogniser_config(ctx: Context, stage: str) -> dict[str, Any]:
    """The recipe's recogniser config with this run's data, sizes and output filled in."""
    from scoremix_plugin.config import read_config_file

    src = ctx.resolve(ctx.recipe.recogniser)
    cfg = read_config_file(src)
    data = ctx.summary("data")
    # No verification inside training: the verify stage scores both recognisers the same way, once.
    cfg.update(rec=data["rec"], num_classes=data["num_classes"], num_image=data["num_image"],
               output=str(ctx.dir(stage)), val_targets=[], dataset="rec")
    cfg.pop("scoremix", None)
    if stage == "scoremix":
        manifest_path = ctx.dir("generate") / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        block = {k: ctx.recipe.scoremix[k] for k in ("ratio", "aug_real", "aug_synthetic")}
        cfg.update(dataset="scoremix", scoremix={"manifest": str(manifest_path), **block},
                   num_classes=int(manifest["num_classes"]),
                   num_image=int(manifest["real"]["num_image"]) + int(manifest["num_synthetic_images"]))
        if ctx.recipe.scoremix.same_steps:
            # As many optimiser steps as the baseline: the comparison is then about the data,
            # not about a longer schedule.
            base = int(cfg.get("num_epoch", 1))
            cfg["num_epoch"] = max(1, round(base * data["num_image"] / cfg["num_image"]))
    return cfg


def _train_recogniser(ctx: Context, stage: str) -> dict[str, Any]:
    cfg = _recogniser_config(ctx, stage)
    from scoremix_plugin.config import load_recogniser_config
    from scoremix_plugin.recognition.train import train

    if ctx.recipe.device:
        cfg["device"] = ctx.recipe.device
    path = write_config_file(ctx.dir(stage) / "config.py", cfg,
                             f"Written by `scoremix pipeline` (stage {stage}) from {ctx.resolve(ctx.recipe.recogniser)}.")
    res = train(load_recogniser_config(path), progress=ctx.progress)
    return {"config": str(path), "model": res["model"], "network": cfg.get("network"),
            "num_classes": cfg["num_classes"], "num_image": cfg["num_image"], "num_epoch": cfg.get("num_epoch"),
            "global_step": res.get("global_step"), "image_degrade": cfg.get("image_degrade")}


def _recogniser_settings(stage: str) -> Callable[[Context], Any]:
    def settings(ctx: Context) -> Any:
        extra = dict(ctx.recipe.scoremix) if stage == "scoremix" else {}
        return {"device": ctx.recipe.device, **extra}
    return settings


# Stage: generator.


def _stage_generator(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.config import read_config_file
    from scoremix_plugin.generation.train import train_generator

    src = ctx.resolve(ctx.recipe.generator)
    cfg = read_config_file(src)
    cfg.update(rec=ctx.summary("data")["rec"], output=str(ctx.dir("generator")))
    cfg.setdefault("seed", ctx.recipe.seed)
    if ctx.recipe.device:
        cfg["device"] = ctx.recipe.device
    write_config_file(ctx.dir("generator") / "config.py", cfg,
                      f"Written by `scoremix pipeline` (stage generator) from {src}.")
    res = train_generator(cfg)
    # bool()/float()/int(): the summary goes into a JSON marker, and these may come back as 0-d tensors.
    return {"checkpoint": str(res["checkpoint"]), "step": int(res["step"]), "num_classes": int(res["num_classes"]),
            "final_loss": float(res["final_loss"]), "stopped_early": bool(res.get("stopped_early"))}


# Stage: centres (export the baseline, embed the real classes, the generator's conditions).


def _stage_centres(ctx: Context) -> dict[str, Any]:
    out, data, base = ctx.dir("centres"), ctx.summary("data"), ctx.summary("baseline")
    onnx = out / "baseline.onnx"
    _cli(["export", "--model", base["model"], "--network", base["network"], "--out", onnx])
    files = {"embedding": out / "embedding.npz", "condition": out / "condition.npz"}
    device = ["--device", ctx.recipe.device] if ctx.recipe.device else []
    # Centres of the real images as they are (not through image_degrade): the verification images
    # are not degraded either, so selection and evaluation see the recogniser the same way.
    _cli(["embed", "--model", onnx, "--data", data["rec"], "--out", files["embedding"],
          "--batch-size", ctx.recipe.centres.batch_size, *device])
    head_ckpt = ctx.dir("baseline") / "checkpoint_rank0.pt"
    if head_ckpt.is_file():
        files["head"] = out / "head.npz"
        _cli(["embed", "--checkpoint", head_ckpt, "--out", files["head"]])
    _cli(["export-conditions", "--ckpt", ctx.summary("generator")["checkpoint"], "--out", files["condition"]])
    return {"onnx": str(onnx), **{k: str(v) for k, v in files.items()}}


# Stage: select.


def _stage_select(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.synthesis.select import run_selection

    sel = ctx.recipe.selection
    centres = ctx.summary("centres")
    if sel.space not in centres:
        raise PipelineError(f"recipe.selection.space {sel.space!r}: no such centres file "
                            f"(available: {sorted(k for k in centres if k != 'onnx')})")
    weights = None if sel.weights is None else ",".join(str(float(w)) for w in sel.weights)
    out = ctx.dir("select") / "pairs.csv"
    chosen = run_selection(centres[sel.space], out, strategy=sel.strategy, num_identities=sel.num_identities,
                           max_uses=sel.max_uses, k=sel.k, weights=weights, seed=ctx.recipe.seed,
                           progress=ctx.progress)
    d = chosen.distance
    return {"pairs": str(out), "num_identities": int(len(d)), "strategy": sel.strategy, "space": sel.space,
            "distance_mean": float(d.mean()), "distance_min": float(d.min()), "distance_max": float(d.max())}


# Stage: generate (ScoreMix shards + manifest, and the synthetic identities' quality).


def _stage_generate(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.synthesis.generate import GenerateSettings, generate
    from scoremix_plugin.synthesis.quality import quality_report

    g, out = ctx.recipe.generation, ctx.dir("generate")
    settings = GenerateSettings(
        ckpt=ctx.summary("generator")["checkpoint"], pairs=ctx.summary("select")["pairs"],
        real=ctx.summary("data")["rec"], images_per_identity=g.images_per_identity, shard_size=g.shard_size,
        steps=g.steps, solver=g.solver, guidance=g.guidance, guidance_scale=g.guidance_scale, guide=None,
        mix_window=None if g.mix_window is None else tuple(g.mix_window), seed=ctx.recipe.seed,
        batch_size=g.batch_size, bf16=g.bf16,
    )
    manifest = generate(settings, out, device=ctx.recipe.device, grids=True)
    centres = ctx.summary("centres")
    quality = quality_report(out, centres["onnx"], real_centres=centres["embedding"], device=ctx.recipe.device)
    return {"manifest": str(out / "manifest.json"), "num_synthetic_classes": manifest["num_synthetic_classes"],
            "num_synthetic_images": manifest["num_synthetic_images"], "quality": quality.get("summary", {})}


# Stage: merge (real + synthetic as one arcface_torch folder, the route for an unchanged host).


def _stage_merge(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.integration.merge import merge

    m = ctx.recipe.merge
    # overwrite: a rerun replaces the folder (merge builds it under a temporary name, then renames).
    res = merge(ctx.summary("data")["rec"], ctx.summary("generate")["manifest"], ctx.dir("merge"), name=m.name,
                config_overrides=dict(m.config_overrides or {}), overwrite=True, progress=ctx.progress)
    return {"folder": str(ctx.dir("merge")), "config": res.get("config"), "num_classes": res.get("num_classes"),
            "num_image": res.get("num_image")}


# Stage: verify.


def _stage_verify(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.verification.evaluate import load_embedder, verify_bins
    from scoremix_plugin.verification.report import write_report

    targets = _targets(ctx)
    results = {}
    for run in ("baseline", "scoremix"):
        s = ctx.summary(run)
        embedder = load_embedder(s["model"], network=s["network"], device=ctx.recipe.device)
        results[run] = verify_bins(embedder, targets, batch_size=ctx.recipe.verification.batch_size,
                                   progress=ctx.progress)
    paths = write_report(ctx.dir("verify"), results, title=f"{ctx.recipe.name}: baseline vs ScoreMix")
    return {
        "accuracy": {run: {t: float(r.accuracy_mean) for t, r in res.items()} for run, res in results.items()},
        "accuracy_std": {run: {t: float(r.accuracy_std) for t, r in res.items()} for run, res in results.items()},
        "roc": str(paths["roc"]), "json": str(paths["json"]), "markdown": str(paths["markdown"]),
    }


# Stage: align.


def _stage_align(ctx: Context) -> dict[str, Any]:
    from scoremix_plugin.synthesis.align import run_alignment

    c = ctx.summary("centres")
    res = run_alignment(c["condition"], c["embedding"], out_dir=ctx.dir("align"), seed=ctx.recipe.seed)
    keep = {k: v for k, v in res.items() if isinstance(v, (int, float, str))}
    return {**keep, "json": str(ctx.dir("align") / "alignment.json"), "png": str(ctx.dir("align") / "alignment.png")}


# Stage: report.


def _mix_grid(ctx: Context, path: Path) -> Path | None:
    """Rows of (real images of class a | of class b | the synthetic identity mixed from them)."""
    import cv2
    import numpy as np

    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.synthesis.select import read_pairs

    sel = read_pairs(ctx.summary("select")["pairs"])
    rows_wanted, n = int(ctx.recipe.report.grid_pairs), int(ctx.recipe.report.grid_images)
    manifest_path = Path(ctx.summary("generate")["manifest"])
    manifest = json.loads(manifest_path.read_text())
    c_real = int(manifest["real"]["num_classes"])
    real = FaceRecFolder(ctx.summary("data")["rec"])

    def images_of(folder, label: int) -> list:
        idx = np.flatnonzero(folder.labels == label)[:n]
        return [folder.image(int(i)) for i in idx]

    blank = np.full((112, 112, 3), 255, np.uint8)
    gap = np.full((112, 8, 3), 255, np.uint8)
    rows = []
    for shard in manifest["shards"]:
        syn = FaceRecFolder(manifest_path.parent / shard["path"])
        lo, hi = shard["labels"]
        for label in range(lo, hi):
            if len(rows) >= rows_wanted:
                break
            classes = sel.classes[label - c_real]
            parts = []
            for group in [images_of(real, int(c)) for c in classes] + [images_of(syn, label)]:
                group = (group + [blank] * n)[:n]
                parts += [np.concatenate(group, 1), gap]
            rows.append(np.concatenate(parts[:-1], 1))
        syn.close()
    real.close()
    if not rows:
        return None
    sep = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    header = np.full((22, rows[0].shape[1], 3), 255, np.uint8)
    block = n * 112 + gap.shape[1]
    titles = [f"real class {'abcdefgh'[i]}" for i in range(sel.k)] + ["ScoreMix identity"]
    for i, title in enumerate(titles):
        cv2.putText(header, title, (i * block + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([header] + [x for r in rows for x in (r, sep)][:-1], 0)
    from scoremix_plugin.io_utils import atomic_path

    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())
    return path


def _accuracy_plot(acc: Mapping, std: Mapping, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from scoremix_plugin.io_utils import atomic_path

    runs = list(acc)
    targets = list(next(iter(acc.values())))
    x = np.arange(len(targets))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(targets), 3.2))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        vals = [100 * acc[run][t] for t in targets]
        errs = [100 * std[run][t] for t in targets]
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=run)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, targets)
    ax.set_ylabel("verification accuracy (%)")
    lo = min(100 * v for r in acc.values() for v in r.values())
    ax.set_ylim(max(0.0, lo - 10), 100)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _copy(src: str | os.PathLike, dst: Path) -> Path | None:
    from scoremix_plugin.io_utils import write_bytes_atomic

    if not Path(src).is_file():
        return None
    write_bytes_atomic(dst, Path(src).read_bytes())
    return dst


def _stage_report(ctx: Context) -> dict[str, Any]:
    figs = ctx.out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    data, ver, align, gen = (ctx.summary(s) for s in ("data", "verify", "align", "generate"))
    base, mix, sel = ctx.summary("baseline"), ctx.summary("scoremix"), ctx.summary("select")
    g = ctx.recipe.generation

    figures = {
        "mixes": _mix_grid(ctx, figs / "mixes.png"),
        "roc": _copy(ver["roc"], figs / "roc.png"),
        "accuracy": _accuracy_plot(ver["accuracy"], ver["accuracy_std"], figs / "accuracy.png"),
        "alignment": _copy(align["png"], figs / "alignment.png"),
        "quality": _copy(ctx.dir("generate") / "quality.png", figs / "quality.png"),
    }
    samples = sorted((ctx.dir("generator") / "samples").glob("*.png"))
    if samples:
        figures["generator_samples"] = _copy(samples[-1], figs / "generator_samples.png")
    stages = {name: ctx.markers[name]["seconds"] for name in STAGE_NAMES if name in ctx.markers}
    generator = ctx.summary("generator")

    report = {
        "name": ctx.recipe.name,
        "baseline": ver["accuracy"]["baseline"],
        "scoremix": ver["accuracy"]["scoremix"],
        "accuracy_std": ver["accuracy_std"],
        "stages": stages,
        "data": {k: data[k] for k in ("rec", "num_classes", "num_image", "toy")},
        "image_degrade": base.get("image_degrade"),
        "generator": {k: generator.get(k) for k in ("step", "final_loss", "stopped_early")},
        "selection": sel,
        "synthetic": {"identities": gen["num_synthetic_classes"], "images": gen["num_synthetic_images"],
                      "sampler": {k: g[k] for k in ("solver", "steps", "guidance", "guidance_scale", "mix_window")},
                      "quality": gen.get("quality", {})},
        "alignment": {k: align.get(k) for k in ("linear_cka", "linear_cka_shuffled", "rbf_cka", "rbf_cka_shuffled",
                                                "mutual_knn", "mutual_knn_shuffled", "num_matched")},
        "recognisers": {"baseline": base, "scoremix": mix},
        "figures": {k: (None if v is None else str(Path(v).relative_to(ctx.out))) for k, v in figures.items()},
    }
    write_json_atomic(ctx.out / "report.json", _jsonable(report))
    write_text_atomic(ctx.out / "report.md", _report_markdown(report))
    return {"report": str(ctx.out / "report.md"), "json": str(ctx.out / "report.json")}


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}" if pct else f"{v:.3f}"
    return str(v)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _reading(r: Mapping[str, Any]) -> str:
    """A plain reading of the numbers, so nobody takes a small demo for evidence it is not."""
    diffs = {t: r["scoremix"][t] - r["baseline"][t] for t in r["baseline"]}
    stds = {t: max(r["accuracy_std"]["baseline"][t], r["accuracy_std"]["scoremix"][t]) for t in diffs}
    within = [t for t in diffs if abs(diffs[t]) <= stds[t]]
    parts = [", ".join(f"{t} {100 * d:+.2f}" for t, d in diffs.items()) + " points with ScoreMix"]
    if within:
        parts.append(f"within one fold-std on {', '.join(within)}")
    intra = (r["synthetic"].get("quality") or {}).get("intra", {})
    text = "**Reading the numbers:** " + "; ".join(parts) + "."
    if isinstance(intra, Mapping) and intra.get("mean") is not None:
        text += (f" Images of one synthetic identity agree with each other at a mean cosine of "
                 f"{intra['mean']:.2f} under the baseline recogniser (1 = identical).")
    text += (" New identities can only help when the generator renders each mixed identity consistently; a "
             f"generator trained for {r['generator']['step']} steps renders coarse traits at best, so a small run "
             "like this checks the whole pipeline rather than measuring the method's gain (the paper uses an "
             "EDM2 generator at 112 px).")
    return text


def _report_markdown(r: Mapping[str, Any]) -> str:
    degrade = r["image_degrade"]
    syn, al, sel, data = r["synthetic"], r["alignment"], r["selection"], r["data"]
    lines = [
        f"# {r['name']}: ScoreMix vs the real-data baseline",
        "",
        f"Real data: {data['num_image']} images of {data['num_classes']} identities "
        f"({'the embedded toy dataset' if data['toy'] else data['rec']}). ScoreMix added {syn['identities']} "
        f"synthetic identities ({syn['images']} images), each mixed from a pair of real classes chosen "
        f"'{sel['strategy']}' in the {sel['space']} space (mean cosine distance {sel['distance_mean']:.3f}), "
        f"sampled with {syn['sampler']['solver']}-{syn['sampler']['steps']}, guidance {syn['sampler']['guidance']} "
        f"w={syn['sampler']['guidance_scale']}, mixing window {syn['sampler']['mix_window'] or 'the whole trajectory'}.",
        "",
    ]
    if degrade:
        lines += [
            f"**Same resolution for real and synthetic images:** the generator works at {degrade} px, so before "
            f"recogniser training the real images go through the same {degrade}-px down-and-up resize "
            f"(recogniser config `image_degrade = {degrade}`, in both the baseline and the ScoreMix run; the "
            f"synthetic images, already {degrade} px upsampled, pass through it too). Blur therefore does not tell "
            "synthetic from real, and the recogniser cannot use \"blurry = synthetic\" as a shortcut. "
            "Verification images are used as they are (the host's protocol).",
            "",
        ]
    targets = list(r["baseline"])
    gen = r["generator"]
    lines += [f"Generator: {gen['step']} training steps"
              + (" (stopped by its time cap)" if gen.get("stopped_early") else "")
              + f", final loss {_fmt(gen.get('final_loss'))}.", ""]
    lines += ["## Verification accuracy (%)", "",
              "| target | baseline | ScoreMix | difference |", "|---|---:|---:|---:|"]
    std = r["accuracy_std"]
    for t in targets:
        b, m = r["baseline"][t], r["scoremix"][t]
        lines.append(f"| {t} | {100 * b:.2f} +- {100 * std['baseline'][t]:.2f} | {100 * m:.2f} +- "
                     f"{100 * std['scoremix'][t]:.2f} | {100 * (m - b):+.2f} |")
    lines += ["", "10-fold protocol of arcface_torch (mean +- std over folds) on held-out identities.", ""]
    lines += [_reading(r), ""]
    figs = r["figures"]
    for key, caption in (("accuracy", "Accuracy"), ("roc", "ROC curves, baseline vs ScoreMix"),
                         ("mixes", "Real class a | real class b | the synthetic identity mixed from them"),
                         ("generator_samples", "Generator samples (rows: classes; last row: a 2-way mix)"),
                         ("alignment", "Generator conditions vs recogniser centres"),
                         ("quality", "Synthetic identities under the baseline recogniser")):
        if figs.get(key):
            lines += [f"![{caption}]({figs[key]})", "", f"*{caption}.*", ""]
    lines += ["## Alignment of the generator's conditions with the recogniser's class centres", "",
              "| metric | value | shuffled-label baseline |", "|---|---:|---:|"]
    for m in ("linear_cka", "rbf_cka", "mutual_knn"):
        lines.append(f"| {m} | {_fmt(al.get(m))} | {_fmt(al.get(m + '_shuffled'))} |")
    lines += ["", f"{al.get('num_matched')} classes matched by label.", ""]
    q = _flatten(syn.get("quality") or {})
    if q:
        lines += ["## Synthetic identities (measured with the baseline recogniser)", "",
                  "| measure | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in q.items() if isinstance(v, (int, float, str)) or v is None]
        lines.append("")
    lines += ["## Stage timings (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["stages"].items()]
    lines.append("")
    return "\n".join(lines)


# The stage table.


def _out(*rel: str) -> Callable[[Context], list[Path]]:
    return lambda ctx: [ctx.out / p for p in rel]


STAGES: tuple[Stage, ...] = (
    Stage("data", _stage_data, (), _data_settings, _data_outputs,
          help="toy identities or a real folder"),
    Stage("baseline", lambda ctx: _train_recogniser(ctx, "baseline"), ("data",), _recogniser_settings("baseline"),
          _out("baseline/model.pt"), files=lambda ctx: [ctx.resolve(ctx.recipe.recogniser)],
          help="recogniser on real data"),
    Stage("generator", _stage_generator, ("data",), lambda ctx: {"device": ctx.recipe.device},
          _out("generator/generator.pt"), files=lambda ctx: [ctx.resolve(ctx.recipe.generator)],
          help="class-conditional EDM generator"),
    Stage("centres", _stage_centres, ("data", "baseline", "generator"), lambda ctx: dict(ctx.recipe.centres),
          _out("centres/baseline.onnx", "centres/embedding.npz", "centres/condition.npz"),
          help="ONNX export, class centres, generator conditions"),
    Stage("select", _stage_select, ("centres",), lambda ctx: {**ctx.recipe.selection, "seed": ctx.recipe.seed},
          _out("select/pairs.csv"), help="pairs of classes to mix"),
    Stage("generate", _stage_generate, ("data", "generator", "centres", "select"),
          lambda ctx: {**ctx.recipe.generation, "seed": ctx.recipe.seed}, _out("generate/manifest.json"),
          help="ScoreMix identities into shards"),
    Stage("merge", _stage_merge, ("data", "generate"), lambda ctx: dict(ctx.recipe.merge), _out("merged/train.rec", "merged/train.idx"),
          help="real + synthetic as one arcface_torch folder", folder="merged"),
    Stage("scoremix", lambda ctx: _train_recogniser(ctx, "scoremix"), ("data", "generate"),
          _recogniser_settings("scoremix"), _out("scoremix/model.pt"),
          files=lambda ctx: [ctx.resolve(ctx.recipe.recogniser)], help="recogniser on real + synthetic"),
    Stage("verify", _stage_verify, ("data", "baseline", "scoremix"), lambda ctx: dict(ctx.recipe.verification),
          _out("verify/verification.json"), help="verification of both recognisers"),
    Stage("align", _stage_align, ("centres",), lambda ctx: {"seed": ctx.recipe.seed},
          _out("align/alignment.json"), help="CKA of generator conditions vs recogniser centres"),
    Stage("report", _stage_report, ("data", "baseline", "generator", "select", "generate", "scoremix", "verify",
                                    "align"),
          lambda ctx: dict(ctx.recipe.report), _out("report.md", "report.json"), help="report.md + figures",
          folder=""),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
STAGE_FOLDERS = {s.name: s.folder for s in STAGES if s.folder is not None}


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message)  # keeps the stage lines clear of the stages' own progress bars


def run_recipe(recipe: str | os.PathLike | Mapping, out: str | os.PathLike, *, stage: str | None = None,
               start: str | None = None, force: bool = False, progress: bool = True,
               log: Callable[[str], None] = _log) -> dict[str, dict]:
    """Run a recipe into ``out``; returns each stage's status (``ran`` / ``skipped``) and seconds."""
    rec = load_recipe(recipe) if not isinstance(recipe, Mapping) else edict(recipe)
    ctx = Context(recipe=rec, out=Path(out).resolve(), progress=progress)
    ctx.out.mkdir(parents=True, exist_ok=True)
    status = run_stages(STAGES, ctx, only=stage, start=start, force=force, log=log)
    write_json_atomic(ctx.out / "timings.json", {name: m["seconds"] for name, m in ctx.markers.items()})
    return status


def stage_states(recipe: str | os.PathLike, out: str | os.PathLike) -> dict[str, str]:
    """What a plain run would do with each stage: skip it (complete) or run it, and why."""
    ctx = Context(recipe=load_recipe(recipe), out=Path(out).resolve(), progress=False)
    for s in STAGES:
        m = read_marker(ctx.out, s.name)
        if m is not None:
            ctx.markers[s.name] = m
    will_run: set[str] = set()
    states = {}
    for s in STAGES:
        m = ctx.markers.get(s.name)
        if m is None:
            state = "not run"
        elif will_run & set(s.needs):
            state = "will run again (an input stage runs again)"
        elif is_complete(s, ctx, fingerprint(s, ctx)):
            states[s.name] = f"complete ({m['seconds']:.1f} s, finished {m['finished']})"
            continue
        else:
            state = "will run again (its settings, config files or outputs changed)"
        will_run.add(s.name)
        states[s.name] = state
    return states


# CLI.


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="pipeline recipe file (config = edict(...)), e.g. recipes/demo.py")
    parser.add_argument("--out", required=True, help="output folder (stages write DIR/<stage>/, report DIR/report.md)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stage", choices=STAGE_NAMES, help="rerun only this stage (its inputs must be complete)")
    which.add_argument("--from", dest="start", choices=STAGE_NAMES, help="rerun this stage and every later one")
    parser.add_argument("--force", action="store_true", help="rerun every stage, complete or not")
    parser.add_argument("--list", action="store_true", help="list the stages and whether each is complete, then exit")


def run_pipeline(args: argparse.Namespace) -> int:
    if args.list:
        for name, state in stage_states(args.recipe, args.out).items():
            print(f"{name:10s} {state}")
        return 0
    t0 = time.perf_counter()
    run_recipe(args.recipe, args.out, stage=args.stage, start=args.start, force=args.force)
    report = Path(args.out).resolve() / "report.md"
    print(f"pipeline finished in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if report.is_file():
        print(report)  # the last line: where to look
    return 0

