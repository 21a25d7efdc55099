"""AugGen condition mixing and guidance in the sampler: forwards per step (counted) and exactness."""

from __future__ import annotations

import copy

import pytest
import torch
from denoisers import Counting, micro_denoiser

from scoremix_plugin.generation.sampler import image_generator, network_evaluations, sample

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def micro():
    return micro_denoiser()


def _gens(n, seed=0):
    return [image_generator(seed, 0, i) for i in range(n)]


@pytest.mark.parametrize("mix_space", ["score", "condition"])
@pytest.mark.parametrize("guidance", ["none", "cfg", "autoguidance"])
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_forwards_per_step_are_the_documented_numbers(micro, mix_space, guidance, solver):
    main, guide = Counting(micro), Counting(copy.deepcopy(micro))
    B, K, N = 3, 2, 4
    sample(
        main,
        torch.tensor([[0, 1], [2, 3], [4, 0]]),
        torch.full((B, K), 0.7 if mix_space == "condition" else 0.5),
        generators=_gens(B),
        num_steps=N,
        solver=solver,
        guidance=guidance,
        guidance_scale=2.0,
        guide=guide if guidance == "autoguidance" else None,
        mix_space=mix_space,
    )
    stages = 2 * N - 1 if solver == "heun" else N
    assert main.calls == stages and guide.calls == (stages if guidance == "autoguidance" else 0)
    # Per image and stage: score K (+1 null for CFG), condition 1 (+1 null); autoguidance repeats them in the guide.
    per_image = {
        ("score", "none"): K,
        ("score", "cfg"): K + 1,
        ("score", "autoguidance"): 2 * K,
        ("condition", "none"): 1,
        ("condition", "cfg"): 2,
        ("condition", "autoguidance"): 2,
    }
    assert (sum(main.batch_sizes) + sum(guide.batch_sizes)) == B * stages * per_image[mix_space, guidance]
    assert network_evaluations(N, solver, K, guidance, 2.0, mix_space) == stages * per_image[mix_space, guidance]
    assert main.label_kinds == {"weights" if mix_space == "condition" else "labels"}


@pytest.mark.parametrize("guidance", ["none", "cfg"])
def test_condition_mix_is_a_single_class_forward_on_the_interpolated_embedding(micro, guidance):
    # A copy of the network whose class 0 IS 0.7 c_1 + 0.7 c_3: sampling class 0 alone must give the
    # condition mix of classes 1 and 3 with weights 0.7, 0.7 (AugGen's), step for step.
    interp = copy.deepcopy(micro)
    table = interp.net.class_table.weight
    with torch.no_grad():
        table[0] = 0.7 * table[1] + 0.7 * table[3]
    kw = dict(num_steps=4, guidance=guidance, guidance_scale=2.5)
    mixed = sample(
        micro,
        torch.tensor([[1, 3]] * 2),
        torch.tensor([[0.7, 0.7]] * 2),
        generators=_gens(2),
        mix_space="condition",
        **kw,
    )
    single = sample(interp, torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1), generators=_gens(2), **kw)
    torch.testing.assert_close(mixed, single, atol=1e-4, rtol=0)  # batch shapes differ: float rounding
    # ... and it is not the score mix of the same pair (the two methods differ).
    score = sample(micro, torch.tensor([[1, 3]] * 2), torch.tensor([[0.5, 0.5]] * 2), generators=_gens(2), **kw)
    assert (score - mixed).abs().max() > 1e-3


def test_condition_mix_of_one_hot_weights_is_the_class_sample(micro):
    single = sample(
        micro,
        torch.tensor([[2], [4]]),
        torch.ones(2, 1),
        generators=_gens(2),
        num_steps=3,
        guidance="cfg",
        guidance_scale=2.0,
    )
    onehot = sample(
        micro,
        torch.tensor([[2, 0], [1, 4]]),
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        generators=_gens(2),
        num_steps=3,
        guidance="cfg",
        guidance_scale=2.0,
        mix_space="condition",
    )
    torch.testing.assert_close(onehot, single, atol=1e-4, rtol=0)


