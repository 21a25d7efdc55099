"""Hostile command lines: a table of bad invocations of ``scoremix`` and the verdict on each.

Shared by ``tests/test_hostile_cli.py`` (asserts every case is a clean error) and
``benchmarks/bad_inputs.py`` (prints the counts). A case returns a :class:`Bad`: the argv, the text the
error message must name (the culprit: a flag, a config key, a file) and files that must be left as they were.

Verdicts:
- ``clean``: exit 2, no traceback, the last stderr line is ``scoremix CMD: error: ...`` naming the culprit,
  and every protected file unchanged;
- ``traceback``: a Python traceback reached the user (or an exception escaped ``main``);
- ``silent``: exit 0, or a protected file changed (a wrong result or lost data without an error);
- ``crash``: the process died from a signal, or ran out of memory;
- ``unclear``: any other failure (wrong exit code, message without the culprit or the prefix).

Every case runs in this process through ``scoremix_plugin.cli.main`` (fast); those about memory bounds
run under an address-space limit, and the lock case takes the lock from another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VERDICTS = ("clean", "traceback", "silent", "crash", "unclear")


@dataclass
class Bad:
    argv: list[str]
    culprit: str  # text the error message must contain
    keep: list[Path] = field(default_factory=list)  # files/folders whose bytes must not change
    guard_memory: bool = False  # run under an address-space limit (an unbounded allocation fails, not the machine)
    before: Callable[[], object] | None = (
        None  # runs just before the command (e.g. take a lock); may return a finaliser
    )


@dataclass
class Outcome:
    name: str
    verdict: str
    rc: object
    message: str


CASES: dict[str, Callable] = {}


def case(name: str):
    def deco(fn):
        CASES[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------------------------
# Fixtures: tiny inputs made with the library (no CLI), once per session.


@dataclass
class Fixtures:
    root: Path
    toy: Path  # RecordIO folder, 6 identities x 4 images, with toy_lfw.bin
    gen: Path  # micro generator checkpoint (16 px)
    centres: Path
    pairs: Path
    model: Path  # r10_tiny state dict (embedding 32)
    nan_model: Path
    nan_head: Path  # a recogniser checkpoint whose head weights are NaN
    list_ckpt: Path  # torch.save([1, 2, 3])
    garbage: Path  # random bytes
    syn: Path  # a finished generate output (manifest.json + shards)
    rec_cfg: Callable[..., Path]  # rec_cfg(tmp, **over) -> recogniser config file
    gen_cfg: Callable[..., Path]  # gen_cfg(tmp, **over) -> generator config file


def _literal(v) -> str:
    # repr(nan) is not valid Python: a config file spells it float("nan").
    return f"float({str(v)!r})" if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")) else repr(v)


def _config_file(path: Path, values: dict) -> Path:
    body = "".join(f"config.{k} = {_literal(v)}\n" for k, v in values.items())
    path.write_text("from easydict import EasyDict as edict\nconfig = edict()\n" + body)
    return path


def build_fixtures(root: Path) -> Fixtures:
    import numpy as np
    import torch

    from scoremix_plugin.backbones import get_backbone
    from scoremix_plugin.centres import save_centres
    from scoremix_plugin.generation.checkpoint import CHECKPOINT_FORMAT, plain
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import build_network, network_kwargs
    from scoremix_plugin.io_utils import save_torch_atomic
    from scoremix_plugin.synthesis.generate import GenerateSettings, generate
    from scoremix_plugin.synthesis.select import run_selection
    from scoremix_plugin.toydata import write_toy_dataset

    root.mkdir(parents=True, exist_ok=True)
    toy = root / "toy"
    write_toy_dataset(toy, num_identities=6, images_per_identity=4, num_test_identities=4, num_pairs=10, seed=0)
    torch.manual_seed(0)
    kw = network_kwargs("test-micro", 6, 16)
    den = EDMPrecond(build_network(kw), num_classes=6, resolution=16, sigma_data=0.5)
    sd = den.net.state_dict()
    gen = root / "gen.pt"
    save_torch_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "step": 0,
            "net": sd,
            "ema": sd,
            "optimizer": {},
            "config": plain({"rec": str(toy), "seed": 0}),
            "num_classes": 6,
            "resolution": 16,
            "preset": "test-micro",
            "network_kwargs": plain(kw),
            "sigma_data": 0.5,
        },
        gen,
    )
    save_centres(root / "centres.npz", np.arange(6), np.random.default_rng(0).normal(size=(6, 8)), space="embedding")
    run_selection(root / "centres.npz", root / "pairs.csv", strategy="far", num_identities=2, progress=False)
    net = get_backbone("r10_tiny", num_features=32)
    torch.save(net.state_dict(), root / "model.pt")
    torch.save(
        {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in net.state_dict().items()},
        root / "nan_model.pt",
    )
    torch.save(
        {
            "format": "scoremix-recogniser/1",
            "head": {"weight": torch.full((6, 32), float("nan"))},
            "rank": 0,
            "world_size": 1,
            "num_classes": 6,
            "class_start": 0,
        },
        root / "checkpoint_rank0.pt",
    )
    torch.save([1, 2, 3], root / "list.pt")
    (root / "garbage.pt").write_bytes(np.random.default_rng(1).bytes(300))
    syn = root / "syn"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate(
            GenerateSettings(
                ckpt=str(gen),
                pairs=str(root / "pairs.csv"),
                real=str(toy),
                images_per_identity=1,
                shard_size=1,
                steps=1,
                batch_size=2,
                guidance="none",
                guidance_scale=1.0,
                bf16=False,
            ),
            syn,
            device="cpu",
            grids=False,
            progress=False,
        )
    finally:
        torch.set_num_threads(n)

    def rec_cfg(tmp: Path, **over) -> Path:
        values = dict(
            rec=str(toy),
            network="r10_tiny",
            embedding_size=32,
            num_classes=6,
            num_image=24,
            num_epoch=1,
            warmup_epoch=0,
            batch_size=8,
            lr=0.1,
            num_workers=0,
            frequent=1,
            verbose=10_000,
            val_targets=["toy_lfw"],
            output=str(tmp / "run"),
            seed=0,
            device="cpu",
            max_steps=1,
        )
        values.update(over)
        return _config_file(tmp / "rec_cfg.py", values)

    def gen_cfg(tmp: Path, **over) -> Path:
        values = dict(
            rec=str(toy),
            output=str(tmp / "gen_run"),
            preset="test-micro",
            resolution=16,
            batch_size=4,
            total_steps=1,
            num_workers=0,
            log_every=1,
            bf16=False,
            checkpoint_every=None,
            sample_every=None,
            sample_steps=1,
            sample_classes=2,
            device="cpu",
        )
        values.update(over)
        return _config_file(tmp / "gen_cfg.py", values)

    return Fixtures(
        root=root,
        toy=toy,
        gen=gen,
        centres=root / "centres.npz",
        pairs=root / "pairs.csv",
        model=root / "model.pt",
        nan_model=root / "nan_model.pt",
        nan_head=root / "checkpoint_rank0.pt",
        list_ckpt=root / "list.pt",
        garbage=root / "garbage.pt",
        syn=syn,
        rec_cfg=rec_cfg,
        gen_cfg=gen_cfg,
    )


# ----------------------------------------------------------------------------------------------
# The cases. Each gets the fixtures and its own empty folder.

S = str


def _sample(fx, tmp, *extra, ckpt=None):
    return [
        "sample",
        "--ckpt",
        S(ckpt or fx.gen),
        "--out",
        S(tmp / "grid.png"),
        "--n",
        "1",
        "--steps",
        "1",
        "--guidance",
        "none",
        "--guidance-scale",
        "1",
        "--no-bf16",
        *extra,
    ]


@case("sample: class out of range")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,99"), "99")


@case("sample: negative class")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes=-1,2"), "-1")


@case("sample: non-convex weights")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", "--weights", "0.7,0.7"), "--weights")


@case("sample: weights count")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", "--weights", "1"), "--weights")


@case("sample: --n 0")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", "--n", "0"), "--n")


@case("sample: --steps 0")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", "--steps", "0"), "--steps")


@case("sample: --mix-window one value")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", "--mix-window", "1"), "--mix-window")


@case("sample: --outside-window column out of range")
def _(fx, tmp):
    return Bad(
        _sample(fx, tmp, "--classes", "1,2", "--mix-window", "0.5,2", "--outside-window", "5"), "--outside-window"
    )


@case("sample: autoguidance without --guide")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", "--guidance", "autoguidance", "--guidance-scale", "2"), "--guide")


@case("sample: checkpoint missing")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", ckpt=tmp / "nope.pt"), "nope.pt")


@case("sample: checkpoint is a list")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", ckpt=fx.list_ckpt), "list.pt")


@case("sample: checkpoint is garbage")
def _(fx, tmp):
    return Bad(_sample(fx, tmp, "--classes", "1,2", ckpt=fx.garbage), "garbage.pt")


@case("sample: output under a file")
def _(fx, tmp):
    (tmp / "file").write_text("x")
    return Bad(
        [
            "sample",
            "--ckpt",
            S(fx.gen),
            "--classes",
            "1",
            "--n",
            "1",
            "--steps",
            "1",
            "--out",
            S(tmp / "file" / "grid.png"),
        ],
        "file",
    )


@case("export-conditions: checkpoint is a list")
def _(fx, tmp):
    return Bad(["export-conditions", "--ckpt", S(fx.list_ckpt), "--out", S(tmp / "c.npz")], "list.pt")


@case("export-conditions: checkpoint missing keys")
def _(fx, tmp):
    import torch

    torch.save({"format": "scoremix-generator/1"}, tmp / "half.pt")
    return Bad(["export-conditions", "--ckpt", S(tmp / "half.pt"), "--out", S(tmp / "c.npz")], "half.pt")


def _select(fx, tmp, *extra, centres=None):
    return ["select", "--centres", S(centres or fx.centres), "--out", S(tmp / "pairs.csv"), *extra]


@case("select: centres missing")
def _(fx, tmp):
    return Bad(_select(fx, tmp, "--num-identities", "2", centres=tmp / "none.npz"), "none.npz")


@case("select: centres garbage")
def _(fx, tmp):
    return Bad(_select(fx, tmp, "--num-identities", "2", centres=fx.garbage), "garbage.pt")


@case("select: centres with NaN")
def _(fx, tmp):
    import numpy as np

    np.savez(
        tmp / "nan.npz",
        labels=np.arange(3),
        centres=np.full((3, 4), np.nan, np.float32),
        counts=np.zeros(3, np.int64),
        space=np.array("embedding"),
    )
    return Bad(_select(fx, tmp, "--num-identities", "1", centres=tmp / "nan.npz"), "nan.npz")


@case("select: --num-identities 0")
def _(fx, tmp):
    return Bad(_select(fx, tmp, "--num-identities", "0"), "--num-identities")


@case("select: too many identities")
def _(fx, tmp):
    return Bad(_select(fx, tmp, "--num-identities", "500"), "--num-identities")


@case("select: non-convex weights")
def _(fx, tmp):
    return Bad(_select(fx, tmp, "--num-identities", "2", "--weights", "0.7,0.7"), "--weights")


@case("select: --k 1")
def _(fx, tmp):
    return Bad(_select(fx, tmp, "--num-identities", "2", "--k", "1"), "--k")


@case("select: output under a file")
def _(fx, tmp):
    (tmp / "file").write_text("x")
    return Bad(
        ["select", "--centres", S(fx.centres), "--num-identities", "2", "--out", S(tmp / "file" / "p.csv")], "file"
    )


def _generate(fx, tmp, *extra, out=None, **over):
    args = {
        "--ckpt": fx.gen,
        "--pairs": fx.pairs,
        "--real": fx.toy,
        "--images-per-identity": 1,
        "--steps": 1,
        "--batch-size": 2,
        "--guidance": "none",
        "--guidance-scale": 1,
        "--out": out or tmp / "syn",
    }
    args.update(over)
    flat = [x for k, v in args.items() for x in (k, S(v))]
    return ["generate", *flat, "--no-grids", "--no-bf16", *extra]


@case("generate: pairs missing")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--pairs": tmp / "none.csv"}), "none.csv")


@case("generate: pairs class out of range")
def _(fx, tmp):
    (tmp / "bad.csv").write_text("new_label,class_a,class_b,weight_a,weight_b,distance\n0,1,60,0.5,0.5,1.0\n")
    return Bad(_generate(fx, tmp, **{"--pairs": tmp / "bad.csv"}), "bad.csv")


@case("generate: real folder missing")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--real": tmp / "noreal"}), "noreal")


@case("generate: checkpoint is a list")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--ckpt": fx.list_ckpt}), "list.pt")


@case("generate: --images-per-identity 0")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--images-per-identity": 0}), "--images-per-identity")


@case("generate: --shard-size 0")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, "--shard-size", "0"), "--shard-size")


@case("generate: resume with other settings")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.syn, tmp / "syn")
    return Bad(_generate(fx, tmp, **{"--seed": 5}), "seed", keep=[tmp / "syn"])


@case("generate: output is the real folder")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.toy, tmp / "real")
    return Bad(_generate(fx, tmp, **{"--real": tmp / "real", "--out": tmp / "real"}), "real", keep=[tmp / "real"])


@case("generate: output locked by another run")
def _(fx, tmp):
    out = tmp / "syn"
    out.mkdir()

    def hold():
        # Another process holds the folder's lock (this process would share its own lock).
        p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys, time\n"
                f"f = open({S(out / '.lock')!r}, 'a+')\n"
                "fcntl.flock(f, fcntl.LOCK_EX)\n"
                "f.truncate(0); f.write(str(os.getpid())); f.flush()\n"
                "print('held', flush=True)\n"
                "time.sleep(60)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        p.stdout.readline()

        def release():
            p.kill()
            p.wait()

        return release

    return Bad(_generate(fx, tmp), S(out), before=hold)


def _export(fx, tmp, model, network="r10_tiny", *extra):
    return ["export", "--model", S(model), "--network", network, "--out", S(tmp / "m.onnx"), "--no-check", *extra]


@case("export: model missing")
def _(fx, tmp):
    return Bad(_export(fx, tmp, tmp / "none.pt"), "none.pt")


@case("export: model is a list")
def _(fx, tmp):
    return Bad(_export(fx, tmp, fx.list_ckpt), "list.pt")


@case("export: model is garbage")
def _(fx, tmp):
    return Bad(_export(fx, tmp, fx.garbage), "garbage.pt")


@case("export: weights of another network")
def _(fx, tmp):
    return Bad(_export(fx, tmp, fx.model, "r18_cpu"), "model.pt")


@case("export: --opset 5")
def _(fx, tmp):
    return Bad(_export(fx, tmp, fx.model, "r10_tiny", "--opset", "5"), "opset")


@case("export: model with NaN weights")
def _(fx, tmp):
    return Bad(_export(fx, tmp, fx.nan_model), "nan_model.pt")


@case("verify: model with NaN weights")
def _(fx, tmp):
    return Bad(
        [
            "verify",
            "--model",
            S(fx.nan_model),
            "--network",
            "r10_tiny",
            "--data",
            S(fx.toy),
            "--targets",
            "toy_lfw",
            "--device",
            "cpu",
            "--no-progress",
        ],
        "nan_model.pt",
    )


@case("sample: generator with NaN weights")
def _(fx, tmp):
    import torch

    ck = torch.load(fx.gen, weights_only=True)
    ck["ema"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ck["ema"].items()}
    torch.save(ck, tmp / "nan_gen.pt")
    return Bad(_sample(fx, tmp, "--classes", "1,2", ckpt=tmp / "nan_gen.pt"), "nan_gen.pt")


@case("select: centres is a .npy array")
def _(fx, tmp):
    import numpy as np

    np.save(tmp / "c.npy", np.ones((3, 4), np.float32))
    return Bad(_select(fx, tmp, "--num-identities", "1", centres=tmp / "c.npy"), "c.npy")


@case("generate: --steps 0")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--steps": 0}), "--steps")


@case("merge: --out contains the real folder")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.toy, tmp / "data" / "real")
    return Bad(
        _merge(fx, tmp, tmp / "data", "--overwrite", real=tmp / "data" / "real"), "real", keep=[tmp / "data" / "real"]
    )


@case("embed: head checkpoint with NaN weights")
def _(fx, tmp):
    return Bad(["embed", "--checkpoint", S(fx.nan_head), "--out", S(tmp / "c.npz")], "checkpoint_rank0.pt")


@case("embed: head checkpoint is a list")
def _(fx, tmp):
    return Bad(["embed", "--checkpoint", S(fx.list_ckpt), "--out", S(tmp / "c.npz")], "list.pt")


@case("embed: checkpoint glob matches nothing")
def _(fx, tmp):
    return Bad(["embed", "--checkpoint", S(tmp / "ck*.pt"), "--out", S(tmp / "c.npz")], "ck*.pt")


@case("embed: --model without --data")
def _(fx, tmp):
    return Bad(["embed", "--model", S(fx.model), "--network", "r10_tiny", "--out", S(tmp / "c.npz")], "--data")


@case("embed: .pt model without --network")
def _(fx, tmp):
    return Bad(
        ["embed", "--model", S(fx.model), "--data", S(fx.toy), "--out", S(tmp / "c.npz"), "--no-progress"], "--network"
    )


@case("embed: --data missing")
def _(fx, tmp):
    return Bad(
        [
            "embed",
            "--model",
            S(fx.model),
            "--network",
            "r10_tiny",
            "--data",
            S(tmp / "nodata"),
            "--out",
            S(tmp / "c.npz"),
            "--no-progress",
        ],
        "nodata",
    )


@case("embed: model with NaN weights")
def _(fx, tmp):
    return Bad(
        [
            "embed",
            "--model",
            S(fx.nan_model),
            "--network",
            "r10_tiny",
            "--data",
            S(fx.toy),
            "--out",
            S(tmp / "c.npz"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        "nan_model.pt",
    )


def _merge(fx, tmp, out, *extra, real=None, syn=None):
    return [
        "merge",
        "--real",
        S(real or fx.toy),
        "--synthetic",
        S(syn or fx.syn),
        "--out",
        S(out),
        "--no-progress",
        *extra,
    ]


@case("merge: --out is the real folder")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.toy, tmp / "real")
    return Bad(_merge(fx, tmp, tmp / "real", "--overwrite", real=tmp / "real"), "real", keep=[tmp / "real"])


@case("merge: --out is a shard of the synthetic input")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.syn, tmp / "syn")
    return Bad(
        _merge(fx, tmp, tmp / "syn" / "shard-00000", "--overwrite", syn=tmp / "syn"), "shard-00000", keep=[tmp / "syn"]
    )


@case("merge: --out holds data")
def _(fx, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "train.rec").write_bytes(b"precious")
    return Bad(_merge(fx, tmp, tmp / "out"), "out", keep=[tmp / "out"])


@case("merge: synthetic manifest missing")
def _(fx, tmp):
    return Bad(_merge(fx, tmp, tmp / "out", syn=tmp / "nosyn"), "nosyn")


@case("merge: synthetic manifest is not JSON")
def _(fx, tmp):
    (tmp / "syn").mkdir()
    (tmp / "syn" / "manifest.json").write_text("{not json")
    return Bad(_merge(fx, tmp, tmp / "out", syn=tmp / "syn"), "manifest.json")


@case("merge: real folder missing")
def _(fx, tmp):
    return Bad(_merge(fx, tmp, tmp / "out", real=tmp / "noreal"), "noreal")


@case("toy-data: --out holds data")
def _(fx, tmp):
    (tmp / "data").mkdir()
    (tmp / "data" / "train.rec").write_bytes(b"precious")
    return Bad(
        [
            "toy-data",
            "--out",
            S(tmp / "data"),
            "--identities",
            "2",
            "--images-per-identity",
            "1",
            "--test-identities",
            "2",
            "--pairs",
            "2",
        ],
        "data",
        keep=[tmp / "data"],
    )


@case("toy-data: --identities 0")
def _(fx, tmp):
    return Bad(["toy-data", "--out", S(tmp / "data"), "--identities", "0"], "--identities")


@case("toy-data: --size 0")
def _(fx, tmp):
    return Bad(["toy-data", "--out", S(tmp / "data"), "--identities", "2", "--size", "0"], "--size")


# train


@case("train: config missing")
def _(fx, tmp):
    return Bad(["train", S(tmp / "none.py"), "--no-progress"], "none.py")


@case("train: config raises")
def _(fx, tmp):
    (tmp / "c.py").write_text("config = 1 / 0\n")
    return Bad(["train", S(tmp / "c.py"), "--no-progress"], "c.py")


@case("train: config has a syntax error")
def _(fx, tmp):
    (tmp / "c.py").write_text("config = edict(\n")
    return Bad(["train", S(tmp / "c.py"), "--no-progress"], "c.py")


@case("train: config lacks num_classes")
def _(fx, tmp):
    cfg = fx.rec_cfg(tmp)
    cfg.write_text(cfg.read_text().replace("config.num_classes = 6\n", ""))
    return Bad(["train", S(cfg), "--no-progress"], "num_classes")


@case("train: max_steps=-5")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, max_steps=-5)), "--no-progress"], "max_steps")


@case("train: --max-steps 0")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp)), "--max-steps", "0", "--no-progress"], "max_steps")


@case("train: lr=nan")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, lr=float("nan"))), "--no-progress"], "lr")


@case("train: lr=-1")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, lr=-1.0)), "--no-progress"], "lr")


@case("train: val_targets is a string")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, val_targets="nosuch")), "--no-progress"], "nosuch")


@case("train: val_targets names a missing .bin")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, val_targets=["lfw"])), "--no-progress"], "val_targets")


@case("train: batch_size=0")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, batch_size=0)), "--no-progress"], "batch_size")


@case("train: batch_size is a string")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, batch_size="8")), "--no-progress"], "batch_size")


@case("train: unknown network")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, network="r999")), "--no-progress"], "r999")


@case("train: num_classes below the labels")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, num_classes=3)), "--no-progress"], "num_classes")


@case("train: rec folder missing")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, rec=S(tmp / "norec"), val_targets=[])), "--no-progress"], "norec")


@case("train: into an existing run")
def _(fx, tmp):
    run = tmp / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"trained for a week")
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    return Bad(["train", S(fx.rec_cfg(tmp)), "--no-progress"], S(run), keep=[run])


@case("train: output is the data folder")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.toy, tmp / "data")
    cfg = fx.rec_cfg(tmp, rec=S(tmp / "data"), output=S(tmp / "data"))
    return Bad(["train", S(cfg), "--no-progress"], "data", keep=[tmp / "data"])


@case("train: --resume with no checkpoint")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp)), "--resume", "--no-progress"], "resume")


@case("train: optimizer unknown")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, optimizer="lion")), "--no-progress"], "optimizer")


@case("train: --resume checkpoint is a list")
def _(fx, tmp):
    import shutil

    (tmp / "run").mkdir()
    shutil.copy(fx.list_ckpt, tmp / "run" / "checkpoint_rank0.pt")
    return Bad(["train", S(fx.rec_cfg(tmp)), "--resume", "--no-progress"], "checkpoint_rank0.pt")


# train-generator


@case("train-generator: resolution=100000")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp, resolution=100000))], "resolution", guard_memory=True)


@case("train-generator: batch_size=10**7")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp, batch_size=10**7))], "batch_size", guard_memory=True)


@case("train-generator: into a folder holding a generator")
def _(fx, tmp):
    import shutil

    (tmp / "gen_run").mkdir()
    shutil.copy(fx.gen, tmp / "gen_run" / "generator.pt")
    return Bad(["train-generator", S(fx.gen_cfg(tmp))], "generator.pt", keep=[tmp / "gen_run"])


@case("train-generator: lr=nan")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp, lr=float("nan")))], "lr")


@case("train-generator: total_steps=-5")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp, total_steps=-5))], "total_steps")


@case("train-generator: rec missing")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp, rec=S(tmp / "norec")))], "norec")


@case("train-generator: output is the data folder")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.toy, tmp / "data")
    return Bad(
        ["train-generator", S(fx.gen_cfg(tmp, rec=S(tmp / "data"), output=S(tmp / "data")))],
        "data",
        keep=[tmp / "data"],
    )


@case("train-generator: --resume checkpoint is a list")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp)), "--resume", S(fx.list_ckpt)], "list.pt")


@case("train-generator: unknown preset")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp, preset="huge"))], "preset")


# align, pipeline, arcface-train, rec, make-bin, verify


@case("align: centres missing")
def _(fx, tmp):
    return Bad(["align", "--a", S(tmp / "a.npz"), "--b", S(fx.centres)], "a.npz")


@case("align: --k 0")
def _(fx, tmp):
    return Bad(["align", "--a", S(fx.centres), "--b", S(fx.centres), "--k", "0"], "--k")


@case("report-dataset: data missing")
def _(fx, tmp):
    return Bad(
        [
            "report-dataset",
            "--data",
            S(tmp / "nodata"),
            "--model",
            S(fx.model),
            "--network",
            "r10_tiny",
            "--out",
            S(tmp / "rep"),
        ],
        "nodata",
    )


@case("report-dataset: model with NaN weights")
def _(fx, tmp):
    return Bad(
        [
            "report-dataset",
            "--data",
            S(fx.syn),
            "--model",
            S(fx.nan_model),
            "--network",
            "r10_tiny",
            "--device",
            "cpu",
            "--out",
            S(tmp / "rep"),
        ],
        "nan_model.pt",
    )


@case("pipeline: recipe missing")
def _(fx, tmp):
    return Bad(["pipeline", S(tmp / "none.py"), "--out", S(tmp / "p")], "none.py")


@case("pipeline: recipe has an unknown key")
def _(fx, tmp):
    _config_file(tmp / "r.py", {"not_a_key": 1})
    return Bad(["pipeline", S(tmp / "r.py"), "--out", S(tmp / "p")], "not_a_key")


@case("arcface-train: root missing")
def _(fx, tmp):
    return Bad(["arcface-train", "--arcface-root", S(tmp / "noroot"), "configs/x"], "noroot")


@case("rec info: folder missing")
def _(fx, tmp):
    return Bad(["rec", "info", S(tmp / "norec")], "norec")


@case("rec from-folder: source missing")
def _(fx, tmp):
    return Bad(["rec", "from-folder", S(tmp / "nosrc"), S(tmp / "out"), "--no-progress"], "nosrc")


@case("make-bin: --rec without --num-pairs")
def _(fx, tmp):
    return Bad(["make-bin", "--rec", S(fx.toy), "--out", S(tmp / "x.bin")], "--num-pairs")


@case("make-bin: pairs file missing")
def _(fx, tmp):
    (tmp / "images").mkdir()  # (an --out inside --images would be refused first: the output rule)
    return Bad(
        ["make-bin", "--pairs", S(tmp / "pairs.txt"), "--images", S(tmp / "images"), "--out", S(tmp / "x.bin")],
        "pairs.txt",
    )


@case("verify: .bin is garbage")
def _(fx, tmp):
    (tmp / "g.bin").write_bytes(b"\x80\x02garbage")
    return Bad(
        [
            "verify",
            "--model",
            S(fx.model),
            "--network",
            "r10_tiny",
            "--bins",
            S(tmp / "g.bin"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        "g.bin",
    )


@case("verify: model missing")
def _(fx, tmp):
    return Bad(
        [
            "verify",
            "--model",
            S(tmp / "none.pt"),
            "--network",
            "r10_tiny",
            "--data",
            S(fx.toy),
            "--targets",
            "toy_lfw",
            "--no-progress",
        ],
        "none.pt",
    )


@case("verify: embeddings lack issame")
def _(fx, tmp):
    import numpy as np

    np.savez(tmp / "e.npz", embeddings=np.ones((4, 3), np.float32))
    return Bad(["verify", "--embeddings", S(tmp / "e.npz")], "issame")


# ----------------------------------------------------------------------------------------------
# Issue 28: the newer commands (ema, report-dataset, generate's mixing flags, pipeline recipes, manifests
# edited after generation, verify-ijb / make-bin list paths) and the older silent readers.


def _report(fx, tmp, *extra, data=None):
    return [
        "report-dataset",
        "--data",
        S(data or fx.syn),
        "--model",
        S(fx.model),
        "--network",
        "r10_tiny",
        "--device",
        "cpu",
        "--out",
        S(tmp / "rep"),
        *extra,
    ]


@case("report-dataset: --genuine-cap -5")
def _(fx, tmp):
    return Bad(_report(fx, tmp, "--genuine-cap=-5"), "--genuine-cap")


@case("report-dataset: --impostor-cap -1")
def _(fx, tmp):
    return Bad(_report(fx, tmp, "--impostor-cap=-1"), "--impostor-cap")


@case("report-dataset: --genuine-cap 0")
def _(fx, tmp):
    return Bad(_report(fx, tmp, "--genuine-cap", "0"), "--genuine-cap")


@case("report-dataset: --min-share 5")
def _(fx, tmp):
    return Bad(_report(fx, tmp, "--min-share", "5"), "--min-share")


@case("report-dataset: --min-share nan")
def _(fx, tmp):
    return Bad(_report(fx, tmp, "--min-share", "nan"), "--min-share")


@case("report-dataset: --out is the dataset folder")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.toy, tmp / "data")
    argv = _report(fx, tmp, data=tmp / "data")
    argv[argv.index("--out") + 1] = S(tmp / "data")
    return Bad(argv, "--data", keep=[tmp / "data"])


@case("report-dataset: --out holds other files")
def _(fx, tmp):
    (tmp / "rep").mkdir()
    (tmp / "rep" / "notes.txt").write_text("mine\n")
    return Bad(_report(fx, tmp), "--overwrite", keep=[tmp / "rep"])


@case("report-dataset: shard with a flipped bit")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.syn, tmp / "syn")
    rec = tmp / "syn" / "shard-00001" / "train.rec"
    data = bytearray(rec.read_bytes())
    data[len(data) // 2] ^= 0x01
    rec.write_bytes(bytes(data))
    return Bad(_report(fx, tmp, "--real", S(fx.toy), data=tmp / "syn"), "shard-00001")


def _posthoc_run(fx, tmp, mutate=None):
    """A train-generator output with config.posthoc_ema and one snapshot (``mutate(snapshot dict)`` spoils it)."""
    import torch

    from scoremix_plugin.generation.posthoc_ema import POSTHOC_FORMAT, snapshot_path

    run = tmp / "run"
    run.mkdir()
    ckpt = torch.load(fx.gen, weights_only=True)
    ckpt["config"] = {**ckpt["config"], "posthoc_ema": [0.05, 0.1]}
    torch.save(ckpt, run / "generator.pt")
    snap = {
        "format": POSTHOC_FORMAT,
        "step": 1,
        "sigma_rels": [0.05, 0.1],
        "emas": [dict(ckpt["net"]), dict(ckpt["net"])],
    }
    if mutate:
        mutate(snap)
    snapshot_path(run, 1).parent.mkdir()
    torch.save(snap, snapshot_path(run, 1))
    return run


def _ema(run, out, *extra):
    return ["ema", "--ckpt-dir", S(run), "--sigma-rel", "0.1", "--out", S(out), *extra]


@case("ema: --out is the run's own generator.pt")
def _(fx, tmp):
    run = _posthoc_run(fx, tmp)
    return Bad(_ema(run, run / "generator.pt"), "generator.pt", keep=[run])


@case("ema: --out is the run's own generator.pt, with --overwrite")
def _(fx, tmp):
    run = _posthoc_run(fx, tmp)
    return Bad(_ema(run, run / "generator.pt", "--overwrite"), "generator.pt", keep=[run])


@case("ema: --out is a snapshot")
def _(fx, tmp):
    run = _posthoc_run(fx, tmp)
    return Bad(_ema(run, run / "posthoc" / "posthoc-0000001.pt", "--overwrite"), "posthoc", keep=[run])


@case("ema: --out exists")
def _(fx, tmp):
    run = _posthoc_run(fx, tmp)
    (tmp / "g.pt").write_bytes(b"a generator made elsewhere")
    return Bad(_ema(run, tmp / "g.pt"), "--overwrite", keep=[tmp / "g.pt"])


@case("ema: --sigma-rel nan")
def _(fx, tmp):
    run = _posthoc_run(fx, tmp)
    return Bad(["ema", "--ckpt-dir", S(run), "--sigma-rel", "nan", "--out", S(tmp / "g.pt")], "--sigma-rel")


def _first_float(state):
    return next(k for k, v in state.items() if v.is_floating_point() and v.dim() >= 1)


@case("ema: snapshot holds NaN")
def _(fx, tmp):
    def spoil(snap):
        k = _first_float(snap["emas"][1])
        snap["emas"][1][k] = snap["emas"][1][k].clone().fill_(float("nan"))

    run = _posthoc_run(fx, tmp, spoil)
    return Bad(_ema(run, tmp / "g.pt"), "posthoc-0000001.pt")


@case("ema: snapshot tensor of the wrong shape")
def _(fx, tmp):
    def spoil(snap):
        k = _first_float(snap["emas"][0])
        snap["emas"][0][k] = snap["emas"][0][k].flatten()[:1].clone()  # would broadcast into the sum

    run = _posthoc_run(fx, tmp, spoil)
    return Bad(_ema(run, tmp / "g.pt"), "shape")


@case("ema: snapshot state is not tensors")
def _(fx, tmp):
    def spoil(snap):
        snap["emas"][0] = {k: 1.5 for k in snap["emas"][0]}

    run = _posthoc_run(fx, tmp, spoil)
    return Bad(_ema(run, tmp / "g.pt"), "posthoc-0000001.pt")


@case("ema: snapshot without its step")
def _(fx, tmp):
    run = _posthoc_run(fx, tmp, lambda snap: snap.pop("step"))
    return Bad(_ema(run, tmp / "g.pt"), "step")


def _gen_cond(fx, tmp, weights):
    return _generate(fx, tmp, f"--mix-weights={weights}", **{"--mix-space": "condition"})


@case("generate: condition --mix-weights negative")
def _(fx, tmp):
    return Bad(_gen_cond(fx, tmp, "-1,2"), "--mix-weights")


@case("generate: condition --mix-weights all zero")
def _(fx, tmp):
    return Bad(_gen_cond(fx, tmp, "0,0"), "--mix-weights")


@case("generate: condition --mix-weights 1e30")
def _(fx, tmp):
    return Bad(_gen_cond(fx, tmp, "1e30,1"), "--mix-weights")


@case("generate: --guidance-scale nan")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--guidance": "cfg", "--guidance-scale": "nan"}), "--guidance-scale")


@case("generate: --mix-window inf")
def _(fx, tmp):
    return Bad(_generate(fx, tmp, **{"--mix-window": "0,inf"}), "--mix-window")


@case("generate: resume, settings.json is garbage")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.syn, tmp / "syn")
    (tmp / "syn" / "settings.json").write_bytes(b"\x00{not json")
    return Bad(_generate(fx, tmp), "settings.json", keep=[tmp / "syn"])


@case("generate: resume, settings.json is a list")
def _(fx, tmp):
    import shutil

    shutil.copytree(fx.syn, tmp / "syn")
    (tmp / "syn" / "settings.json").write_text("[1, 2]\n")
    return Bad(_generate(fx, tmp), "settings.json", keep=[tmp / "syn"])


def _recipe(tmp, **blocks):
    return _config_file(tmp / "r.py", {"recogniser": "r.py", "generator": "g.py", **blocks})


@case("pipeline: recipe generation.guidance is an unknown word")
def _(fx, tmp):
    return Bad(
        ["pipeline", S(_recipe(tmp, generation={"guidance": "strong"})), "--out", S(tmp / "p")],
        "recipe.generation.guidance",
    )


@case("pipeline: recipe generation.images_per_identity=-3")
def _(fx, tmp):
    return Bad(
        ["pipeline", S(_recipe(tmp, generation={"images_per_identity": -3})), "--out", S(tmp / "p")],
        "recipe.generation.images_per_identity",
    )


@case("pipeline: recipe generation.guidance_scale=nan")
def _(fx, tmp):
    r = _recipe(tmp)
    r.write_text(r.read_text() + "config.generation = {'guidance_scale': float('nan')}\n")
    return Bad(["pipeline", S(r), "--out", S(tmp / "p")], "recipe.generation.guidance_scale")


@case("ema: snapshot at step 0")
def _(fx, tmp):
    import shutil

    run = _posthoc_run(fx, tmp)
    shutil.move(run / "posthoc" / "posthoc-0000001.pt", run / "posthoc" / "posthoc-0000000.pt")
    return Bad(_ema(run, tmp / "g.pt"), "posthoc-0000000.pt")


@case("pipeline: recipe dataset_report.min_share=5")
def _(fx, tmp):
    return Bad(
        ["pipeline", S(_recipe(tmp, dataset_report={"min_share": 5})), "--out", S(tmp / "p")],
        "recipe.dataset_report.min_share",
    )


@case("merge: manifest made for another real folder")
def _(fx, tmp):
    from scoremix_plugin.toydata import write_toy_dataset

    write_toy_dataset(
        tmp / "other", num_identities=6, images_per_identity=4, num_test_identities=4, num_pairs=10, seed=7
    )
    return Bad(
        ["merge", "--real", S(tmp / "other"), "--synthetic", S(fx.syn), "--out", S(tmp / "m"), "--no-progress"], "other"
    )


@case("merge: manifest's generator sha256 edited")
def _(fx, tmp):
    import json
    import shutil

    shutil.copytree(fx.syn, tmp / "syn")
    m = json.loads((tmp / "syn" / "manifest.json").read_text())
    m["generator"]["sha256"] = "0" * 64
    (tmp / "syn" / "manifest.json").write_text(json.dumps(m))
    return Bad(
        ["merge", "--real", S(fx.toy), "--synthetic", S(tmp / "syn"), "--out", S(tmp / "m"), "--no-progress"],
        "generator.sha256",
    )


@case("merge: manifest's real folder moved away, another dataset given")
def _(fx, tmp):
    import json
    import shutil

    from scoremix_plugin.toydata import write_toy_dataset

    shutil.copytree(fx.syn, tmp / "syn")
    m = json.loads((tmp / "syn" / "manifest.json").read_text())
    m["real"]["rec"] = str(tmp / "gone")  # the recorded folder no longer exists: only real.idx_sha256 can tell
    (tmp / "syn" / "manifest.json").write_text(json.dumps(m))
    write_toy_dataset(
        tmp / "other", num_identities=6, images_per_identity=4, num_test_identities=4, num_pairs=10, seed=7
    )
    return Bad(
        ["merge", "--real", S(tmp / "other"), "--synthetic", S(tmp / "syn"), "--out", S(tmp / "m"), "--no-progress"],
        "other",
    )


def _idx_copy(fx, tmp, edit):
    import shutil

    shutil.copytree(fx.toy, tmp / "data")
    idx = tmp / "data" / "train.idx"
    rows = [line.split("\t") for line in idx.read_text().splitlines()]
    idx.write_text("".join("\t".join(r) + "\n" for r in edit(rows)))
    return tmp / "data"


@case("rec to-folder: index key duplicated")
def _(fx, tmp):
    data = _idx_copy(fx, tmp, lambda rows: rows + [[rows[1][0], rows[2][1]]])
    return Bad(["rec", "to-folder", S(data), S(tmp / "out"), "--no-progress"], "more than once")


@case("rec to-folder: index key points at another record")
def _(fx, tmp):
    def edit(rows):
        rows[2][1] = rows[1][1]
        return rows

    data = _idx_copy(fx, tmp, edit)
    return Bad(["rec", "to-folder", S(data), S(tmp / "out"), "--no-progress"], "same record")


@case("rec info: index offset near 2**63")
def _(fx, tmp):
    def edit(rows):
        rows[1][1] = str(2**63 - 4)
        return rows

    data = _idx_copy(fx, tmp, edit)
    return Bad(["rec", "info", S(data)], "train.idx")


@case("make-bin: pairs line outside --images")
def _(fx, tmp):
    (tmp / "images").mkdir()
    (tmp / "secret").mkdir()
    (tmp / "secret" / "secret_0001.jpg").write_text("password=hunter2\n")
    (tmp / "pairs.txt").write_text("1\t1\n../secret\t1\t1\n")
    return Bad(
        ["make-bin", "--pairs", S(tmp / "pairs.txt"), "--images", S(tmp / "images"), "--out", S(tmp / "x.bin")],
        "outside",
    )


@case("train: config.rec missing, val_targets set")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, rec=S(tmp / "norec"))), "--no-progress"], "config.rec")


def _full_disk():
    """Patch torch.save to fail as on a full disk (torch's zip writer: RuntimeError 'unexpected pos')."""
    import torch

    real = torch.save

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    torch.save = full
    return lambda: setattr(torch, "save", real)


@case("train: disk full while saving")
def _(fx, tmp):
    return Bad(["train", S(fx.rec_cfg(tmp, val_targets=[])), "--no-progress"], "could not save", before=_full_disk)


@case("train-generator: disk full while saving")
def _(fx, tmp):
    return Bad(["train-generator", S(fx.gen_cfg(tmp))], "could not save", before=_full_disk)


# ----------------------------------------------------------------------------------------------
# The output rule for every writer: never over a file the command did not make (unless --overwrite),
# never over an input nor into a folder the command reads (not even with --overwrite).


def _existing(path: Path, text: str = "the user's file\n") -> Path:
    path.write_text(text)
    return path


@case("export: --out exists")
def _(fx, tmp):
    out = _existing(tmp / "m.onnx")
    return Bad(_export(fx, tmp, fx.model), S(out), keep=[out])


@case("export: --json exists")
def _(fx, tmp):
    j = _existing(tmp / "e.json")
    return Bad(_export(fx, tmp, fx.model, "r10_tiny", "--json", S(j)), S(j), keep=[j])


@case("export: --out is --model, with --overwrite")
def _(fx, tmp):
    import shutil

    model = Path(shutil.copy(fx.model, tmp / "model.pt"))
    return Bad(
        ["export", "--model", S(model), "--network", "r10_tiny", "--out", S(model), "--no-check", "--overwrite"],
        "--model",
        keep=[model],
    )


@case("embed: --out exists")
def _(fx, tmp):
    out = _existing(tmp / "h.npz")
    return Bad(["embed", "--checkpoint", S(fx.nan_head), "--out", S(out)], S(out), keep=[out])


@case("embed: --out is a --checkpoint, with --overwrite")
def _(fx, tmp):
    import shutil

    ck = Path(shutil.copy(fx.nan_head, tmp / "checkpoint_rank0.pt"))
    return Bad(
        ["embed", "--checkpoint", S(tmp / "checkpoint_rank*.pt"), "--out", S(ck), "--overwrite"],
        "--checkpoint",
        keep=[ck],
    )


@case("embed: --out inside --data")
def _(fx, tmp):
    import shutil

    data = Path(shutil.copytree(fx.toy, tmp / "data"))
    return Bad(
        [
            "embed",
            "--model",
            S(fx.model),
            "--network",
            "r10_tiny",
            "--data",
            S(data),
            "--out",
            S(data / "c.npz"),
            "--device",
            "cpu",
            "--no-progress",
            "--overwrite",
        ],
        "--data",
        keep=[data],
    )


@case("export-conditions: --out exists")
def _(fx, tmp):
    out = _existing(tmp / "c.npz")
    return Bad(["export-conditions", "--ckpt", S(fx.gen), "--out", S(out)], S(out), keep=[out])


@case("export-conditions: --out is --ckpt, with --overwrite")
def _(fx, tmp):
    import shutil

    ck = Path(shutil.copy(fx.gen, tmp / "gen.pt"))
    return Bad(["export-conditions", "--ckpt", S(ck), "--out", S(ck), "--overwrite"], "--ckpt", keep=[ck])


@case("sample: --out exists")
def _(fx, tmp):
    out = _existing(tmp / "grid.png")
    return Bad(_sample(fx, tmp, "--classes", "1,2"), S(out), keep=[out])


@case("sample: --out's settings .json exists")
def _(fx, tmp):
    j = _existing(tmp / "grid.json")
    return Bad(_sample(fx, tmp, "--classes", "1,2"), S(j), keep=[j])


@case("select: --out exists")
def _(fx, tmp):
    out = _existing(tmp / "pairs.csv")
    return Bad(_select(fx, tmp, "--num-identities", "2"), S(out), keep=[out])


@case("select: --out's settings .json exists")
def _(fx, tmp):
    j = _existing(tmp / "pairs.csv.json")
    return Bad(_select(fx, tmp, "--num-identities", "2"), S(j), keep=[j])


@case("align: --json exists")
def _(fx, tmp):
    j = _existing(tmp / "al.json")
    return Bad(["align", "--a", S(fx.centres), "--b", S(fx.centres), "--json", S(j)], S(j), keep=[j])


@case("align: --out holds an alignment")
def _(fx, tmp):
    (tmp / "al").mkdir()
    j = _existing(tmp / "al" / "alignment.json")
    return Bad(
        ["align", "--a", S(fx.centres), "--b", S(fx.centres), "--out", S(tmp / "al")], "alignment.json", keep=[j]
    )


@case("make-bin: --out exists")
def _(fx, tmp):
    out = _existing(tmp / "x.bin")
    return Bad(["make-bin", "--rec", S(fx.toy), "--num-pairs", "4", "--out", S(out)], S(out), keep=[out])


@case("make-bin: --out inside --rec, with --overwrite")
def _(fx, tmp):
    import shutil

    data = Path(shutil.copytree(fx.toy, tmp / "data"))
    return Bad(
        ["make-bin", "--rec", S(data), "--num-pairs", "4", "--out", S(data / "toy_lfw.bin"), "--overwrite"],
        "--rec",
        keep=[data],
    )


def _ijb(tmp, *extra):
    return ["verify-ijb", "--root", S(tmp / "IJBC"), "--target", "IJBC", "--features", S(tmp / "f.npy"), *extra]


@case("verify-ijb: --json exists")
def _(fx, tmp):
    j = _existing(tmp / "r.json")
    return Bad(_ijb(tmp, "--json", S(j)), S(j), keep=[j])


@case("verify-ijb: --json inside --root, with --overwrite")
def _(fx, tmp):
    (tmp / "IJBC" / "meta").mkdir(parents=True)
    return Bad(_ijb(tmp, "--json", S(tmp / "IJBC" / "meta" / "r.json"), "--overwrite"), "--root", keep=[tmp / "IJBC"])


@case("verify-ijb: --out holds a report")
def _(fx, tmp):
    (tmp / "rep").mkdir()
    md = _existing(tmp / "rep" / "ijb.md")
    return Bad(_ijb(tmp, "--json", S(tmp / "r.json"), "--out", S(tmp / "rep")), "ijb.md", keep=[md])


@case("verify-ijb 1:N: --out holds a report")
def _(fx, tmp):
    (tmp / "rep").mkdir()
    md = _existing(tmp / "rep" / "ijb_1n.md")
    return Bad(
        _ijb(tmp, "--task", "identification", "--json", S(tmp / "r.json"), "--out", S(tmp / "rep")),
        "ijb_1n.md",
        keep=[md],
    )


@case("rec to-folder: OUT holds files")
def _(fx, tmp):
    (tmp / "out").mkdir()
    _existing(tmp / "out" / "notes.txt")
    return Bad(["rec", "to-folder", S(fx.toy), S(tmp / "out"), "--no-progress"], "notes.txt", keep=[tmp / "out"])


@case("rec to-folder: OUT inside the RecordIO folder, with --overwrite")
def _(fx, tmp):
    import shutil

    data = Path(shutil.copytree(fx.toy, tmp / "data"))
    return Bad(["rec", "to-folder", S(data), S(data / "images"), "--no-progress", "--overwrite"], S(data), keep=[data])


# ----------------------------------------------------------------------------------------------
# Running and judging.


def _snapshot(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def _address_space_limit(extra: int):
    """Lower this process's soft RLIMIT_AS to its current size + ``extra`` bytes for the block, then restore it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (current + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _run_in_process(argv: list[str], guard_memory: bool = False) -> tuple[object, str]:
    from scoremix_plugin.cli import main

    err = io.StringIO()
    guard = _address_space_limit(4 << 30) if guard_memory and sys.platform == "linux" else contextlib.nullcontext()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings(), guard:
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse, or a raise SystemExit(message)
            rc = e.code
            if isinstance(rc, str):
                print(rc, file=sys.stderr)
                rc = 1
        except MemoryError:
            rc = "memory"
        except BaseException:  # noqa: BLE001 - an escaped exception is what this corpus counts
            traceback.print_exc()
            rc = "exception"
    return rc, err.getvalue()


def judge(name: str, bad: Bad, rc: object, err: str, changed: bool) -> Outcome:
    lines = [x for x in err.splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    if rc == "memory" or (isinstance(rc, int) and rc < 0) or "MemoryError" in err or "out of memory" in err.lower():
        return Outcome(name, "crash", rc, last)
    if rc == "exception" or "Traceback (most recent call last)" in err:
        return Outcome(name, "traceback", rc, last)
    if rc == 0 or rc is None or changed:
        return Outcome(name, "silent", rc, last if not changed else f"changed protected files; {last}")
    cmd = bad.argv[0]
    ok = (
        rc == 2 and re.match(rf"scoremix {re.escape(cmd)}( [\w-]+)?: error: ", last) is not None and bad.culprit in last
    )
    return Outcome(name, "clean" if ok else "unclear", rc, last)


def run_case(name: str, fx: Fixtures, tmp: Path) -> Outcome:
    tmp.mkdir(parents=True, exist_ok=True)
    bad = CASES[name](fx, tmp)
    before = _snapshot(bad.keep)
    release = bad.before() if bad.before else None
    try:
        rc, err = _run_in_process(bad.argv, guard_memory=bad.guard_memory)
    finally:
        if callable(release):
            release()
    return judge(name, bad, rc, err, _snapshot(bad.keep) != before)


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {v: sum(o.verdict == v for o in outcomes) for v in VERDICTS}
