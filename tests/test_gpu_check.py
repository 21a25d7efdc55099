"""benchmarks/gpu_check.py in its CPU smoke mode, so the GPU check cannot rot between GPU leases.

The smoke run takes every part at tiny sizes on the CPU and must write the JSON + Markdown report; a
part that hangs is killed at its budget and recorded, and the next part still runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import gpu_check, gpu_report  # noqa: E402
from benchmarks.gpu_settings import PARTS, Settings, gpu_presets  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_smoke")
    assert gpu_check.main(["--cpu-smoke", "--out", str(out), "--no-install"]) == 0
    return out, json.loads((out / "gpu_check.json").read_text())


def test_smoke_writes_json_and_markdown(smoke):
    out, report = smoke
    assert report["meta"]["mode"] == "cpu-smoke"
    assert list(report["parts"]) == list(PARTS)
    md = (out / "gpu_check.md").read_text()
    for heading in ("## Targets", "## Parts", "## Generator test-micro", "## Recogniser training", "## Loader alone"):
        assert heading in md


def test_smoke_parts_measure_something(smoke):
    _, report = smoke
    parts = report["parts"]
    for name in ("data", "env", "generator", "recogniser", "loader"):
        assert parts[name]["status"] == "ok", (name, parts[name].get("error"), parts[name].get("log_tail"))
    assert parts["env"]["peak_tflops"] > 0
    gen = parts["generator"]["presets"]["test-micro"]
    assert gen["gflops_per_forward"] > 0 and gen["train"]["steps_per_s"] > 0
    mix = gen["sampler"]["mix2"]
    assert mix["nfe_per_image"] == 2 * (2 * 2 - 1) and mix["images_per_s"] > 0 and 0 < mix["fraction_of_peak"]
    assert gen["sampler"]["mix2_autoguidance"]["nfe_per_image"] == 4 * 3
    assert parts["recogniser"]["images_per_s"] > 0 and parts["recogniser"]["global_step"] == 3
    assert parts["loader"]["rows"][0]["images_per_s"] > 0
    assert parts["loader"]["host_signature"]["is_dataloader"]
    # Without CUDA the cuda tests are collected and skipped, and the host cannot run (nccl + .cuda()).
    assert parts["tests"]["status"] == "ok" and parts["tests"]["counts"]["skipped"] >= 6
    assert parts["tests"]["counts"]["passed"] == 0
    assert parts["host"]["status"] == "skipped"


def test_a_part_past_its_budget_is_killed_and_recorded(tmp_path):
    settings = Settings.for_mode(smoke=True)
    res = gpu_check.spawn_part("generator", settings, tmp_path, 1.0, gpu_check.part_env(tmp_path / "none"))
    assert res["status"] in ("timeout", "failed") and res["error"]


def test_targets_and_fastest_from_a_report():
    report = {
        "meta": {},
        "parts": {
            "generator": {
                "presets": {
                    "p": {
                        "sampler_variants_mix2": {
                            "eager": {"images_per_s": 10.0, "fraction_of_peak": 0.3, "images_per_h": 36000},
                            "compile": {"images_per_s": 20.0, "fraction_of_peak": 0.6, "images_per_h": 72000},
                            "cuda_graphs": {"error": "boom"},
                        }
                    }
                }
            },
            "recogniser": {"images_per_s": 850.0},
            "host": {"images_per_s": 1000.0},
        },
    }
    rows = gpu_report.targets(report)
    assert rows[0][-1] == "met" and "compile" in rows[0][0]
    assert rows[1][-1] == "missed" and rows[1][2] == "0.850"
    assert "sampler compile" in gpu_report.fastest_lines(report)


def test_presets_come_from_the_registry():
    from scoremix_plugin.generation.network import PRESETS

    presets = gpu_presets()
    assert "gpu-112" in presets and "tiny-cpu" not in presets
    assert all(PRESETS[p]["resolution"] == 112 for p in presets)
    assert Settings.for_mode(smoke=False).presets == presets


def test_wheel_names_and_missing(tmp_path):
    from benchmarks.gpu_wheels import missing_wheels, wheel_dist

    assert wheel_dist(Path("huggingface_hub-2.4.0-py3-none-any.whl")) == ("huggingface-hub", "2.4.0")
    import torch

    (tmp_path / f"torch-{torch.__version__}-cp312-cp312-linux_x86_64.whl").write_bytes(b"")
    (tmp_path / "not_installed_dist-1.0-py3-none-any.whl").write_bytes(b"")
    assert [w.name for w in missing_wheels(tmp_path)] == ["not_installed_dist-1.0-py3-none-any.whl"]
