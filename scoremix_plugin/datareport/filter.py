"""A generation run without its leaked identities (``scoremix generate --drop-leaks``).

The generation folder itself is never rewritten (it stays resumable and byte-reproducible); the kept
identities go to a new folder, ``OUT/leak-free/`` by default::

    leak-free/manifest.json      the contract's keys, plus (additive) "filtered_from", "kept_new_labels"
                                 and "dropped": [{"label", "new_label", "classes", "reasons"}]
    leak-free/pairs.csv          the kept rows of the selection, renumbered 0..n-1 (row n = new label n)
    leak-free/shard-00000/ ...   one shard per source shard that keeps an identity

Kept identities are renumbered in order, so labels stay contiguous (``C_real .. C_real + n - 1``); their
JPEG records are copied byte for byte (no re-encoding), only the label in each header changes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from scoremix_plugin.errors import InputError
from scoremix_plugin.io_utils import atomic_tempdir, sha256_file, write_json_atomic

FILTERED_NAME = "leak-free"


def drop_identities(
    manifest_path: str | os.PathLike, drop: dict[int, list[str]], out_dir: str | os.PathLike, *, progress: bool = True
) -> dict[str, Any]:
    """Write the manifest's identities minus ``drop`` ({final label: reasons}) to ``out_dir``; return its manifest.

    ``out_dir`` is built under a temporary name and replaces a previous ``out_dir`` only when complete.
    """
    from tqdm.auto import tqdm

    from scoremix_plugin.recordio import FaceRecFolder, FaceRecWriter
    from scoremix_plugin.synthesis.manifest import Manifest, Shard, verify_manifest
    from scoremix_plugin.synthesis.select import Selection, read_pairs, read_pairs_meta, write_pairs

    m = verify_manifest(manifest_path)  # checksums: we copy these bytes into a new set
    root, out = m.root, Path(os.path.abspath(out_dir))
    c_real, n_syn = m.real_num_classes, m.num_synthetic_classes
    bad = [lab for lab in drop if not c_real <= lab < c_real + n_syn]
    if bad:
        raise InputError(f"{m.path}: labels {bad[:5]} to drop are not synthetic labels [{c_real}, {c_real + n_syn})")
    sel_path = root / m.selection["file"]
    sel = read_pairs(sel_path)
    kept = [n for n in range(n_syn) if c_real + n not in drop]
    if not kept:
        raise InputError(f"{m.path}: all {n_syn} synthetic identities would be dropped; nothing to write")
    new_of = {c_real + n: c_real + j for j, n in enumerate(kept)}
    shards_out = []
    with atomic_tempdir(out) as holder:
        tmp = Path(holder) / out.name
        tmp.mkdir()
        shards = sorted(m.shards, key=lambda s: s.labels[0])
        total = sum(s.images for s in shards)
        with tqdm(total=total, desc="drop leaks", unit="img", disable=not progress) as bar:
            for s in shards:
                src = FaceRecFolder(s.path)
                keep_i = [i for i in range(len(src)) if int(src.labels[i]) in new_of]
                bar.update(len(src) - len(keep_i))
                if not keep_i:
                    continue
                name = f"shard-{len(shards_out):05d}"
                with FaceRecWriter(tmp / name, num_classes=c_real + len(kept)) as w:
                    for i in keep_i:
                        w.write(src.jpeg(i), new_of[int(src.labels[i])])
                        bar.update(1)
                first = new_of[int(src.labels[keep_i[0]])]
                # Paths where the folder will be once renamed into place: the manifest is relative to that.
                shards_out.append(
                    Shard(
                        len(shards_out),
                        out / name,
                        (first, new_of[int(src.labels[keep_i[-1]])] + 1),
                        len(keep_i),
                        sha256_file(tmp / name / "train.rec"),
                        sha256_file(tmp / name / "train.idx"),
                    )
                )
        write_pairs(
            tmp / "pairs.csv",
            Selection(sel.classes[kept], sel.weights[kept], sel.distance[kept]),
            {**read_pairs_meta(sel_path), "filtered_from": str(sel_path), "kept_new_labels": kept},
        )
        new = Manifest(
            path=out / "manifest.json",
            real_num_classes=c_real,
            real_num_image=m.real_num_image,
            real_rec=m.real_rec,
            num_synthetic_classes=len(kept),
            num_synthetic_images=sum(s.images for s in shards_out),
            generator={**m.generator, "checkpoint": _rebase(m.generator.get("checkpoint"), root, out)},
            selection={**m.selection, "file": "pairs.csv", "sha256": sha256_file(tmp / "pairs.csv")},
            sampler=m.sampler,
            shards=tuple(shards_out),
            planned_shards=len(shards_out),
            complete=True,
            extra={
                **m.extra,
                "filtered_from": {"manifest": os.path.relpath(m.path, out), "sha256": sha256_file(m.path)},
                "kept_new_labels": kept,
                "dropped": [
                    {
                        "label": lab,
                        "new_label": lab - c_real,
                        "classes": [int(c) for c in sel.classes[lab - c_real]],
                        "reasons": list(drop[lab]),
                    }
                    for lab in sorted(drop)
                ],
            },
        )
        write_json_atomic(tmp / "manifest.json", new.to_json())
        if out.exists():  # our own derived folder from an earlier run: replaced only now that the new one is whole
            shutil.rmtree(out)
        os.replace(tmp, out)
    verify_manifest(out / "manifest.json")
    return new


def _rebase(rel: str | None, old_root: Path, new_root: Path) -> str | None:
    """A path relative to the old manifest's folder, made relative to the new one."""
    if not rel:
        return rel
    return os.path.relpath(os.path.abspath(old_root / rel), os.path.abspath(new_root))


def check_generation(
    out_dir: str | os.PathLike,
    model,
    *,
    network: str | None = None,
    real: str | os.PathLike | None = None,
    bins: dict[str, Path] | None = None,
    far: float = 1e-4,
    drop_leaks: bool = False,
    min_share: float = 0.5,
    device=None,
    progress: bool = True,
):
    """After ``scoremix generate``: the dataset report in ``OUT/report/``, the quality gate's verdict and, with
    ``drop_leaks``, the leak-free set in ``OUT/leak-free/``. Returns (report, filtered manifest or None).
    """
    from scoremix_plugin.datareport.report import report_dataset

    out = Path(out_dir)
    rep = report_dataset(
        out / "manifest.json",
        model,
        out / "report",
        real=real,
        bins=bins,
        far=far,
        network=network,
        min_share=min_share,
        device=device,
        progress=progress,
    )
    filtered = None
    if drop_leaks:
        filtered = drop_identities(out / "manifest.json", rep.leak_reasons(), out / FILTERED_NAME, progress=progress)
    return rep, filtered
