"""experiments/ablation.py: the summary's means, sample std and paired differences to the baseline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", REPO / "experiments" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
