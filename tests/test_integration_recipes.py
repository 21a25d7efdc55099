"""The GPU recipes parse with the readers that will run them, and make_subset picks a reproducible subset."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from scripts import load_script

from scoremix_plugin.config import load_recogniser_config, merge_config, read_config_file

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
GPU_RECIPES = ["casia_r50", "webface160k"]


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_recipe_files_load_cleanly(name):
    from scoremix_plugin.generation.network import network_kwargs, network_resolution
    from scoremix_plugin.generation.train import GENERATOR_DEFAULTS, _check_config
    from scoremix_plugin.pipeline import load_recipe

    folder = RECIPES / name
    recipe = load_recipe(folder / "pipeline.py")
    assert recipe.data.rec and recipe.device == "cuda"
    assert (folder / recipe.recogniser).is_file() and (folder / recipe.generator).is_file()
    # Every key is one the readers know (an unknown key would only be warned about, and silently unused).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = load_recogniser_config(folder / "recogniser.py")
        host = load_recogniser_config(folder / "host_scoremix_r50.py")
        gen = merge_config(
            read_config_file(folder / "generator.py"), GENERATOR_DEFAULTS, source=name, required=("rec",)
        )
    _check_config(gen, name)
    assert network_resolution(network_kwargs(gen.preset, 10, gen.resolution)) == 112
    assert base.dataset == "rec" and base.network == host.network == "r50"
    assert base.output and host.output  # our trainer needs a run folder (the host would derive one)
    assert host.dataset == "scoremix" and host.scoremix.manifest.endswith("manifest.json")
    # The ScoreMix config adds exactly the recipe's synthetic identities and images to the baseline's data.
    n_syn = recipe.selection.num_identities
    assert host.num_classes == base.num_classes + n_syn
    assert host.num_image == base.num_image + n_syn * recipe.generation.images_per_identity
    assert host.val_targets == base.val_targets == recipe.verification.targets


def _make_subset():
    return load_script("recipes/webface160k/make_subset.py")


def test_make_subset_is_reproducible(tmp_path):
    src = tmp_path / "src"
    for i in range(8):
        d = src / f"id_{i:02d}"
        d.mkdir(parents=True)
        for j in range(2 + i % 4):  # identities 0, 4 have 2 images; 1, 5: 3; ...
            (d / f"{j}.jpg").write_bytes(b"\xff\xd8" + bytes([i, j]))
    mod = _make_subset()
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        assert mod.main(["--src", str(src), "--out", str(out), "--identities", "3", "--images-per-identity", "3"]) == 0
        outs.append(sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")))
        ids = {p.parent.name for p in out.rglob("*.jpg")}
        assert len(ids) == 3 and all(int(i[-2:]) % 4 >= 1 for i in ids)  # only identities with >= 3 images
        assert all(len(list((out / i).iterdir())) == 3 for i in ids)
        assert (out / sorted(ids)[0] / "0.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert outs[0] == outs[1]
    with pytest.raises(SystemExit, match="only 6 identities"):
        mod.main(["--src", str(src), "--out", str(tmp_path / "o3"), "--identities", "7", "--images-per-identity", "3"])
