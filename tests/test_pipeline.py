"""The pipeline runner: skip-when-complete bookkeeping, and a miniature recipe end to end.

The end-to-end test (marked slow, ~30-60 s on 2 shared cores) trains tiny recognisers and a tiny
generator for a few steps, with a stage of the recipe's own; it checks what must hold between the stages
(class counts, image counts, the report's numbers against the verify stage's file), not accuracy.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from easydict import EasyDict as edict
from ijb_data import small_ijb_root

from scoremix_plugin.errors import ScoreMixError
from scoremix_plugin.pipeline import (
    STAGE_NAMES,
    Context,
    PipelineError,
    Stage,
    load_recipe,
    pipeline_stages,
    read_marker,
    restore_stages,
    run_recipe,
    run_stages,
    save_stages,
    stage_states,
)

# Bookkeeping on three small stages that write real files.


def _stages(calls: list[str], fail: set[str] | None = None) -> list[Stage]:
    fail = fail if fail is not None else set()

    def make(name: str, needs: tuple[str, ...]):
        def run(ctx: Context):
            calls.append(name)
            if name in fail:
                raise RuntimeError(f"{name} failed")
            text = ctx.recipe[name] + "".join((ctx.dir(d) / "out.txt").read_text() for d in needs)
            (ctx.dir(name) / "out.txt").write_text(text)
            return {"chars": len(text)}

        return Stage(name, run, needs, lambda ctx: ctx.recipe[name], lambda ctx: [ctx.dir(name) / "out.txt"])

    return [make("a", ()), make("b", ("a",)), make("c", ("b",))]


def _ctx(tmp_path: Path, **recipe) -> Context:
    return Context(
        recipe=edict({"a": "1", "b": "2", "c": "3", "_path": str(tmp_path / "r.py"), **recipe}),
        out=tmp_path / "out",
        progress=False,
    )


def _status(res):
    return {k: v["status"] for k, v in res.items()}


def test_rerun_skips_complete_stages_and_reruns_what_changed(tmp_path):
    calls: list[str] = []
    log: list[str] = []
    res = run_stages(_stages(calls), _ctx(tmp_path), log=log.append)
    assert _status(res) == {"a": "ran", "b": "ran", "c": "ran"} and calls == ["a", "b", "c"]
    assert (tmp_path / "out/c/out.txt").read_text() == "321"
    m = read_marker(tmp_path / "out", "b")
    assert m["summary"] == {"chars": 2} and m["seconds"] >= 0

    calls.clear()
    res = run_stages(_stages(calls), _ctx(tmp_path), log=log.append)
    assert _status(res) == {"a": "skipped", "b": "skipped", "c": "skipped"} and calls == []

    # A changed setting reruns that stage and, through its new run id, every stage after it.
    calls.clear()
    res = run_stages(_stages(calls), _ctx(tmp_path, b="X"), log=log.append)
    assert _status(res) == {"a": "skipped", "b": "ran", "c": "ran"}
    assert (tmp_path / "out/c/out.txt").read_text() == "3X1"

    # A missing output makes a stage incomplete even with its marker in place.
    (tmp_path / "out/c/out.txt").unlink()
    calls.clear()
    run_stages(_stages(calls), _ctx(tmp_path, b="X"), log=log.append)
    assert calls == ["c"]


def test_saved_stages_install_in_another_out_and_are_skipped(tmp_path):
    calls: list[str] = []
    first = _ctx(tmp_path)
    run_stages(_stages(calls), first, log=lambda m: None)
    saved = tmp_path / "saved"
    save_stages(first, ["b", "c"], saved)
    assert json.loads((saved / "stages.json").read_text())["stages"]["b"]["files"]
    # Another OUT elsewhere: a (not saved) runs, b and c install from the copies and are skipped.
    other = Context(recipe=first.recipe, out=tmp_path / "elsewhere" / "out", progress=False)
    stages = _stages(calls)
    with pytest.raises(PipelineError, match="stage 'b' needs stage 'a'"):
        restore_stages(stages, other, saved, log=lambda m: None)
    calls.clear()
    run_stages(stages[:1], other, log=lambda m: None)
    assert restore_stages(stages, other, saved, log=lambda m: None) == ["b", "c"]
    assert _status(run_stages(stages, other, log=lambda m: None)) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert calls == ["a"] and (other.out / "c" / "out.txt").read_text() == "321"
    assert read_marker(other.out, "b")["restored_from"] == str(saved)
    assert restore_stages(stages, other, saved, log=lambda m: None) == []  # already complete: untouched
    # Other settings (its own or upstream) or a changed file are refused.
    for recipe, match in (({"b": "9"}, "other 'b' settings"), ({"a": "9"}, "other 'a' settings")):
        ctx = Context(recipe=edict({**first.recipe, **recipe}), out=tmp_path / f"o{len(calls)}", progress=False)
        run_stages(stages[:1], ctx, log=lambda m: None)
        with pytest.raises(PipelineError, match=match):
            restore_stages(stages, ctx, saved, log=lambda m: None)
        calls.append("x")
    # A stage's input file (e.g. a generator's weights) that changed is refused too, wherever OUT lies.
    cfg = tmp_path / "cfg.txt"
    cfg.write_text("v1")
    with_file = [
        Stage(s.name, s.run, s.needs, s.settings, s.outputs, files=(lambda ctx: [cfg]) if s.name == "a" else s.files)
        for s in stages
    ]
    ctx = Context(recipe=first.recipe, out=tmp_path / "of1", progress=False)
    run_stages(with_file, ctx, log=lambda m: None)
    save_stages(ctx, ["b"], tmp_path / "saved_f")
    cfg.write_text("v2")
    ctx = Context(recipe=first.recipe, out=tmp_path / "of2", progress=False)
    run_stages(with_file[:1], ctx, log=lambda m: None)
    with pytest.raises(PipelineError, match="other 'a' settings or input files"):
        restore_stages(with_file, ctx, tmp_path / "saved_f", log=lambda m: None)
    # A path in stages.json that climbs out of the saved folder is refused before anything is read or written.
    evil = json.loads((saved / "stages.json").read_text())
    evil["stages"]["b"]["files"] = {"../../escape.txt": {"sha256": "0" * 64, "bytes": 1}}
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "stages.json").write_text(json.dumps(evil))
    ctx = Context(recipe=first.recipe, out=tmp_path / "o8", progress=False)
    run_stages(stages[:1], ctx, log=lambda m: None)
    with pytest.raises(ScoreMixError, match="outside its root"):
        restore_stages(stages, ctx, tmp_path / "evil", log=lambda m: None)
    (saved / "c" / "out.txt").write_text("tampered")
    ctx = Context(recipe=first.recipe, out=tmp_path / "o9", progress=False)
    run_stages(stages[:1], ctx, log=lambda m: None)
    with pytest.raises(PipelineError, match="sha256 differs"):
        restore_stages(stages, ctx, saved, log=lambda m: None)


def test_stage_and_from_rerun_on_request(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls), _ctx(tmp_path), log=lambda s: None)
    calls.clear()
    res = run_stages(_stages(calls), _ctx(tmp_path), only="b", log=lambda s: None)
    assert calls == ["b"] and list(res) == ["b"]
    calls.clear()
    # c's input (b's run id) changed, so a plain run now redoes c only.
    run_stages(_stages(calls), _ctx(tmp_path), log=lambda s: None)
    assert calls == ["c"]
    calls.clear()
    run_stages(_stages(calls), _ctx(tmp_path), start="b", log=lambda s: None)
    assert calls == ["b", "c"]
    with pytest.raises(PipelineError, match="no such stage"):
        run_stages(_stages(calls), _ctx(tmp_path), only="zz", log=lambda s: None)


def test_failed_stage_leaves_no_marker_and_needs_are_enforced(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls), _ctx(tmp_path), log=lambda s: None)
    with pytest.raises(RuntimeError, match="b failed"):
        run_stages(_stages(calls, fail={"b"}), _ctx(tmp_path), only="b", log=lambda s: None)
    assert read_marker(tmp_path / "out", "b") is None
    with pytest.raises(PipelineError, match="needs stage 'b'"):
        run_stages(_stages(calls), _ctx(tmp_path), only="c", log=lambda s: None)


def test_marker_of_an_older_format_is_refused_in_one_line_until_force(tmp_path):
    from scoremix_plugin.pipeline.runner import MARKER_FORMAT, marker_path, plan

    calls: list[str] = []
    run_stages(_stages(calls), _ctx(tmp_path), log=lambda s: None)
    p = marker_path(tmp_path / "out", "b")
    old = json.loads(p.read_text())
    del old["format"]  # version 1 markers had none
    p.write_text(json.dumps(old))
    calls.clear()
    with pytest.raises(
        PipelineError, match=f"stage 'b' was finished by an older scoremix.*{MARKER_FORMAT}.*--force"
    ) as e:
        run_stages(_stages(calls), _ctx(tmp_path), log=lambda s: None)
    assert "\n" not in str(e.value) and calls == []
    with pytest.raises(PipelineError, match="--force"):
        plan(_stages(calls), _ctx(tmp_path))  # --list says the same
    res = run_stages(_stages(calls), _ctx(tmp_path), force=True, log=lambda s: None)
    assert _status(res) == {"a": "ran", "b": "ran", "c": "ran"}
    assert read_marker(tmp_path / "out", "b")["format"] == MARKER_FORMAT


def test_recipe_keys_are_checked(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from easydict import EasyDict as edict\nconfig = edict(recogniser='r.py', generator='g.py', "
        "selection=edict(strategy='far', colour='red'))\n"
    )
    with pytest.raises(PipelineError, match=r"recipe.selection: \[.colour.\]"):
        load_recipe(bad)
    bad.write_text("from easydict import EasyDict as edict\nconfig = edict(generator='g.py')\n")
    with pytest.raises(PipelineError, match="recipe.recogniser"):
        load_recipe(bad)


def test_demo_recipes_load_from_the_package():
    from scoremix_plugin.config import read_config_file
    from scoremix_plugin.pipeline.cli import demo_recipe

    recipe = load_recipe(demo_recipe())
    assert Path(recipe._path).is_relative_to(Path(__file__).resolve().parents[1] / "scoremix_plugin")
    assert recipe.selection.strategy == "far" and recipe.generator == "pretrained:toy40"
    assert recipe.quality_gate and recipe.data.toy.seed == 0
    rec = read_config_file(Path(recipe._path).parent / recipe.recogniser)
    assert rec["image_degrade"] == 32  # real images see the generator's resolution (no blur shortcut)
    full = load_recipe(demo_recipe(full=True))
    # one setting away: the same demo with its generator trained here
    assert full.generator == "demo/generator.py" and (Path(full._path).parent / full.generator).is_file()
    assert {
        k: v for k, v in full.items() if k not in ("generator", "generator_sigma_rel", "quality_gate", "name", "_path")
    } == {
        k: v
        for k, v in recipe.items()
        if k not in ("generator", "generator_sigma_rel", "quality_gate", "name", "_path")
    }


# A miniature recipe end to end.

MINI = """
import json
from easydict import EasyDict as edict
from scoremix_plugin.pipeline import Stage

