"""The generation manifest (``DIR/manifest.json``, contracts.md "Shards and the generation manifest").

``scoremix generate`` rewrites it atomically after each completed shard; a shard is complete exactly when
it is listed. Besides the contract's keys it carries ``planned_shards`` (how many shards the plan has) and
``complete`` (all of them listed), so a reader can tell a finished run from an interrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scoremix_plugin.errors import ScoreMixError
from scoremix_plugin.io_utils import sha256_file

FORMAT = "scoremix-shards/1"
REQUIRED = ("format", "real", "num_classes", "num_synthetic_classes", "num_synthetic_images", "generator",
            "selection", "sampler", "shards")
SHARD_KEYS = ("path", "labels", "images", "rec_sha256", "idx_sha256")


class ManifestError(ScoreMixError, ValueError):
    """A manifest or one of its shards is missing, malformed or does not match its checksums."""


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a manifest (a file, or the folder holding ``manifest.json``) and check its keys and types.

    Adds ``_root`` (the manifest's folder, a Path) so shard paths can be resolved with :func:`shard_dir`.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{p}: not valid JSON: {e}") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"{p}: format is {m.get('format') if isinstance(m, dict) else None!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ManifestError(f"{p}: missing key(s) {missing}")
    for k in ("num_classes", "num_synthetic_classes", "num_synthetic_images"):
        if not isinstance(m[k], int) or m[k] < 0:
            raise ManifestError(f"{p}: {k} must be a non-negative integer, got {m[k]!r}")
    real = m["real"]
    if not isinstance(real, dict) or not isinstance(real.get("num_classes"), int) or not isinstance(real.get("num_image"), int):
        raise ManifestError(f"{p}: real must be {{num_classes: int, num_image: int, rec: path or null}}, got {real!r}")
    if m["num_classes"] != real["num_classes"] + m["num_synthetic_classes"]:
        raise ManifestError(f"{p}: num_classes {m['num_classes']} != real.num_classes {real['num_classes']} + "
                            f"num_synthetic_classes {m['num_synthetic_classes']}")
    if not isinstance(m["shards"], list):
        raise ManifestError(f"{p}: shards must be a list")
    for i, s in enumerate(m["shards"]):
        miss = [k for k in SHARD_KEYS if not isinstance(s, dict) or k not in s]
        if miss:
            raise ManifestError(f"{p}: shards[{i}] lacks {miss}")
        lab = s["labels"]
        if not (isinstance(lab, list) and len(lab) == 2 and all(isinstance(v, int) for v in lab) and lab[0] < lab[1]):
            raise ManifestError(f"{p}: shards[{i}] ({s['path']}) labels {lab!r} must be [first, last_plus_one]")
    m["_root"] = p.parent
    m["_path"] = p
    return m


def shard_dir(manifest: dict[str, Any], shard: dict[str, Any]) -> Path:
    return Path(manifest["_root"]) / shard["path"]


def verify_manifest(path: str | os.PathLike, check_sha: bool = True, allow_partial: bool = False) -> dict[str, Any]:
    """Load a manifest and check it describes a usable set of shards; return it (see :func:`load_manifest`).

    Checks: every shard folder has ``train.rec`` / ``train.idx`` (and, with ``check_sha``, their sha256 match);
    label ranges do not overlap and, sorted, run contiguously from ``real.num_classes`` to ``num_classes``;
    image counts add up to ``num_synthetic_images``. ``allow_partial`` accepts an interrupted run (a gap is
    then allowed, the totals are not checked).
    """
    m = load_manifest(path)
    p = m["_path"]
    shards = sorted(m["shards"], key=lambda s: s["labels"][0])
    expect = m["real"]["num_classes"]
    images = 0
    for s in shards:
        first, end = s["labels"]
        if first < expect:
            raise ManifestError(f"{p}: shard {s['path']} labels [{first}, {end}) overlap the previous range "
                                f"(which ends at {expect}) or the real classes [0, {m['real']['num_classes']})")
        if first > expect and not allow_partial:
            raise ManifestError(f"{p}: labels not contiguous: [{expect}, {first}) is in no shard before "
                                f"{s['path']} (an interrupted run? rerun the same generate command)")
        expect = end
        images += int(s["images"])
    for s in shards:  # files only once the label ranges are known to be right
        d = shard_dir(m, s)
        for name, key in (("train.rec", "rec_sha256"), ("train.idx", "idx_sha256")):
            f = d / name
            if not f.is_file():
                raise ManifestError(f"{p}: shard {s['path']} is missing {f}")
            if check_sha and sha256_file(f) != s[key]:
                raise ManifestError(f"{p}: checksum mismatch for {f} ({key} in the manifest differs)")
    if not allow_partial:
        if expect != m["num_classes"]:
            raise ManifestError(f"{p}: shards end at label {expect}, num_classes is {m['num_classes']} "
                                "(an interrupted run? rerun the same generate command)")
        if images != m["num_synthetic_images"]:
            raise ManifestError(f"{p}: shards hold {images} images, num_synthetic_images is {m['num_synthetic_images']}")
    return m


def public(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without the helper keys added by :func:`load_manifest` (for writing back)."""
    return {k: v for k, v in manifest.items() if not k.startswith("_")}
