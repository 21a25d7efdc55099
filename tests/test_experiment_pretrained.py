"""experiments/pretrained.py and demo_seeds.py: the quality verdict, the CPU bookkeeping, the seeds summary."""

from __future__ import annotations

import json

import pytest
from scripts import load_script


@pytest.fixture(scope="module")
def pre():
    return load_script("experiments/pretrained.py")


def _res(real, single, mix, top1=0.97, source=0.3):
    fars = ("0.0001", "0.001", "0.01")

    def rec(shares):
        return {"recognised_at": {f: {"share": s} for f, s in zip(fars, shares)}}

    return {
        "real": rec(real),
        "single": rec(single) | {"top1": top1},
        "mix_score": rec(mix) | {"nearest_real_is_source": source, "intra": 0.5},
    }


def test_verdict_judges_where_the_real_identities_meet_the_target(pre):
    # real identities reach 90 % only at 1e-3: judged there, not at the stricter 1e-4
    v = pre.verdict(_res(real=(0.55, 0.9, 1.0), single=(0.5, 0.925, 1.0), mix=(0.1, 0.55, 0.9)))
    assert v["far"] == "0.001" and v["passes"]
    assert v["by_far"]["0.0001"]["single_vs_real"] == pytest.approx(0.5 / 0.55)
    for bad in (dict(single=(0.5, 0.875, 1.0)), dict(mix=(0.1, 0.45, 0.9)), dict(top1=0.94), dict(source=0.5)):
        kw = dict(real=(0.55, 0.9, 1.0), single=(0.5, 0.925, 1.0), mix=(0.1, 0.55, 0.9)) | bad
        assert not pre.verdict(_res(**kw))["passes"], bad
    # a recogniser that never recognises 90 % of its own identities cannot judge: no FAR, no pass
    v = pre.verdict(_res(real=(0.3, 0.6, 0.8), single=(1, 1, 1), mix=(1, 1, 1)))
    assert v["far"] is None and not v["passes"]


def test_training_cpu_is_summed_over_resumed_segments(pre, tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "cpu.json").write_text(json.dumps([{"cpu_s": 100.0, "to_step": 1000}, {"cpu_s": 60.0, "to_step": 1500}]))
    assert pre.training_cpu_s(d, 1000) == pytest.approx(100.0)
    assert pre.training_cpu_s(d, 1250) == pytest.approx(130.0)  # half of the second segment
    assert pre.training_cpu_s(d, 1500) == pytest.approx(160.0)
    assert pre.training_cpu_s(d, 2000) is None  # not trained that far
    assert pre.training_cpu_s(tmp_path / "none", 10) is None


def test_demo_seeds_summary_pairs_by_seed(tmp_path, monkeypatch):
    ds = load_script("experiments/demo_seeds.py")
    monkeypatch.setattr(ds, "RESULTS", tmp_path)
    for seed, (b, m) in enumerate([(0.80, 0.83), (0.82, 0.84), (0.79, 0.80)]):
        (tmp_path / f"seed-{seed}.json").write_text(
            json.dumps(
                {
                    "seed": seed,
                    "generator": {"pretrained": "toy40"},
                    "baseline": {"toy_lfw": 0.9, "toy_cfp_fp": b},
                    "scoremix": {"toy_lfw": 0.9, "toy_cfp_fp": m},
                    "gate_passed": True,
                    "wall_s": 1.0,
                }
            )
        )
    s = ds.summarise()
    cfp = s["targets"]["toy_cfp_fp"]
    assert s["seeds"] == [0, 1, 2] and cfp["up"] == 3 and cfp["mean"] == pytest.approx(2.0)
    assert cfp["lo"] < 2.0 < cfp["hi"]
    assert "| toy_cfp_fp | 3 |" in (tmp_path / "summary.md").read_text()


def test_provenance_takes_the_default_samplers_row_only_for_the_same_weights(pre, tmp_path):
    from scoremix_plugin.generation.settings import SamplerSettings

    s = SamplerSettings()
    row = _res(real=(1.0, 1.0, 1.0), single=(0.91, 0.95, 1.0), mix=(0.68, 0.8, 0.9), top1=0.96) | {
        "guidance": s.guidance,
        "guidance_scale": s.guidance_scale,
        "inputs_mix2": 72,
    }
    f = tmp_path / "toy200.json"
    f.write_text(
        json.dumps(
            {"sha256": "abc", "settings": {f"{s.solver}-{s.steps}": row, "heun-8": _res((1,) * 3, (0,) * 3, (0,) * 3)}}
        )
    )
    q = pre.default_sampler_quality("toy200", "abc", tmp_path)
    assert q["far"] == "0.0001" and q["single_recognised"] == 0.91 and q["mix_recognised"] == 0.68 and q["passes"]
    assert q["sampler"] == {"solver": s.solver, "num_steps": s.steps} and q["inputs_mix2"] == 72
    assert pre.default_sampler_quality("toy200", "other weights", tmp_path) is None
    assert pre.default_sampler_quality("toy40", "abc", tmp_path) is None  # no file
    f.write_text(json.dumps({"sha256": "abc", "settings": {f"{s.solver}-{s.steps}": row | {"guidance_scale": 4.0}}}))
    assert pre.default_sampler_quality("toy200", "abc", tmp_path) is None  # not the default guidance
