"""experiments/ablation.py: the summary's means, sample std and paired differences to the baseline."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from scripts import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    return load_script("experiments/ablation.py")


def _result(out: Path, arm: str, seed: int, acc: float, distance: float | None = None) -> None:
    r = {"arm": arm, "seed": seed, "accuracy": {"toy_lfw": acc}}
    if distance is not None:
        r["selection"] = {"distance_mean": distance}
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / f"{arm}-s{seed}.json").write_text(json.dumps(r))


def test_summary_pairs_each_seed_with_its_own_baseline(ablation, tmp_path):
    for seed, (base, far) in enumerate([(0.80, 0.85), (0.90, 0.88), (0.70, 0.78)]):
        _result(tmp_path, "baseline", seed, base)
        _result(tmp_path, "far", seed, far, distance=1.0 + seed)
    _result(tmp_path, "random", 0, 0.81, distance=0.5)  # one seed only: no std, one paired difference
    s = ablation.summarise(tmp_path)
    far = s["arms"]["far"]
    assert far["accuracy"]["toy_lfw"]["mean"] == pytest.approx((0.85 + 0.88 + 0.78) / 3)
    d = far["delta_vs_baseline"]["toy_lfw"]
    assert d["mean"] == pytest.approx((0.05 - 0.02 + 0.08) / 3)
    assert d["std"] == pytest.approx(0.05131601439446883)  # sample std (ddof 1) of +0.05, -0.02, +0.08
    assert d["wins"] == 2 and d["seeds"] == [0, 1, 2]
    assert far["selection_distance_mean"] == pytest.approx(2.0)
    rnd = s["arms"]["random"]
    assert rnd["accuracy"]["toy_lfw"]["std"] is None and rnd["delta_vs_baseline"]["toy_lfw"]["seeds"] == [0]
    assert list(s["arms"]) == ["baseline", "random", "far"]  # the ARMS order, not file order
    md = (tmp_path / "summary.md").read_text()
    assert "| far | 3 | 83.67 ± 5.13 | +3.67 ± 5.13 (2/3 up) |" in md


# experiments/powered.py: the pre-registered statistics and the summary rebuilt from result JSONs.


@pytest.fixture(scope="module")
def powered():
    return load_script("experiments/powered.py")


def test_paired_stats_match_scipy_t_interval_and_count_signs(powered):
    from scipy import stats

    d = [0.021, -0.004, 0.035, 0.012, 0.0]
    st = powered.paired_stats(d)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=sum(d) / 5, scale=stats.sem(d))
    assert st["mean"] == pytest.approx(0.0128) and st["n"] == 5
    assert (st["lo"], st["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert st["sd"] == pytest.approx(0.0158650559, rel=1e-6)  # sqrt(1.0068e-3 / 4)
    assert (st["up"], st["down"]) == (3, 1)  # a tie counts neither way
    one = powered.paired_stats([0.01])
    assert one["lo"] is None and one["sd"] is None and one["up"] == 1


def test_detectable_difference_formula(powered):
    # t_{0.975,4} = 2.7764451, t_{0.8,4} = 0.9409646
    assert powered.detectable(2.0, 5) == pytest.approx(2.7764451 * 2 / 5**0.5, rel=1e-6)
    assert powered.detectable(2.0, 5, power=0.8) == pytest.approx((2.7764451 + 0.9409646) * 2 / 5**0.5, rel=1e-6)
    with pytest.raises(ValueError, match="n >= 2"):
        powered.detectable(1.0, 1)


def _write(d: Path, arm: str, seed: int, acc: dict, **extra) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{arm}-s{seed}.json").write_text(json.dumps({"arm": arm, "seed": seed, "accuracy": acc, **extra}))


def test_summary_rebuilds_tables_and_figure_from_jsons(powered, tmp_path):
    base = [0.80, 0.82, 0.81]
    far = [0.83, 0.82, 0.85]
    rnd = [0.82, 0.81, 0.84]
    rep = {"eer": 0.1, "fdr": 3.0, "d_prime": 2.0, "leak_counts": {"evaluation": 2, "training_source": 1}}
    al = {
        "linear_cka": 0.31,
        "linear_cka_shuffled": 0.05,
        "mutual_knn": 0.2,
        "mutual_knn_shuffled": 0.04,
        "num_matched": 9,
    }
    for s in range(3):
        _write(tmp_path, "baseline", s, {"t": base[s]})
        _write(tmp_path, "far", s, {"t": far[s]}, datareport=rep, alignment=al)
        _write(tmp_path, "random", s, {"t": rnd[s]})
    s = powered.summarise(tmp_path, tmp_path / "fig.png")
    assert list(s["arms"]) == ["baseline", "random", "far"]
    c = {(x["arm"], x["ref"]): x for x in s["comparisons"]}
    assert set(c) == {("random", "baseline"), ("far", "baseline"), ("far", "random")}
    fb = c[("far", "baseline")]  # differences +3, 0, +4 points
    assert fb["mean"] == pytest.approx(7 / 300) and (fb["up"], fb["down"]) == (2, 0)
    assert fb["detectable"] == pytest.approx(fb["hi"] - fb["mean"])
    assert "| far − baseline | t | 3 | +2.33 | [-2.84, +7.50] | 2 / 0 |" in s["tables"]["comparisons"]
    assert "| far | 3 | 83.33 ± 1.53 |" in s["tables"]["accuracy"]
    assert (
        "| far | 2.000 | 0.100 | 3.000 | 2.000 | 1.000 |" in s["tables"]["datareport"]
    )  # sorted keys: d_prime, eer, fdr, leaks_*
    assert "| 0.310 | 0.050 | 0.200 | 0.040 | 9 |" in s["tables"]["alignment"]
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text())["tables"] == s["tables"]


def test_committed_earlier_jsons_rebuild_the_published_table(powered, tmp_path):
    import shutil

    for p in (REPO / "experiments" / "results" / "earlier").glob("*-s*.json"):
        shutil.copy(p, tmp_path)
    s = powered.summarise(tmp_path)
    docs = (REPO / "docs" / "results.md").read_text()
    # docs/results.md's earlier-design table: the same means and sds (its per-seed rows carry one decimal)
    assert (
        "82.27 ± 1.37 | 91.07 ± 0.35" in docs
        and "| baseline | 3 | 82.27 ± 1.37 | 91.07 ± 0.35 |" in s["tables"]["accuracy"]
    )
    assert "| far | 3 | 84.50 ± 0.60 | 91.30 ± 0.17 |" in s["tables"]["accuracy"]


def test_committed_powered_summary_equals_a_rebuild_from_its_unit_jsons(powered, tmp_path):
    """Issue 26: the powered design's committed summary is what --summary rebuilds from the committed units."""
    import shutil

    committed = REPO / "experiments" / "results" / "powered"
    units = sorted(committed.glob("*-s*.json"))
    if not units:
        assert not (committed / "summary.json").is_file(), "a summary without a unit JSON to rebuild it from"
        return
    for p in units:
        shutil.copy(p, tmp_path)
    rebuilt = powered.summarise(tmp_path)
    saved = json.loads((committed / "summary.json").read_text())
    assert saved["tables"] == rebuilt["tables"], "rerun: python experiments/powered.py --design powered --summary"


