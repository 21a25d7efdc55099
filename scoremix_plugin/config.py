"""arcface_torch-style configs: a Python file that defines ``config = edict(...)``, merged over defaults.

The recogniser trainer, the generator trainer, generation and the pipeline all read their settings
this way, so a team's host recipe (``configs/ms1mv3_r50.py``) runs unchanged. Merging is shallow,
as the host's ``base.config.update(job.config)`` is. Keys the reader does not know are kept and
reported in ONE warning that names them; only the ``scoremix`` block is validated strictly.
"""

from __future__ import annotations

import copy
import math
import os
import runpy
import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from easydict import EasyDict as edict

from scoremix_plugin.errors import ScoreMixError

# The host's configs/base.py defaults, with the host's meaning for each key.
HOST_BASE: dict[str, Any] = {
    "margin_list": (1.0, 0.5, 0.0),  # (m1, m2, m3): ArcFace (1, 0.5, 0); CosFace (1, 0, 0.4)
    "network": "r50",
    "resume": False,
    "save_all_states": False,
    "output": "work_dirs/run",
    "embedding_size": 512,
    "sample_rate": 1.0,  # PartialFC sampling; 1 = every class each step
    "interclass_filtering_threshold": 0,
    "fp16": False,
    "batch_size": 128,  # per process
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "verbose": 2000,  # verification every N global steps
    "frequent": 10,  # log every N steps
    "dali": False,
    "dali_aug": False,
    "gradient_acc": 1,
    "seed": 2048,
    "num_workers": 2,
    "wandb_key": "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "suffix_run_name": None,
    "using_wandb": False,
    "wandb_entity": "entity",
    "wandb_project": "project",
    "wandb_log_all": True,
    "save_artifacts": False,
    "wandb_resume": False,
}

# Keys every host job config sets (no default in the host's base).
HOST_JOB_KEYS = ("rec", "num_classes", "num_image", "num_epoch", "warmup_epoch", "val_targets")

# Keys scoremix adds to a recogniser config (all optional; the host keeps and ignores them).
SCOREMIX_RECOGNISER_KEYS: dict[str, Any] = {
    "dataset": "rec",  # "scoremix" trains on real + synthetic through the manifest of config.scoremix
    "scoremix": None,  # the block below; required when dataset == "scoremix"
    "grad_clip": 5.0,  # max grad-norm for the backbone (the host clips at 5 as well)
    "image_degrade": None,  # e.g. 32: real images go down to NxN and back up before training (demo)
    "max_steps": None,  # stop after this many global steps (quick runs); None = full schedule
    "eval_batch_size": 64,
    "device": None,  # None: cuda:local_rank when available, else cpu
    "log_json": "train_log.jsonl",
}

SCOREMIX_BLOCK_DEFAULTS: dict[str, Any] = {
    "manifest": None,  # path to the generation manifest.json (required)
    "ratio": None,  # None: every image once per epoch; 0 < r < 1: synthetic share per epoch
    "aug_real": None,  # albumentations pipeline: a registered name or a serialised dict; None = flip only
    "aug_synthetic": None,
}


