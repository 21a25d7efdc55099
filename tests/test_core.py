"""The shared core: CLI table, config loading, centres files, atomic writes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from scoremix_plugin import cli
from scoremix_plugin.centres import load_centres, save_centres
from scoremix_plugin.config import ConfigError, load_recogniser_config
from scoremix_plugin.io_utils import atomic_path, sha256_file, write_json_atomic


def test_every_cli_command_resolves():
    for name, (module, stem, _) in cli.COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, f"add_{stem}_arguments")), name
        assert callable(getattr(mod, f"run_{stem}")), name


def test_python_m_entry_point_prints_help():
    out = subprocess.run([sys.executable, "-m", "scoremix_plugin", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_import_has_no_side_effects():
    code = "import sys, scoremix_plugin, scoremix_plugin.cli; print('torch' in sys.modules, 'mxnet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_atomic_path_keeps_nothing_on_error(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_json_atomic(target, {"a": 1})
    assert target.read_text().strip().startswith("{") and len(sha256_file(target)) == 64


def test_centres_round_trip_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    save_centres(path, np.arange(5), rng.normal(size=(5, 8)), np.full(5, 3), space="embedding")
    c = load_centres(path)
    assert c.space == "embedding" and c.centres.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c.centres, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="space"):
        save_centres(path, np.arange(5), rng.normal(size=(5, 8)), space="bogus")
    np.savez(tmp_path / "bad.npz", labels=np.arange(3))
    with pytest.raises(ValueError, match="missing arrays"):
        load_centres(tmp_path / "bad.npz")


HOST_RECIPE = """
from easydict import EasyDict as edict
config = edict()
config.margin_list = (1.0, 0.5, 0.0)
config.network = "r50"
config.rec = "/train_tmp/faces_webface_112x112"
config.num_classes = 10572
config.num_image = 501195
config.num_epoch = 20
config.warmup_epoch = 0
config.val_targets = ['lfw', 'cfp_fp', 'agedb_30']
"""


def test_host_recipe_loads_over_base(tmp_path):
    p = tmp_path / "webface_r50.py"
    p.write_text(HOST_RECIPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_recogniser_config(p)
    assert cfg.lr == 0.1 and cfg.seed == 2048 and cfg.num_classes == 10572 and cfg.scoremix is None


def test_unknown_key_warns_and_scoremix_block_is_strict(tmp_path):
    p = tmp_path / "c.py"
    p.write_text(HOST_RECIPE + "config.colour = 'red'\n")
    with pytest.warns(UserWarning, match="colour"):
        load_recogniser_config(p)
    p.write_text(HOST_RECIPE + "config.dataset = 'scoremix'\nconfig.scoremix = edict(manifest='m.json', ratoi=0.5)\n")
    with pytest.raises(ConfigError, match="ratoi"):
        load_recogniser_config(p)
    p.write_text(HOST_RECIPE + "config.dataset = 'scoremix'\nconfig.scoremix = edict(manifest='m.json', ratio=1.5)\n")
    with pytest.raises(ConfigError, match="ratio"):
        load_recogniser_config(p)
    p.write_text(HOST_RECIPE.replace("config.num_image = 501195\n", ""))
    with pytest.raises(ConfigError, match="num_image"):
        load_recogniser_config(p)


@pytest.mark.parametrize("asked, local_rank, expected", [("cuda", "1", "cuda:1"), ("cuda:0", "1", "cuda:0")])
def test_init_distributed_gives_cuda_an_index(monkeypatch, asked, local_rank, expected):
    """config.device = "cuda" is this process's GPU (torch.cuda.set_device refuses a device without index)."""
    import torch

    from scoremix_plugin import distributed

    seen = []
    monkeypatch.setattr(torch.cuda, "set_device", seen.append)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setenv("WORLD_SIZE", "1")
    env = distributed.init_distributed(asked)
    assert env.device == torch.device(expected) and seen == [torch.device(expected)]
    assert env.local_rank == int(local_rank) and not env.distributed