def synthetic_share(ctx):
    data, gen = ctx.result("data"), ctx.result("generate")
    share = gen.num_synthetic_images / (data.num_image + gen.num_synthetic_images)
    (ctx.dir("synthetic_share") / "share.json").write_text(json.dumps(share))
    return {"share": share, "real_images": data.num_image}

config = edict(
    stages=[Stage("synthetic_share", synthetic_share, ("data", "generate"), lambda ctx: {"rounding": None},
                  lambda ctx: [ctx.dir("synthetic_share") / "share.json"], help="a stage of the recipe's own")],
    name="mini", seed=0, device="cpu",
    data=edict(toy=edict(identities=4, images_per_identity=2, test_identities=4, pairs=20)),
    recogniser="rec.py", generator="gen.py",
    selection=edict(num_identities=2),
    generation=edict(images_per_identity=2, steps=2, batch_size=4, bf16=False, guidance="autoguidance"),
    guide=edict(kind="snapshot", fraction=0.5),  # autoguidance from the main run's step-1 snapshot
    verification=edict(targets=["toy_lfw", "toy_cfp_fp"], batch_size=32, ijb=edict(root="IJBC", target="ijbc"),
                       tinyface=edict(root="tinyface")),
    report=edict(grid_pairs=2, grid_images=2),
    quality_gate=False,  # the tiny generator's identities are no identities; the gate is tested below
)
"""
MINI_REC = """
from easydict import EasyDict as edict
config = edict(network="r10_tiny", embedding_size=32, batch_size=8, lr=0.1, num_epoch=1, warmup_epoch=0,
               num_workers=0, verbose=10**9, frequent=1, image_degrade=32)