class ConfigError(ScoreMixError, ValueError):
    """A config file or key is wrong; the message names the file and the key."""


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Run a config file (trusted user code, like the host's) and return its ``config`` mapping.

    Accepts a file path, or the host's ``configs/NAME`` form (``.py`` optional).
    """
    p = Path(path)
    if p.suffix != ".py" and not p.exists():
        p = p.with_name(p.name + ".py")
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        ns = runpy.run_path(str(p), run_name=f"scoremix_config_{p.stem}")
    except Exception as e:  # noqa: BLE001 - the user's config code failed: name the file and the error
        raise ConfigError(f"{p}: running the config file failed: {type(e).__name__}: {e}") from e
    cfg = ns.get("config")
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{p}: defines no `config` mapping (expected `config = edict(...)`)")
    return dict(cfg)


def merge_config(
    job: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    source: str = "config",
    required: Iterable[str] = (),
    known_extra: Iterable[str] = (),
    warn_unknown: bool = True,
) -> edict:
    """Shallow merge ``job`` over ``defaults`` (like the host); check required keys; warn on unknown ones."""
    merged = copy.deepcopy(dict(defaults))
    merged.update(job)
    missing = [k for k in required if merged.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {missing}")
    known = set(defaults) | set(required) | set(known_extra)
    unknown = sorted(k for k in job if k not in known)
    if unknown and warn_unknown:
        warnings.warn(f"{source}: unknown config key(s) kept but not used: {unknown}", stacklevel=2)
    return edict(merged)


def validate_scoremix_block(cfg: Mapping[str, Any], source: str = "config") -> edict | None:
    """Strictly validate ``config.scoremix`` when ``config.dataset == 'scoremix'``; return the filled block."""
    dataset = cfg.get("dataset", "rec")
    block = cfg.get("scoremix")
    if dataset != "scoremix":
        return None if block is None else edict({**SCOREMIX_BLOCK_DEFAULTS, **block})
    if not isinstance(block, Mapping):
        raise ConfigError(f"{source}: config.dataset is 'scoremix' but config.scoremix is missing or not a mapping")
    unknown = sorted(set(block) - set(SCOREMIX_BLOCK_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) in config.scoremix: {unknown}; allowed: {sorted(SCOREMIX_BLOCK_DEFAULTS)}"
        )
    out = edict({**SCOREMIX_BLOCK_DEFAULTS, **block})
    if not out.manifest:
        raise ConfigError(f"{source}: config.scoremix.manifest is required")
    r = out.ratio
    if r is not None and not (isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < 1):
        raise ConfigError(f"{source}: config.scoremix.ratio must be None or a number in (0, 1), got {r!r}")
    for key in ("aug_real", "aug_synthetic"):
        v = out[key]
        if v is not None and not isinstance(v, (str, Mapping)):
            raise ConfigError(
                f"{source}: config.scoremix.{key} must be None, a registered name or a serialised dict, "
                f"got {type(v).__name__}"
            )
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_recogniser_config(cfg: MutableMapping[str, Any], source: str = "config") -> None:
    """Check a merged recogniser config's values before any work, naming the key; normalise ``val_targets``.

    A host recipe passes unchanged (these are the host's own types); what fails here would otherwise
    fail late (``lr=nan`` after a few steps), or not at all (``max_steps=-5`` wrote an untrained model).
    """

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: config.{key} must be {what}, got {cfg.get(key)!r}")

    for key in (
        "num_classes",
        "num_image",
        "num_epoch",
        "batch_size",
        "gradient_acc",
        "embedding_size",
        "verbose",
        "frequent",
        "eval_batch_size",
    ):
        need(key, _is_int(cfg.get(key)) and cfg[key] >= 1, "an integer >= 1")
    for key in ("warmup_epoch", "num_workers"):
        need(key, _is_int(cfg.get(key)) and cfg[key] >= 0, "an integer >= 0")
    need("seed", _is_int(cfg.get("seed")), "an integer")
    need("lr", _is_number(cfg.get("lr")) and cfg["lr"] > 0, "a finite number > 0")
    for key in ("momentum", "weight_decay"):
        need(key, _is_number(cfg.get(key)) and cfg[key] >= 0, "a finite number >= 0")
    need("sample_rate", _is_number(cfg.get("sample_rate")) and 0 < cfg["sample_rate"] <= 1, "a number in (0, 1]")
    need(
        "max_steps",
        cfg.get("max_steps") is None or (_is_int(cfg["max_steps"]) and cfg["max_steps"] >= 1),
        "None or an integer >= 1",
    )
    need(
        "grad_clip",
        cfg.get("grad_clip") is None or (_is_number(cfg["grad_clip"]) and cfg["grad_clip"] > 0),
        "None or a finite number > 0",
    )
    need(
        "image_degrade",
        cfg.get("image_degrade") is None or (_is_int(cfg["image_degrade"]) and cfg["image_degrade"] >= 1),
        "None or an integer >= 1",
    )
    need("rec", isinstance(cfg.get("rec"), (str, os.PathLike)), "a folder path")
    need("output", isinstance(cfg.get("output"), (str, os.PathLike)), "a folder path")
    targets = cfg.get("val_targets")
    if isinstance(targets, str):
        # One target written without brackets: iterating the string would ask for 'l', 'f', 'w'.
        cfg["val_targets"] = targets = [targets] if targets else []
    need(
        "val_targets",
        targets is None or (isinstance(targets, (list, tuple)) and all(isinstance(t, str) and t for t in targets)),
        "a list of target names (e.g. ['lfw', 'cfp_fp'])",
    )


def recogniser_config(job: Mapping[str, Any], source: str = "config") -> edict:
    """A recogniser job (host recipe keys + ours) merged over the host's base defaults, and checked."""
    cfg = merge_config(
        job,
        {**HOST_BASE, **SCOREMIX_RECOGNISER_KEYS},
        source=source,
        required=HOST_JOB_KEYS,
    )
    cfg.scoremix = validate_scoremix_block(cfg, source=source)
    check_recogniser_config(cfg, source=source)
    return cfg


def load_recogniser_config(path: str | os.PathLike) -> edict:
    """A host recipe or a scoremix recogniser config file, merged over the host's base defaults."""
    return recogniser_config(read_config_file(path), source=str(path))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_config_file(path: str | os.PathLike, cfg: Mapping[str, Any], comment: str) -> Path:
    """Write an arcface_torch-style config file (``config = edict(...)``) that reproduces ``cfg`` (atomic).

    The record of a run's settings, and what a user reruns by hand (e.g. under torchrun).
    """
    from scoremix_plugin.io_utils import write_text_atomic

    lines = [f"# {line}" for line in comment.splitlines()] + [
        "from easydict import EasyDict as edict",
        "",
        "config = edict()",
    ]
    for key, value in cfg.items():
        value = _plain(value)
        lines.append(f"config.{key} = edict({value!r})" if isinstance(value, dict) else f"config.{key} = {value!r}")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)
