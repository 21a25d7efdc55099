"""scoremix generate: shards + manifest from a micro generator, resume after a crash, 2-process torchrun."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scoremix_plugin.synthesis.manifest import ManifestError, verify_manifest

REPO = Path(__file__).resolve().parents[1]
NUM_IDS, PER_ID, SHARD = 5, 3, 2  # 3 shards: [0, 2), [2, 4), [4, 5)


@pytest.fixture(scope="session")
def syn_inputs(toy_data, tmp_path_factory):
    """A randomly initialised micro generator (built by the generation code) and a far pairs file."""
    import torch

    from scoremix_plugin.centres import save_centres
    from scoremix_plugin.generation.checkpoint import CHECKPOINT_FORMAT, plain
    from scoremix_plugin.generation.edm import EDMPrecond
    from scoremix_plugin.generation.network import build_network, network_kwargs
    from scoremix_plugin.io_utils import save_torch_atomic
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.synthesis.select import run_selection

    d = tmp_path_factory.mktemp("syn_inputs")
    c_real = FaceRecFolder(toy_data).num_classes
    torch.manual_seed(0)
    kw = network_kwargs("test-micro", c_real, 16)
    den = EDMPrecond(build_network(kw), num_classes=c_real, resolution=16, sigma_data=0.5)
    with torch.no_grad():  # diffusers zero-initialises nothing we rely on; make the output visibly class-dependent
        den.net.class_table.weight.normal_(0, 1)
    sd = den.net.state_dict()
    save_torch_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "step": 0,
            "net": sd,
            "ema": sd,
            "optimizer": {},
            "config": plain({"rec": str(toy_data), "seed": 0}),
            "num_classes": c_real,
            "resolution": 16,
            "preset": "test-micro",
            "network_kwargs": plain(kw),
            "sigma_data": 0.5,
        },
        d / "gen.pt",
    )
    rng = np.random.default_rng(0)
    save_centres(d / "centres.npz", np.arange(c_real), rng.normal(size=(c_real, 16)), space="embedding")
    run_selection(d / "centres.npz", d / "pairs.csv", strategy="far", num_identities=NUM_IDS, progress=False)
    return {"ckpt": d / "gen.pt", "pairs": d / "pairs.csv", "real": toy_data, "c_real": c_real, "dir": d}


def _args(inp, out, *extra):
    return [
        "generate",
        "--ckpt",
        str(inp["ckpt"]),
        "--pairs",
        str(inp["pairs"]),
        "--real",
        str(inp["real"]),
        "--images-per-identity",
        str(PER_ID),
        "--shard-size",
        str(SHARD),
        "--solver",  # the numbers below were set with this solver, not whatever the default is
        "heun",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--guidance",
        "none",
        "--guidance-scale",
        "1",
        "--no-bf16",
        "--seed",
        "3",
        "--out",
        str(out),
        *extra,
    ]


def _run(args, env_extra=None, torchrun=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    pre = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
        if torchrun
        else [sys.executable]
    )
    return subprocess.run(
        pre + ["-m", "scoremix_plugin", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )


# The child process counts the images it writes and kills itself (SIGKILL: no clean-up, no atexit, like a
# lost machine) after the chosen one; the production code has no hook for this.
_KILL_AFTER = """
import os, signal, sys
from scoremix_plugin import cli
from scoremix_plugin.recordio.writer import FaceRecWriter
limit, written, write = int(sys.argv[1]), [0], FaceRecWriter.write
def counted(self, *a, **k):
    write(self, *a, **k)
    written[0] += 1
    if written[0] >= limit:
        os.kill(os.getpid(), signal.SIGKILL)
FaceRecWriter.write = counted
sys.exit(cli.main(sys.argv[2:]))
"""


def _run_killed_after(args, images: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", _KILL_AFTER, str(images), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _one_thread():
    """Micro networks run far faster on one thread; on shared cores, OpenMP spinning made them ~40x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _generate_here(inp, out, **change):
    """The same run as _args() describes, in this process (no interpreter start-up)."""
    from scoremix_plugin.synthesis.generate import GenerateSettings, generate

    kw = dict(
        ckpt=str(inp["ckpt"]),
        pairs=str(inp["pairs"]),
        real=str(inp["real"]),
        images_per_identity=PER_ID,
        shard_size=SHARD,
        solver="heun",
        steps=2,
        batch_size=4,
        guidance="none",
        guidance_scale=1.0,
        bf16=False,
        seed=3,
    )
    kw.update(change)
    with _one_thread():
        return generate(GenerateSettings(**kw), out, device="cpu", progress=False)