"""
MINI_GEN = """
from easydict import EasyDict as edict
config = edict(preset="test-micro", resolution=16, batch_size=8, total_steps=2, lr_warmup=1, checkpoint_every=None,
               sample_every=None, sample_steps=2, sample_classes=2, num_workers=0, cache_images=True, bf16=False)
"""


@pytest.mark.slow
def test_mini_recipe_end_to_end_then_rerun_skips(tmp_path, monkeypatch, capfd):
    for extra in ("onnx", "onnxruntime"):  # the centres stage exports the baseline to ONNX
        pytest.importorskip(extra, reason="the pipeline needs the [onnx] extra (onnx, onnxruntime)")
    for name, text in (("mini.py", MINI), ("rec.py", MINI_REC), ("gen.py", MINI_GEN)):
        (tmp_path / name).write_text(textwrap.dedent(text))
    small_ijb_root(tmp_path)  # tmp_path/IJBC: the recipe's IJB-C target, relative to the recipe
    shutil.copytree(Path(__file__).parent / "data/golden/tinyface/root", tmp_path / "tinyface")
    out = tmp_path / "out"
    status = run_recipe(tmp_path / "mini.py", out, progress=False, log=lambda s: None)
    assert [k for k, v in status.items() if v["status"] == "ran"] == [*STAGE_NAMES[:-1], "synthetic_share", "report"]
    # progress=False reaches every stage: no stage draws a progress bar into a background job's log.
    assert not re.search(r"\d+/\d+ \[\d+:\d\d", capfd.readouterr().err)  # tqdm's "16/3200 [00:19<..."

    report = json.loads((out / "report.json").read_text())
    verify = json.loads((out / "verify/verification.json").read_text())["results"]
    for run in ("baseline", "scoremix"):
        assert set(report[run]) == {"toy_lfw", "toy_cfp_fp"}
        for t in report[run]:  # the report's numbers are the verify stage's, not recomputed ones
            assert report[run][t] == verify[run][t]["accuracy_mean"]
            assert report["accuracy_std"][run][t] == verify[run][t]["accuracy_std"]
    assert set(report["stages"]) == set(STAGE_NAMES) - {"report"} | {"synthetic_share"}
    # IJB-C beside the .bin sets: the report's TARs are the verify stage's IJB files'.
    ijb = json.loads((out / "verify/ijbc/ijb.json").read_text())["runs"]
    for run in ("baseline", "scoremix"):
        assert report["ijb"]["IJBC"][run]["F1N1D1"]["tar"] == ijb[run]["modes"]["F1N1D1"]["tar"]
    assert "## IJBC: TAR (%) at FAR" in (out / "report.md").read_text()
    assert (out / "figures/ijb_ijbc_roc.png").is_file()
    # TinyFace beside them, the same way; the toy targets are none of Avg-H's five sets, so it is absent.
    tiny = json.loads((out / "verify/tinyface/tinyface.json").read_text())["runs"]
    for run in ("baseline", "scoremix"):
        assert report["tinyface"][run]["cmc_count"] == tiny[run]["cmc_count"]
        assert report["tinyface"][run]["num_probes"] == 113 and report["avg_h"][run] is None
    assert "## TinyFace: closed-set identification (%)" in (out / "report.md").read_text()
    assert (out / "figures/tinyface_cmc.png").is_file()
    # The recipe's own stage: run, recorded, reported.
    c_real, n_syn = 4, 2  # toy identities, selection.num_identities (2 images each)
    # The dataset report's headline (both sets) and the gate's verdict, as the dataset_report stage wrote them.
    dsr = json.loads((out / "dataset_report/report.json").read_text())
    assert report["dataset_report"]["headline"]["data"]["eer"] == dsr["data"]["stats"]["eer"]
    assert report["dataset_report"]["headline"]["real"]["identities"] == c_real
    assert "## The synthetic set beside the real one" in (out / "report.md").read_text()
    share = 2 * n_syn / (2 * c_real + 2 * n_syn)
    assert report["added_stages"] == {"synthetic_share": {"share": share, "real_images": 2 * c_real}}
    assert "## Added stage: synthetic_share" in (out / "report.md").read_text()
    assert report["image_degrade"] == 32
    md = (out / "report.md").read_text()
    assert "32-px down-and-up resize" in md
    # Autoguidance ran, with the generator stage's guide, and the report says so.
    gen_res = read_marker(out, "generator")["summary"]
    assert (gen_res["guide_kind"], gen_res["guide_step"], gen_res["step"]) == ("snapshot", 1, 2)
    settings = json.loads((out / "generate/settings.json").read_text())
    from scoremix_plugin.io_utils import sha256_file

    assert settings["guide_sha256"] == sha256_file(gen_res["guide"]) and settings["guidance"] == "autoguidance"
    assert "Guidance: autoguidance (w=2.5), the guide an early snapshot of the main run (step 1)" in md
    for fig in report["figures"].values():
        assert fig is None or (out / fig).is_file()
    assert (out / "figures/roc.png").is_file() and (out / "figures/mixes.png").is_file()
    manifest = json.loads((out / "generate/manifest.json").read_text())
    assert manifest["num_classes"] == c_real + n_syn and manifest["num_synthetic_images"] == 2 * n_syn
    # ScoreMix trains a head of C_real + n classes; the baseline one of C_real.
    import torch

    heads = {
        run: torch.load(out / run / "checkpoint_rank0.pt", weights_only=True)["head"]["weight"].shape[0]
        for run in ("baseline", "scoremix")
    }
    assert heads == {"baseline": c_real, "scoremix": c_real + n_syn}
    # The merged folder holds what its config says: every real and synthetic image and class.
    from scoremix_plugin.config import read_config_file
    from scoremix_plugin.recordio import FaceRecFolder

    merged_cfg = read_config_file(out / "merged/scoremix_merged.py")
    with FaceRecFolder(out / "merged") as merged:
        counts = {
            "num_classes": merged.num_classes,
            "num_image": len(merged),
            "labels": sorted(set(merged.labels.tolist())),
        }
    assert counts == {
        "num_classes": c_real + n_syn,
        "num_image": 2 * c_real + 2 * n_syn,
        "labels": list(range(c_real + n_syn)),
    }
    assert (merged_cfg["num_classes"], merged_cfg["num_image"]) == (counts["num_classes"], counts["num_image"])
    assert "dataset = 'scoremix'" in (out / "scoremix/config.py").read_text()

    assert all(v.startswith("complete") for v in stage_states(tmp_path / "mini.py", out).values())
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    status = run_recipe(tmp_path / "mini.py", out, progress=False, log=lambda s: None)
    assert {v["status"] for v in status.values()} == {"skipped"}
    changed = [p for p, t in mtimes.items() if p.stat().st_mtime_ns != t and p.name != "timings.json"]
    assert changed == []

    # The quality gate: a set judged unfit stops the run at dataset_report, before merge and ScoreMix
    # training (a rule no set passes makes the verdict FAIL whatever the tiny networks learnt; a share
    # above 1 is refused when the recipe loads, so the rule itself is replaced).
    import scoremix_plugin.datareport.leaks as leaks

    monkeypatch.setattr(leaks, "gate_passes", lambda share, real_share, min_share=0.5: False)
    strict = MINI.replace("quality_gate=False", "quality_gate=True, dataset_report=edict(far=0.5, min_share=1.0)")
    (tmp_path / "mini.py").write_text(textwrap.dedent(strict))
    with pytest.raises(PipelineError, match="quality gate FAIL"):
        run_recipe(tmp_path / "mini.py", out, progress=False, log=lambda s: None)
    assert (out / "scoremix/model.pt").stat().st_mtime_ns == mtimes[out / "scoremix/model.pt"]
    assert not read_marker(out, "dataset_report")


def test_real_folder_data_stage(tmp_path, toy_data):
    recipe = tmp_path / "real.py"
    recipe.write_text(
        "from easydict import EasyDict as edict\n"
        f"config = edict(data=edict(rec={str(toy_data)!r}), recogniser='r.py', generator='g.py')\n"
    )
    status = run_recipe(recipe, tmp_path / "out", stage="data", progress=False, log=lambda s: None)
    assert status == {"data": {"status": "ran", "seconds": status["data"]["seconds"]}}
    summary = read_marker(tmp_path / "out", "data")["summary"]
    assert summary["num_classes"] == 12 and summary["num_image"] == 96 and not summary["toy"]
    assert sorted(summary["bins"]) == ["toy_cfp_fp", "toy_lfw"]


def test_a_recipe_adds_a_stage_before_the_report(tmp_path):
    (tmp_path / "r.py").write_text(textwrap.dedent(MINI))
    recipe = load_recipe(tmp_path / "r.py")
    stages = pipeline_stages(recipe)
    assert [s.name for s in stages] == [*STAGE_NAMES[:-1], "synthetic_share", "report"]
    assert "synthetic_share" in stages[-1].needs  # the report reruns when the added stage does
    states = stage_states(tmp_path / "r.py", tmp_path / "out")
    assert states["synthetic_share"] == "not run"
    with pytest.raises(PipelineError, match="no such stage"):
        run_recipe(tmp_path / "r.py", tmp_path / "out", stage="nope", progress=False, log=lambda s: None)
    from scoremix_plugin import cli

    assert cli.main(["pipeline", str(tmp_path / "r.py"), "--out", str(tmp_path / "out"), "--stage", "nope"]) == 2
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from easydict import EasyDict as edict\n"
        "config = edict(recogniser='r.py', generator='g.py', stages=['count'])\n"
    )
    with pytest.raises(PipelineError, match="recipe.stages"):
        load_recipe(bad)


GUIDE_GEN = """
from easydict import EasyDict as edict
config = edict(preset="test-micro", resolution=16, batch_size=8, total_steps=8, lr_warmup=1, checkpoint_every=None,
               sample_every=None, num_workers=0, cache_images=True, bf16=False,
               posthoc_ema=[0.05, 0.10], posthoc_every=2)
