"""The launcher against a minimal host tree: scoremix configs get our loader (patched before train_v2 runs),
other configs keep the host's, and torchrun with two gloo processes shards the data across ranks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_integration_helpers import write_shards

from scoremix_plugin.cli import main as scoremix_main
from scoremix_plugin.integration import mxnet_compat

REPO = Path(__file__).resolve().parents[1]
N_REAL, C_REAL, C_SYN, PER_CLASS = 96, 12, 6, 5

# A host tree with the host's shape: train_v2.py imports get_dataloader BY NAME at import time (so only a
# patch made before it runs can take effect), dataset.py imports mxnet at its top, and get_config follows
# the host's rule (configs/ prefix, configs.base updated in place with configs.NAME).
HOST_FILES = {
    "dataset.py": """
        import mxnet as mx  # the real host imports mxnet here


        def get_dataloader(root_dir, local_rank, batch_size, dali=False, dali_aug=False, seed=2048, num_workers=2):
            return {"host_loader": root_dir, "mxnet": mx.__version__}
    """,
    "train_v2.py": """
        import json
        import os
        import sys

        import torch
        from torch.utils.data import DataLoader

        from dataset import get_dataloader
        from utils.utils_config import get_config

        if "WORLD_SIZE" in os.environ:  # the host opens its process group at import time too
            torch.distributed.init_process_group("gloo")


        def main():
            cfg = get_config(sys.argv[1])
            loader = get_dataloader(cfg.rec, int(os.environ.get("LOCAL_RANK", 0)), cfg.batch_size, cfg.dali,
                                    cfg.dali_aug, cfg.seed, cfg.num_workers)
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            rec = {"argv": sys.argv[1:], "cwd": os.getcwd(), "is_dataloader": isinstance(loader, DataLoader)}
            if isinstance(loader, DataLoader):
                loader.sampler.set_epoch(1)
                rec["indices"] = list(iter(loader.sampler))
                labels = []
                for step, (img, lab) in enumerate(loader):
                    rec["shape"] = list(img.shape)
                    labels += lab.tolist()
                    if step == 1:
                        break
                rec["labels"], rec["num_batches"] = labels, len(loader)
            else:
                rec["host"] = loader
            os.makedirs(cfg.output, exist_ok=True)
            with open(os.path.join(cfg.output, f"record_{rank}.json"), "w") as f:
                json.dump(rec, f)


        if __name__ == "__main__":
            main()
    """,
    "utils/__init__.py": "",
    "utils/utils_config.py": """
        import importlib
        import os.path as osp


        def get_config(config_file):
            assert config_file.startswith("configs/"), "config file setting must start with configs/"
            name = osp.splitext(osp.basename(config_file))[0]
            cfg = importlib.import_module("configs.base").config
            cfg.update(importlib.import_module("configs.%s" % name).config)
            if cfg.output is None:
                cfg.output = osp.join("work_dirs", name)
            return cfg
    """,
    "configs/__init__.py": "",
    "configs/base.py": """
        from easydict import EasyDict as edict

        config = edict()
        config.batch_size = 16
        config.dali = False
        config.dali_aug = False
        config.seed = 2048
        config.num_workers = 0
        config.output = None
    """,
}


def make_host(root: Path, configs: dict[str, dict]) -> Path:
    for rel, text in HOST_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    for name, keys in configs.items():
        body = "".join(f"config.{k} = {v!r}\n" for k, v in keys.items())
        (root / "configs" / f"{name}.py").write_text(
            "from easydict import EasyDict as edict\n\nconfig = edict()\n" + body
        )
    return root


@pytest.fixture(scope="module")
def host(toy_data, tmp_path_factory):
    manifest = write_shards(tmp_path_factory.mktemp("syn_launch"), toy_data, C_SYN, PER_CLASS, classes_per_shard=3)
    root = tmp_path_factory.mktemp("arcface_torch")
    common = dict(rec=str(toy_data), num_epoch=1, warmup_epoch=0, val_targets=["toy_lfw"])
    make_host(
        root,
        {
            "scoremix_toy": dict(
                common,
                num_classes=C_REAL + C_SYN,
                num_image=N_REAL + C_SYN * PER_CLASS,
                dataset="scoremix",
                scoremix={"manifest": str(manifest), "ratio": None},
                output=str(root / "out_scoremix"),
            ),
            "plain_toy": dict(common, num_classes=C_REAL, num_image=N_REAL, output=str(root / "out_plain")),
            "wrong_toy": dict(
                common,
                num_classes=C_REAL,
                num_image=N_REAL + C_SYN * PER_CLASS,
                dataset="scoremix",
                scoremix={"manifest": str(manifest)},
                output=str(root / "out_wrong"),
            ),
        },
    )
    return root


@pytest.fixture
def restore_shim():
    had = "mxnet" in sys.modules
    yield
    if not had:
        mxnet_compat.uninstall()


def test_scoremix_config_gets_our_loader(host, restore_shim):
    cwd = os.getcwd()
    assert scoremix_main(["arcface-train", "--arcface-root", str(host), "configs/scoremix_toy"]) == 0
    assert os.getcwd() == cwd  # restored
    rec = json.loads((host / "out_scoremix" / "record_0.json").read_text())
    assert rec["argv"] == ["configs/scoremix_toy"] and rec["cwd"] == str(host)
    assert rec["is_dataloader"]
    assert rec["num_batches"] == (N_REAL + C_SYN * PER_CLASS) // 16 and rec["shape"] == [16, 3, 112, 112]
    assert sorted(rec["indices"]) == list(range(N_REAL + C_SYN * PER_CLASS))
    labels = rec["labels"]
    assert len(labels) == 32 and min(labels) >= 0 and max(labels) < C_REAL + C_SYN


def test_other_configs_keep_the_host_loader(host, toy_data, restore_shim):
    assert scoremix_main(["arcface-train", "--arcface-root", str(host), "plain_toy.py"]) == 0
    rec = json.loads((host / "out_plain" / "record_0.json").read_text())
    assert rec["argv"] == ["configs/plain_toy"] and not rec["is_dataloader"]
    assert rec["host"] == {"host_loader": str(toy_data), "mxnet": mxnet_compat.SHIM_VERSION}


def test_config_mismatch_fails_before_the_host_runs(host, restore_shim, capsys):
    # Through the CLI's boundary: a ConfigError is one line on stderr and exit 2.
    assert scoremix_main(["arcface-train", "--arcface-root", str(host), "configs/wrong_toy"]) == 2
    assert re.search(
        r"scoremix arcface-train: error: .*wrong_toy\.py: config\.num_classes = 12 .*manifest", capsys.readouterr().err
    )
    assert not (host / "out_wrong").exists()
    assert scoremix_main(["arcface-train", "--arcface-root", str(host), "configs/missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert scoremix_main(["arcface-train", "--arcface-root", str(host), "elsewhere/my_job.py"]) == 2
    assert "copy the file there" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_shard_the_data(host, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    out = host / "out_scoremix"
    for f in out.glob("record_*.json"):
        f.unlink()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "scoremix_plugin",
        "arcface-train",
        "--arcface-root",
        str(host),
        "configs/scoremix_toy",
    ]
    # Own process group, so a hang kills torchrun's workers too, not only torchrun.
    p = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        log, _ = p.communicate()
        pytest.fail(f"torchrun hung:\n{log[-3000:]}")
    assert p.returncode == 0, log[-3000:]
    recs = [json.loads((out / f"record_{k}.json").read_text()) for k in range(2)]
    a, b = (set(x["indices"]) for x in recs)
    assert not a & b and a | b == set(range(N_REAL + C_SYN * PER_CLASS))
    assert all(x["num_batches"] == (N_REAL + C_SYN * PER_CLASS) // 2 // 16 for x in recs)