def test_condition_mix_checks(micro):
    with pytest.raises(ValueError, match="mix_space"):
        sample(
            micro,
            torch.tensor([[0, 1]]),
            torch.tensor([[0.5, 0.5]]),
            generators=_gens(1),
            num_steps=2,
            mix_space="latent",
        )
    with pytest.raises(ValueError, match="finite"):
        sample(
            micro,
            torch.tensor([[0, 1]]),
            torch.tensor([[0.7, float("nan")]]),
            generators=_gens(1),
            num_steps=2,
            mix_space="condition",
        )
    with pytest.raises(ValueError, match="columns"):
        micro.net(torch.zeros(1, 3, 16, 16), torch.zeros(1), torch.zeros(1, 4))


# Guides for autoguidance (generation/guide.py).

GUIDE_MAIN = dict(
    preset="test-micro",
    resolution=16,
    batch_size=16,
    lr=2e-3,
    lr_warmup=5,
    num_workers=0,
    sample_steps=2,
    sample_classes=2,
    sample_every=None,
    log_every=5,
    bf16=False,
    total_steps=24,
    checkpoint_every=8,
    snapshot_every=8,
)


def test_snapshot_guide_is_the_nearest_earlier_snapshot(toy_data, tmp_path):
    from scoremix_plugin.generation.guide import guide_snapshot
    from scoremix_plugin.generation.train import train_generator

    out = tmp_path / "main"
    train_generator(dict(GUIDE_MAIN, rec=str(toy_data), output=str(out)))
    assert sorted(p.name for p in out.glob("generator-*.pt")) == [f"generator-{s:07d}.pt" for s in (8, 16, 24)]
    assert guide_snapshot(out, 0.25).name == "generator-0000008.pt"  # 6 -> 8 (the snapshot at 24 is the main)
    assert guide_snapshot(out, 0.6).name == "generator-0000016.pt"  # 14.4 -> 16
    with pytest.raises(FileNotFoundError, match="snapshot_every"):
        guide_snapshot(out, 0.5, main_step=8)


def test_smaller_guide_trains_a_fraction_of_the_steps_and_guides(toy_data, tmp_path):
    from scoremix_plugin.generation.checkpoint import load_generator
    from scoremix_plugin.generation.guide import guide_config, train_guide

    main_cfg = dict(GUIDE_MAIN, rec=str(toy_data), output=str(tmp_path / "main"), duration=100.0)
    cfg = guide_config(main_cfg, preset="test-micro", fraction=0.25)
    assert cfg["total_steps"] == 6 and cfg["duration"] == 25.0 and cfg["snapshot_every"] is None
    assert cfg["output"] == str(tmp_path / "main" / "guide") and cfg["checkpoint_every"] == 6
    summary = train_guide(main_cfg, preset="test-micro", fraction=0.25)
    assert summary["step"] == 6
    guide, gcfg = load_generator(summary["checkpoint"])
    assert gcfg["step"] == 6 and guide.num_classes == 12 and guide.resolution == 16
    # The guide plugs into the sampler's autoguidance with a main model of the same classes.
    with torch.no_grad():
        x = sample(
            guide,
            torch.tensor([[0, 5]]),
            torch.tensor([[0.5, 0.5]]),
            generators=_gens(1),
            num_steps=2,
            guidance="autoguidance",
            guidance_scale=2.0,
            guide=guide,
        )
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="fraction"):
        guide_config(main_cfg, preset="test-micro", fraction=0)


def test_train_generator_cli_also_trains_the_guide(toy_data, tmp_path, capsys):
    from scoremix_plugin import cli
    from scoremix_plugin.generation.checkpoint import load_checkpoint

    cfg = dict(GUIDE_MAIN, rec=str(toy_data), output=str(tmp_path / "run"), total_steps=8, snapshot_every=None)
    path = tmp_path / "gen.py"
    path.write_text("config = " + repr(cfg) + "\n")
    assert cli.main(["train-generator", str(path), "--guide-preset", "test-micro", "--guide-fraction", "0.5"]) == 0
    assert load_checkpoint(tmp_path / "run" / "generator.pt")["step"] == 8
    assert load_checkpoint(tmp_path / "run" / "guide" / "generator.pt")["step"] == 4
    assert "--guidance autoguidance --guide" in capsys.readouterr().out