@pytest.fixture(scope="session")
def reference_run(syn_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_ref") / "out"
    _generate_here(syn_inputs, out)
    return out


def test_shards_read_back(syn_inputs, reference_run):
    from scoremix_plugin.recordio import FaceRecFolder
    from scoremix_plugin.recordio.dataset import FaceRecDataset

    c_real = syn_inputs["c_real"]
    m = verify_manifest(reference_run / "manifest.json")  # checksums, contiguous labels, totals
    raw = json.loads((reference_run / "manifest.json").read_text())
    assert raw["format"] == "scoremix-shards/1" and m.complete
    assert m.to_json() == raw  # read + write gives the file back: one schema
    assert m.num_classes == c_real + NUM_IDS and m.num_synthetic_images == NUM_IDS * PER_ID
    assert m.real_num_classes == c_real and m.real_num_image == len(FaceRecFolder(syn_inputs["real"]))
    assert m.real_rec == Path(syn_inputs["real"]).absolute() and m.num_image == m.real_num_image + NUM_IDS * PER_ID
    assert m.selection["strategy"] == "far" and m.selection["space"] == "embedding"
    assert [s.labels for s in m.shards] == [(c_real, c_real + 2), (c_real + 2, c_real + 4), (c_real + 4, c_real + 5)]
    labels = []
    for s in m.shards:
        assert s.path == reference_run.absolute() / f"shard-{s.index:05d}"
        f = FaceRecFolder(s.path)
        assert f.layout == "insightface" and f.num_classes == c_real + NUM_IDS
        assert f.image(0).shape == (112, 112, 3)
        labels += f.labels.tolist()
        ds = FaceRecDataset(s.path, flip=False)
        x, y = ds[0]
        assert tuple(x.shape) == (3, 112, 112) and int(y) == s.labels[0]
    assert labels == [c_real + n for n in range(NUM_IDS) for _ in range(PER_ID)]
    assert (reference_run / "grids" / "shard-00000.png").stat().st_size > 1000
    # the manifest notices a damaged shard
    bad = reference_run.parent / "damaged"
    import shutil

    shutil.copytree(reference_run, bad)
    with open(bad / "shard-00001" / "train.rec", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01")
    with pytest.raises(ManifestError, match="checksum mismatch.*shard-00001"):
        verify_manifest(bad)
    shutil.rmtree(bad / "shard-00002")
    with pytest.raises(ManifestError, match="missing"):
        verify_manifest(bad, check_sha=False)


def test_crash_resume_byte_identical(syn_inputs, reference_run, tmp_path):
    out = tmp_path / "out"
    # Crash in the middle of the second shard (after 2 + 1 identities' worth of images... 4 images written).
    r = _run_killed_after(_args(syn_inputs, out), SHARD * PER_ID + 2)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in m["shards"]] == ["shard-00000"] and not m["complete"]
    assert list(out.glob(".shard-00001.tmp-*"))  # the partial shard under its temporary name
    with pytest.raises(ManifestError, match="interrupted"):
        verify_manifest(out)
    # Changed settings are refused; the same settings resume (in this process: the crash needed a real exit).
    with pytest.raises(ValueError, match="seed: 3 -> 4"):
        _generate_here(syn_inputs, out, seed=4)
    m = _generate_here(syn_inputs, out)
    assert m.complete
    assert _files(out) == _files(reference_run)


def test_folder_of_an_older_settings_format_is_refused_in_one_line(syn_inputs, reference_run, tmp_path):
    import shutil

    from scoremix_plugin.synthesis.generate import SETTINGS_FORMAT

    out = tmp_path / "old"
    shutil.copytree(reference_run, out)
    old = json.loads((out / "settings.json").read_text())
    old["format"] = "scoremix-shards/1"  # what version 1 wrote, with the keys of unset options left out
    for key in ("mix_space", "mix_weights", "guidance_interval"):
        old.pop(key)
    (out / "settings.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=f"older scoremix .*'scoremix-shards/1'.*{SETTINGS_FORMAT}.*new --out") as e:
        _generate_here(syn_inputs, out)
    assert "\n" not in str(e.value)


def test_two_process_torchrun_same_bytes(syn_inputs, reference_run, tmp_path):
    out = tmp_path / "out"
    r = _run(_args(syn_inputs, out), torchrun=2)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    log = r.stdout + r.stderr
    made = sorted(
        line.split("made ")[1].split()[0] + "@" + line.split("rank ")[1].split()[0]
        for line in log.splitlines()
        if " made shard-" in line
    )
    # round-robin, each shard made exactly once
    assert made == ["shard-00000@0", "shard-00001@1", "shard-00002@0"], log[-2000:]
    assert _files(out) == _files(reference_run)


def test_mix_window_reaches_the_sampler(syn_inputs, reference_run, tmp_path):
    """Outside the window the pair's first class is sampled alone: a window over every sigma is the plain run,
    one over none is not (the window once reached the sampler without its outside rule, and did nothing)."""
    rec = "shard-00000/train.rec"
    _generate_here(syn_inputs, tmp_path / "all", mix_window=(0.0, 100.0))
    assert (tmp_path / "all" / rec).read_bytes() == (reference_run / rec).read_bytes()
    m = _generate_here(syn_inputs, tmp_path / "none", mix_window=(1e3, 1e4))
    assert m.sampler["mix_window"] == [1e3, 1e4]
    assert (tmp_path / "none" / rec).read_bytes() != (reference_run / rec).read_bytes()
    with pytest.raises(ValueError, match="--mix-window"):
        _generate_here(syn_inputs, tmp_path / "bad", mix_window=(2.0, 1.0))


def test_guidance_window_and_bad_inputs(syn_inputs, reference_run, tmp_path):
    # CFG with a mixing window reaches the sampler: same plan, other bytes, complete manifest.
    m = _generate_here(syn_inputs, tmp_path / "cfg", guidance="cfg", guidance_scale=2.0, mix_window=(0.5, 10.0))
    assert m.complete and m.sampler["mix_window"] == [0.5, 10.0] and m.sampler["guidance"] == "cfg"
    a = (tmp_path / "cfg" / "shard-00000" / "train.rec").read_bytes()
    assert a != (reference_run / "shard-00000" / "train.rec").read_bytes()
    # triplets (K = 3) go through the same path; weights from the file
    from scoremix_plugin.synthesis.select import run_selection

    run_selection(
        syn_inputs["dir"] / "centres.npz",
        tmp_path / "tri.csv",
        strategy="near",
        num_identities=2,
        k=3,
        weights=[0.5, 0.25, 0.25],
        progress=False,
    )
    m = _generate_here(syn_inputs, tmp_path / "tri", pairs=str(tmp_path / "tri.csv"))
    assert m.complete and m.selection["k"] == 3 and m.num_synthetic_images == 2 * PER_ID
    with pytest.raises(ValueError, match="needs --guide"):
        _generate_here(syn_inputs, tmp_path / "ag", guidance="autoguidance", guidance_scale=2.0)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"new_label,class_a,class_b,weight_a,weight_b,distance\n0,1,{syn_inputs['c_real']},0.5,0.5,1.0\n")
    with pytest.raises(ValueError, match="outside the generator"):
        _generate_here(syn_inputs, tmp_path / "bad", pairs=str(bad))
    # a manifest whose label ranges overlap is refused
    man = json.loads((reference_run / "manifest.json").read_text())
    man["shards"][1]["labels"][0] -= 1
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match="overlap"):
        verify_manifest(tmp_path / "m", check_sha=False)


def test_condition_mixing_reaches_the_sampler(syn_inputs, reference_run, tmp_path):
    # AugGen's condition mixing with its non-convex weights: same plan, other bytes, recorded in manifest and settings.
    m = _generate_here(syn_inputs, tmp_path / "cond", mix_space="condition", mix_weights=(0.7, 0.7))
    assert m.complete and m.sampler["mix_space"] == "condition" and m.sampler["mix_weights"] == [0.7, 0.7]
    settings = json.loads((tmp_path / "cond" / "settings.json").read_text())
    assert settings["mix_space"] == "condition" and settings["mix_weights"] == [0.7, 0.7]
    assert json.loads((reference_run / "settings.json").read_text())["mix_space"] == "score"  # every key, always
    a = (tmp_path / "cond" / "shard-00000" / "train.rec").read_bytes()
    assert a != (reference_run / "shard-00000" / "train.rec").read_bytes()
    with pytest.raises(ValueError, match="convex"):
        _generate_here(syn_inputs, tmp_path / "bad", mix_weights=(0.7, 0.7))
    with pytest.raises(ValueError, match="2 finite numbers"):
        _generate_here(syn_inputs, tmp_path / "bad3", mix_space="condition", mix_weights=(0.5, 0.3, 0.2))
