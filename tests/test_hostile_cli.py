"""The command line under hostile input: every bad invocation of the corpus is a clean one-line error.

The corpus (tests/hostile_corpus.py, also run by benchmarks/bad_inputs.py) covers every command: bad
flags, bad configs, missing / corrupt / hostile files, outputs that hold data or overlap an input, a
folder locked by another process. Beside it: the error boundary itself (--debug, bugs), the generate
lock released by SIGKILL, resume repairing damaged shards, and the overwrite / resume escapes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import hostile_corpus as hc
import pytest

from scoremix_plugin.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def fx(tmp_path_factory, one_thread):
    return hc.build_fixtures(tmp_path_factory.mktemp("hostile") / "fixtures")


@pytest.mark.parametrize("name", list(hc.CASES))
def test_bad_invocation_is_a_clean_error(name, fx, tmp_path):
    o = hc.run_case(name, fx, tmp_path / "case")
    assert o.verdict == "clean", f"{o.verdict} (exit {o.rc}): {o.message}"


# The boundary itself.


def test_debug_shows_the_traceback_of_a_user_error(fx, tmp_path, capsys):
    argv = ["sample", "--ckpt", str(fx.list_ckpt), "--classes", "1", "--out", str(tmp_path / "g.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("scoremix sample: error: ")
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "CheckpointError" in err
    assert err.strip().splitlines()[-1].startswith("scoremix sample: error: ")


def test_an_unexpected_exception_is_reported_as_a_bug(monkeypatch, capsys):
    import scoremix_plugin.synthesis.cli as syn_cli

    def broken(args):
        raise TypeError("internal slip")

    monkeypatch.setattr(syn_cli, "run_align", broken)
    assert main(["align", "--a", "x.npz", "--b", "y.npz"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TypeError: internal slip" in err
    assert "bug in scoremix" in err


def _error_classes() -> dict[str, type]:
    """Every public class named ``*Error`` defined anywhere in the package, found by reading the source."""
    import ast
    import importlib

    pkg = Path(__file__).resolve().parents[1] / "scoremix_plugin"
    found = {}
    for f in sorted(pkg.rglob("*.py")):
        names = [
            n.name
            for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, ast.ClassDef) and n.name.endswith("Error") and not n.name.startswith("_")
        ]
        if names:
            parts = f.relative_to(pkg.parent).with_suffix("").parts
            module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            found.update({f"{module.__name__}.{n}": getattr(module, n) for n in names})
    return found


def test_every_project_error_type_is_a_scoremix_error():
    from scoremix_plugin.errors import ScoreMixError

    found = _error_classes()
    assert len(found) >= 14, sorted(found)  # the enumeration itself works (no silent empty pass)
    strays = sorted(name for name, t in found.items() if not issubclass(t, ScoreMixError))
    assert not strays, f"error types the CLI would print as a traceback: {strays}"


# Configs.


def test_val_targets_string_is_one_target(fx, tmp_path):
    from scoremix_plugin.config import ConfigError, load_recogniser_config

    cfg = load_recogniser_config(fx.rec_cfg(tmp_path, val_targets="toy_lfw"))
    assert cfg.val_targets == ["toy_lfw"]
    with pytest.raises(ConfigError, match="config.val_targets"):
        load_recogniser_config(fx.rec_cfg(tmp_path, val_targets=["toy_lfw", 3]))


# Outputs: the escapes still work.


def test_train_overwrite_and_toy_data_overwrite(fx, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text('{"old": 1}\n')
    cfg = fx.rec_cfg(tmp_path, val_targets=[])
    assert main(["train", str(cfg), "--no-progress"]) == 2
    assert main(["train", str(cfg), "--no-progress", "--overwrite"]) == 0
    assert (run / "model.pt").is_file() and '"old"' not in (run / "train_log.jsonl").read_text()
    # a second run: --resume continues it (the log is appended to, not truncated)
    lines = (run / "train_log.jsonl").read_text().count("\n")
    assert main(["train", str(cfg), "--no-progress", "--resume", "--max-steps", "2"]) == 0
    assert (run / "train_log.jsonl").read_text().count("\n") > lines
    data = tmp_path / "toy"
    args = [
        "toy-data",
        "--out",
        str(data),
        "--identities",
        "2",
        "--images-per-identity",
        "1",
        "--test-identities",
        "2",
        "--pairs",
        "2",
    ]
    assert main(args) == 0
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


# generate: the lock and the verified resume.


def _generate_argv(fx, out):
    return [
        "generate",
        "--ckpt",
        str(fx.gen),
        "--pairs",
        str(fx.pairs),
        "--real",
        str(fx.toy),
        "--images-per-identity",
        "1",
        "--shard-size",
        "1",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--guidance",
        "none",
        "--guidance-scale",
        "1",
        "--no-bf16",
        "--no-grids",
        "--out",
        str(out),
    ]


def test_generate_lock_names_the_holder_and_dies_with_it(fx, tmp_path, capsys):
    out = tmp_path / "syn"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\n"
            "from scoremix_plugin.synthesis.generate import _lock_output\n"
            f"f = _lock_output(Path({str(out)!r}))\nprint('held', flush=True)\ntime.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_generate_argv(fx, out)) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(out) in err and f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases a flock when its holder dies, however it dies
        holder.wait()
    assert main(_generate_argv(fx, out)) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert (out / ".lock").read_text() == ""


def test_resume_redoes_damaged_shards_byte_identical(fx, tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(_generate_argv(fx, out)) == 0
    want = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rec = out / "shard-00001" / "train.rec"
    data = bytearray(rec.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size: only the sha256 can tell
    rec.write_bytes(bytes(data))
    idx = out / "shard-00000" / "train.idx"
    idx.write_bytes(idx.read_bytes()[:-3])  # an interrupted copy
    capsys.readouterr()
    assert main(_generate_argv(fx, out)) == 0
    said = capsys.readouterr().out
    assert "shard-00000" in said and "truncated" in said and "shard-00001" in said and "damaged" in said
    got = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == want
    done = json.loads((out / "shard-00000" / "done.json").read_text())
    assert done["rec_size"] == (out / "shard-00000" / "train.rec").stat().st_size
    # a sound folder resumes without redoing anything
    assert main(_generate_argv(fx, out)) == 0
    assert "redoing" not in capsys.readouterr().out