def test_budget_and_auggen_refusal(powered, tmp_path, monkeypatch, capsys):
    b = powered.budget(powered.DESIGNS["powered"], ["baseline", "far"], [0, 1], tmp_path)
    assert b["units_todo"] == 4 and b["per_unit_s"]["baseline"] == pytest.approx(150.0 * 5)
    assert b["per_unit_s"]["far"] == pytest.approx(150.0 * 5 + 200 * 16 / powered.MIXED_IMAGES_PER_S + 120.0)
    _write(tmp_path, "far", 0, {"t": 0.5}, seconds=600.0)
    b = powered.budget(powered.DESIGNS["powered"], ["baseline", "far"], [0, 1], tmp_path)
    assert b["units_todo"] == 3 and b["per_unit_s"]["far"] == 600.0 and "measured" in b["source"]["far"]
    monkeypatch.setattr(powered, "auggen_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        powered.main(["--arms", "auggen-far", "--results", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "budget" in err and "mix_space" in err and "edm2-measure" in err


def test_the_powered_design_samples_one_pinned_generator(powered, tmp_path):
    from scoremix_plugin.generation import pretrained

    design = powered.DESIGNS["powered"]
    pinned = design["generator_sha256"]
    # the pin is the shipped file: re-shipping toy200 must be a decision (an amendment), never a silent change
    assert pretrained.provenance("toy200")["weights"]["sha256"] == pinned
    powered.check_generator(design, tmp_path, pinned)
    with pytest.raises(SystemExit, match="pins"):
        powered.check_generator(design, tmp_path, "0" * 64)
    _write(tmp_path, "far", 0, {"t": 0.5}, seconds=1.0)
    r = json.loads((tmp_path / "far-s0.json").read_text())
    (tmp_path / "far-s0.json").write_text(json.dumps(r | {"generator": {"sha256": "f" * 64}}))
    with pytest.raises(SystemExit, match="far-s0.json"):
        powered.check_generator(design, tmp_path, pinned)
    powered.check_generator(powered.DESIGNS["earlier"], tmp_path / "none", None)  # unpinned, no units


def test_a_unit_records_the_machine_and_the_dtype_it_sampled_in(powered):
    import torch
    from easydict import EasyDict as edict

    def ctx(bf16, stages=("generate",)):
        return SimpleNamespace(recipe=edict(device="cpu", generation=edict(bf16=bf16)), markers=dict.fromkeys(stages))

    m = powered.machine(ctx(True))
    assert (m["device"], m["threads"], m["torch"]) == ("cpu", torch.get_num_threads(), torch.__version__)
    assert "gpu" not in m
    # bf16 autocast runs only where it pays (AVX-512 CPUs, GPUs): the record says what actually ran
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert m["generation_dtype"] == ("bfloat16" if avx512 else "float32")
    assert powered.machine(ctx(False))["generation_dtype"] == "float32"
    assert "generation_dtype" not in powered.machine(ctx(True, stages=("baseline",)))
