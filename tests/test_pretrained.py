"""The generators shipped in the package: never silently stale, loadable as untrusted input, and sampling.

Each shipped ``scoremix_plugin/pretrained/NAME.pt`` records in ``NAME.json`` the toy data it was trained on;
the renderer must still draw exactly that data (its fingerprint), or the weights describe identities that no
longer exist. The export path is tested on a tiny generator trained here.
"""

from __future__ import annotations

import json

import pytest
import torch
from easydict import EasyDict as edict

from scoremix_plugin.generation import pretrained
from scoremix_plugin.generation.checkpoint import load_checkpoint, load_generator
from scoremix_plugin.generation.sampler import image_generator, sample
from scoremix_plugin.io_utils import load_torch_safe, sha256_file
from scoremix_plugin.pipeline.recipe import load_recipe
from scoremix_plugin.pipeline.runner import Context, PipelineError
from scoremix_plugin.pipeline.stages import check_pretrained_fits
from scoremix_plugin.toydata import toy_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = pretrained.available()


def test_the_demo_generator_is_shipped():
    assert "toy40" in SHIPPED, "scoremix_plugin/pretrained/toy40.{pt,json} are missing: the demo samples them"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_match_the_toy_data_they_were_trained_on(name):
    prov = pretrained.provenance(name)
    t = prov["toy"]
    now = toy_fingerprint(
        num_identities=t["identities"], images_per_identity=t["images_per_identity"], seed=t["seed"], size=t["size"]
    )
    stale = {k: (t.get(k), v) for k, v in now.items() if t.get(k) != v}
    assert not stale, (
        f"{name}: the toy renderer or its settings changed since the shipped generator was trained "
        f"({stale}); retrain it: {prov['made_by']['train']}, then {prov['made_by']['ship']}"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_quality_was_measured_with_the_sampler_the_pipeline_uses(name):
    # The demo and the experiments sample with generation.settings' defaults: a provenance judged with
    # another sampler states a quality nobody gets. Changing the default means measuring the shipped weights
    # again (benchmarks/sampler_quality.py --generator NAME) and shipping again.
    from scoremix_plugin.generation.settings import SamplerSettings

    s = SamplerSettings()
    q = pretrained.provenance(name).get("quality_default_sampler")
    assert q is not None, f"{name}: its provenance has no quality under the default sampler"
    assert q["sampler"] == {"solver": s.solver, "num_steps": s.steps}, (name, q["sampler"])
    assert (q["guidance"], q["guidance_scale"]) == (s.guidance, s.guidance_scale)
    assert 0.0 <= q["single_recognised"] <= 1.0 and 0.0 <= q["mix_recognised"] <= 1.0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_loads_as_untrusted_input_and_samples(name):
    path, prov = pretrained.resolve(f"pretrained:{name}")  # checks the sha256 the provenance records
    assert path.stat().st_size <= 10 * 2**20
    assert sha256_file(path) == prov["weights"]["sha256"]
    raw = load_torch_safe(path)  # torch.load(weights_only=True)
    assert "optimizer" not in raw and raw["net"] is raw["ema"]
    assert {v.dtype for v in raw["ema"].values() if v.is_floating_point()} == {torch.float16}
    den, cfg = load_generator(path)
    assert cfg["step"] == prov["step"]
    res = int(raw["resolution"])
    x = sample(
        den,
        torch.tensor([[0], [1]]),
        torch.ones(2, 1),
        generators=[image_generator(0, 0, i) for i in (0, 1)],
        num_steps=2,
        solver="heun",
        guidance="cfg",
        guidance_scale=2.5,
    )
    assert x.shape == (2, 3, res, res) and torch.isfinite(x).all()
    assert prov["quality"]["far"] is not None and "single_top1" in prov["quality"]


@pytest.fixture(scope="module")
def tiny_run(toy_data, tmp_path_factory):
    from scoremix_plugin.generation.posthoc_ema import reconstruct
    from scoremix_plugin.generation.train import train_generator

    out = tmp_path_factory.mktemp("tiny_gen")
    train_generator(
        dict(
            rec=str(toy_data),
            output=str(out),
            total_steps=4,
            bf16=False,
            preset="edm2-test",
            resolution=16,
            batch_size=8,
            lr=1e-2,
            lr_warmup=2,
            lr_decay_ref=4,
            posthoc_ema=[0.05, 0.10],
            posthoc_every=2,
            num_workers=0,
            sample_every=None,
            checkpoint_every=None,
            loss_weighting="uncertainty",
            ema_sigma_rel=0.1,
        )
    )
    return reconstruct(out, 0.10)


def test_export_keeps_what_sampling_needs_once_in_float16(tiny_run, tmp_path):
    rec = pretrained.export(tiny_run, tmp_path / "g.pt")
    ck = load_checkpoint(tmp_path / "g.pt")
    assert "optimizer" not in ck and "posthoc" not in ck and ck["storage_dtype"] == "float16"
    assert ck["net"] is ck["ema"]  # stored once
    full = tmp_path / "full.pt"
    torch.save(dict(tiny_run), full)
    assert rec["bytes"] < 0.3 * full.stat().st_size  # no optimiser state, one float16 copy of the weights
    assert rec["sha256"] == sha256_file(tmp_path / "g.pt")
    # float16 storage moves the denoiser's output by a small fraction of its scale, measured and recorded
    assert 0 < rec["max_abs_diff"] < 0.02 * max(rec["output_abs_mean"], 1.0)


def _ctx(tmp_path, **toy):
    recipe = edict(
        seed=0,
        generator="pretrained:toy40",
        data=edict(
            rec=None,
            toy=edict(dict(identities=40, images_per_identity=16, test_identities=20, pairs=300, seed=0) | toy),
        ),
        _path=str(tmp_path / "r.py"),
    )
    return Context(recipe=recipe, out=tmp_path)


def test_pipeline_takes_the_shipped_generator_only_for_its_own_data(tmp_path):
    name, sha = check_pretrained_fits(_ctx(tmp_path))
    assert name == "toy40" and sha == pretrained.provenance("toy40")["weights"]["sha256"]
    check_pretrained_fits(_ctx(tmp_path, test_identities=7, pairs=20))  # verification pairs do not matter
    for bad in (dict(identities=41), dict(seed=1), dict(images_per_identity=12)):
        with pytest.raises(PipelineError, match="differs from the data it was trained on"):
            check_pretrained_fits(_ctx(tmp_path, **bad))
    ctx = _ctx(tmp_path)
    ctx.recipe.data.rec = str(tmp_path)
    with pytest.raises(PipelineError, match="another dataset"):
        check_pretrained_fits(ctx)


@pytest.mark.parametrize(
    "extra, match",
    [
        ("generator_sigma_rel=0.1", "already its post-hoc EMA"),
        ("generation=edict(guidance='autoguidance'), guide=edict(kind='snapshot')", "does not ship"),
        ("generator='pretrained:nope'", "no shipped generator 'nope'"),
    ],
)
def test_recipe_refuses_what_a_shipped_generator_cannot_give(tmp_path, extra, match):
    f = tmp_path / "r.py"
    f.write_text(
        "from easydict import EasyDict as edict\nconfig = edict(recogniser='x.py', "
        f"generator='pretrained:toy40', {extra})\n".replace("generator='pretrained:toy40', generator=", "generator=")
    )
    with pytest.raises(PipelineError, match=match):
        load_recipe(f)


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    import shutil

    src = pretrained.pretrained_dir()
    for f in ("toy40.pt", "toy40.json"):
        shutil.copyfile(src / f, tmp_path / f)
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: tmp_path)
    with open(tmp_path / "toy40.pt", "r+b") as fh:
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(Exception, match="differs from its provenance"):
        pretrained.resolve("pretrained:toy40")
    prov = json.loads((tmp_path / "toy40.json").read_text())
    assert prov["made_by"]["train"].startswith("python experiments/pretrained.py train")


def test_a_pip_install_carries_the_demo_recipes_and_the_shipped_generators():
    """Every file the demo needs matches a package-data glob of pyproject.toml (a user without a clone has them)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "scoremix_plugin"
    ]
    pkg = repo / "scoremix_plugin"
    needed = [
        p
        for d in ("recipes", "pretrained")
        for p in (pkg / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert any(p.name == "demo.py" for p in needed) and any(p.suffix == ".pt" for p in needed)
    # setuptools' globs: "*" does not cross a folder
    missing = [
        str(p.relative_to(pkg))
        for p in needed
        if not any(
            fnmatch.fnmatch(str(p.relative_to(pkg)), g) and str(p.relative_to(pkg)).count("/") == g.count("/")
            for g in globs
        )
    ]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_scoremix_demo_runs_the_packaged_recipe(tmp_path, capsys):
    from scoremix_plugin import cli

    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--list"]) == 0
    out = capsys.readouterr()
    assert "generator" in out.out and "scoremix_plugin/recipes/demo.py" in out.err
    assert cli.main(["demo", "--full", "--out", str(tmp_path / "f"), "--list"]) == 0
    assert "demo_full.py" in capsys.readouterr().err
