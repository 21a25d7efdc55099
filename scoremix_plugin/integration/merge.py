"""Merge the real folder and the synthetic shards into ONE InsightFace-layout folder an unmodified host trains on.

    scoremix merge --real /data/casia --synthetic /data/scoremix/manifest.json --out /data/casia_scoremix \\
        [--arcface-root ~/insightface/recognition/arcface_torch --name casia_scoremix_r50]

The alternative to ``arcface-train`` for teams that want no plugin at training time: the output is
``train.rec`` / ``train.idx`` / ``property`` like any InsightFace dataset, the real folder's ``.bin``
verification files beside it, ``merge.json`` (sources, counts, checksums) and an arcface_torch job
config ``NAME.py`` (``rec``, ``num_classes``, ``num_image``, ``val_targets`` filled in), also written
to ``ROOT/configs/NAME.py`` with ``--arcface-root``.

Image payloads are copied byte for byte (no JPEG re-encode, so nothing changes but the headers);
headers are re-packed with new keys and ids. Real images come first, grouped by label (the identity
records need each label's images contiguous), then each shard's. Labels are the manifest's final
labels, never shifted. The folder is built under a temporary name beside ``--out`` and renamed when
complete, so an interrupted merge never leaves a half-written dataset under the final name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..config import HOST_BASE
from ..data.scoremix_dataset import check_source
from ..errors import InputError, MissingInputError, OutputExistsError
from ..io_utils import refuse_output_overlapping_inputs, sha256_file, write_json_atomic, write_text_atomic
from ..synthesis.manifest import Manifest, ManifestError, check_provenance

# Job-config keys the generated config sets beyond the counts (the host's usual recipe values).
CONFIG_DEFAULTS: dict[str, Any] = {
    "margin_list": (1.0, 0.5, 0.0),
    "network": "r50",
    "embedding_size": 512,
    "sample_rate": 1.0,
    "fp16": True,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 128,
    "lr": 0.1,
    "verbose": 2000,
    "dali": False,
    "num_workers": 2,
    "num_epoch": 20,
    "warmup_epoch": 0,
}


def render_config(name: str, values: dict[str, Any]) -> str:
    """An arcface_torch job config file (``config = edict()`` + one assignment per key)."""
    lines = [
        f'"""arcface_torch job config written by `scoremix merge` for {name}: real + ScoreMix synthetic identities."""',
        "",
        "from easydict import EasyDict as edict",
        "",
        "config = edict()",
    ]
    unknown = sorted(
        set(values) - set(HOST_BASE) - {"rec", "num_classes", "num_image", "num_epoch", "warmup_epoch", "val_targets"}
    )
    if unknown:
        raise InputError(f"render_config: keys the host does not read: {unknown}")
    lines += [f"config.{k} = {v!r}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _copy_images(writer, folder, desc: str, progress: bool) -> None:
    from tqdm import tqdm

    # A stable sort keeps each label's original image order while making labels contiguous.
    order = np.argsort(folder.labels, kind="stable")
    for i in tqdm(order.tolist(), desc=desc, unit="img", disable=not progress, leave=False):
        writer.write(folder.jpeg(i), int(folder.labels[i]))


def merge(
    real_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str = "scoremix_merged",
    arcface_root: str | os.PathLike | None = None,
    config_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the merged folder (see the module docstring); returns the summary also saved as ``merge.json``."""
    from ..recordio import FaceRecFolder, FaceRecWriter

    real_dir, out = Path(real_dir).resolve(), Path(out_dir).resolve()
    if not name.isidentifier():
        raise InputError(f"--name {name!r} must be a Python identifier (the host imports configs.{name})")
    config_dir = None
    if arcface_root is not None:
        config_dir = Path(arcface_root).expanduser().resolve() / "configs"
        if not config_dir.is_dir():
            raise MissingInputError(f"--arcface-root {arcface_root}: no configs/ folder there")

    # Sources, checked against the manifest before anything is written.
    view = Manifest.read(manifest).validate()  # a complete run: checksums, label ranges, totals
    check_provenance(view, real_dir=real_dir)  # the real folder it was made for, its recorded generator
    # --overwrite replaces --out: never when that would delete or mix into what this merge reads.
    refuse_output_overlapping_inputs(
        out, {"--real": real_dir, "--synthetic": view.path.parent, **{f"shard {s.path}": s.path for s in view.shards}}
    )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"--out {out} exists and is not empty (pass --overwrite to replace it)")
    real = FaceRecFolder(real_dir)
    if real.num_classes != view.real_num_classes:
        raise ManifestError(
            f"{view.path}: real.num_classes = {view.real_num_classes}, but {real_dir} has "
            f"{real.num_classes} classes (property): the manifest was made for another real folder"
        )
    check_source(
        real.labels,
        view.real_num_image,
        0,
        view.real_num_classes,
        what=f"the real folder {real_dir}",
        count_key="real.num_image",
        manifest=view,
        rec_path=real.rec_path,
        image_keys=real.image_keys,
    )
    shards = []
    for s in view.shards:
        f = FaceRecFolder(s.path)
        check_source(
            f.labels,
            s.images,
            s.labels[0],
            s.labels[1],
            what=f"shard {s.path}",
            count_key=f"shards[{s.index}].images",
            manifest=view,
            rec_path=f.rec_path,
            image_keys=f.image_keys,
        )
        shards.append(f)
    bins = sorted(p for p in real_dir.glob("*.bin") if p.is_file())
    values = {**CONFIG_DEFAULTS, **(config_overrides or {})}
    values.update(
        rec=str(out),
        num_classes=view.num_classes,
        num_image=view.num_image,
        val_targets=[b.stem for b in bins],
        output=f"work_dirs/{name}",
    )
    config_text = render_config(name, values)  # refuses unknown override keys before any copying

    # Build under a temporary name beside --out, then rename.
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with FaceRecWriter(tmp, num_classes=view.num_classes) as writer:
            _copy_images(writer, real, "real", progress)
            for s, f in zip(view.shards, shards):
                _copy_images(writer, f, s.path.name, progress)
        assert writer.num_images == view.num_image  # both sources were counted against the manifest above
        for b in bins:
            shutil.copyfile(b, tmp / b.name)
        write_text_atomic(tmp / f"{name}.py", config_text)
        summary = {
            "format": "scoremix-merged/1",
            "num_classes": view.num_classes,
            "num_image": writer.num_images,
            "real": {
                "folder": str(real_dir),
                "num_classes": real.num_classes,
                "num_image": len(real),
                "keys": [1, len(real) + 1],
            },
            "synthetic": {
                "manifest": str(view.path),
                "manifest_sha256": sha256_file(view.path),
                "num_classes": view.num_synthetic_classes,
                "num_image": view.num_synthetic_images,
                "keys": [len(real) + 1, writer.num_images + 1],
            },
            "val_targets": values["val_targets"],
            "config": f"{name}.py",
            "rec_sha256": sha256_file(tmp / "train.rec"),
            "idx_sha256": sha256_file(tmp / "train.idx"),
        }
        write_json_atomic(tmp / "merge.json", summary)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        for f in (real, *shards):
            f.close()
        if tmp.exists():
            shutil.rmtree(tmp)
    if config_dir is not None:
        write_text_atomic(config_dir / f"{name}.py", config_text)
        summary["host_config"] = str(config_dir / f"{name}.py")
    return summary