"""


def _guide_recipe(tmp_path: Path, generator: str, guide: str, extra: str = "") -> Path:
    (tmp_path / "rec.py").write_text(textwrap.dedent(MINI_REC))
    (tmp_path / "gen.py").write_text(textwrap.dedent(GUIDE_GEN))
    path = tmp_path / "r.py"
    path.write_text(
        "from easydict import EasyDict as edict\n"
        f"config = edict(device='cpu', recogniser='rec.py', generator={generator!r}, guide={guide},\n"
        "    data=edict(toy=edict(identities=4, images_per_identity=2, test_identities=4, pairs=20)),\n"
        f"    generation=edict(guidance='autoguidance'){extra})\n"
    )
    return path


def test_generator_stage_makes_the_guide_from_post_hoc_ema_snapshots_or_a_smaller_network(tmp_path):
    """The guide of each kind: an early post-hoc EMA reconstruction of the main run, or a smaller network
    trained on the same data for a fraction of the steps, beside a generator trained elsewhere (a .pt)."""
    from scoremix_plugin.generation.checkpoint import load_checkpoint

    def run(r, o):
        return [run_recipe(r, o, stage=s, progress=False, log=lambda m: None) for s in ("data", "generator")]

    recipe = _guide_recipe(tmp_path, "gen.py", "edict(kind='snapshot', fraction=0.25)", ", generator_sigma_rel=0.10")
    run(recipe, tmp_path / "a")
    res = read_marker(tmp_path / "a", "generator")["summary"]
    main, guide = load_checkpoint(res["checkpoint"]), load_checkpoint(res["guide"])
    assert Path(res["checkpoint"]).name == "generator-ema.pt" and res["sigma_rel"] == 0.10
    assert main["posthoc_ema"]["sigma_rel"] == guide["posthoc_ema"]["sigma_rel"] == 0.10
    # A quarter of 8 steps: the snapshot at step 2, reconstructed from the snapshots up to it only.
    assert (res["guide_step"], guide["step"], guide["posthoc_ema"]["snapshot_steps"]) == (2, 2, [2])
    assert main["step"] == 8 and main["posthoc_ema"]["snapshot_steps"] == [2, 4, 6, 8]

    # The main generator as a checkpoint from elsewhere; the guide a smaller network trained here.
    trained = tmp_path / "a" / "generator" / "generator.pt"
    recipe = _guide_recipe(tmp_path, str(trained), "edict(kind='smaller', preset='test-micro', fraction=0.5)")
    run(recipe, tmp_path / "b")
    res = read_marker(tmp_path / "b", "generator")["summary"]
    assert res["checkpoint"] == str(trained) and res["trained"] is False and res["guide_kind"] == "smaller"
    guide = load_checkpoint(res["guide"])
    assert guide["step"] == res["guide_step"] == 4 and guide["config"]["preset"] == "test-micro"
    assert not (tmp_path / "b" / "generator" / "generator.pt").exists()  # the main one was not retrained


@pytest.mark.parametrize(
    "body, message",
    [
        ("generation=edict(guidance='autoguidance')", "needs recipe.guide"),
        ("guide=edict(kind='snapshot')", "only used with guidance = 'autoguidance'"),
        ("guide=edict(kind='early'), generation=edict(guidance='autoguidance')", "recipe.guide.kind must be one of"),
        ("guide=edict(kind='smaller'), generation=edict(guidance='autoguidance')", "needs recipe.guide.preset"),
        (
            "guide=edict(kind='snapshot', fraction=1.5), generation=edict(guidance='autoguidance')",
            r"recipe.guide.fraction must be in \(0, 1\)",
        ),
        ("generator_sigma_rel=0.5", "recipe.generator_sigma_rel must be a number"),
    ],
)
def test_guide_settings_are_checked_when_the_recipe_loads(tmp_path, body, message):
    bad = tmp_path / "r.py"
    bad.write_text(
        f"from easydict import EasyDict as edict\nconfig = edict(recogniser='r.py', generator='g.py', {body})\n"
    )
    with pytest.raises(PipelineError, match=message):
        load_recipe(bad)


def test_generator_fingerprint_settings_hold_every_key(tmp_path):
    """Unset keys are fingerprinted as None; a recipe built as a plain dict without them (experiments/) works."""
    from scoremix_plugin.pipeline.stages import generator_settings

    ctx = _ctx(tmp_path, device="cpu")
    assert generator_settings(ctx) == {"device": "cpu", "guide": None, "sigma_rel": None}
    ctx = _ctx(tmp_path, device="cpu", guide={"kind": "snapshot", "fraction": 0.25}, generator_sigma_rel=0.1)
    assert generator_settings(ctx) == {
        "device": "cpu",
        "sigma_rel": 0.1,
        "guide": {"kind": "snapshot", "fraction": 0.25, "preset": None},
    }
