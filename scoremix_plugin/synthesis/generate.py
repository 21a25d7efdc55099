"""ScoreMix synthetic identities into RecordIO shards (``scoremix generate``).

One process:   scoremix generate --ckpt G.pt --pairs pairs.csv --real REAL --images-per-identity 50 --out OUT
Several:       torchrun --nproc_per_node=2 -m scoremix_plugin generate ...   (same flags)

Identity ``n`` of the pairs file (row n) becomes label ``C_real + n`` (labels are final everywhere); its image i
starts from the noise of ``image_generator(seed, n, i)``. The plan cuts identities into shards of
``--shard-size`` consecutive identities; shard s holds identities ``[s*S, (s+1)*S)``, all their images in
identity order, sampled in batches of ``--batch-size`` taken in that order. Nothing in the plan depends on the
number of processes (rank r makes shards r, r+W, r+2W, ...), so any process count gives the same bytes.

Output folder::

    OUT/settings.json           what the bytes depend on; a rerun with other settings is refused
    OUT/shard-00000/            train.rec, train.idx, property (InsightFace layout) + done.json
    OUT/grids/shard-00000.png   first identities of the shard: real source images, then mixes
    OUT/manifest.json           synthesis/manifest.py; rewritten (atomically) by rank 0 as shards complete

A shard is written under a temporary folder name and renamed when closed; the rank that made it then
writes its ``done.json`` (sizes and checksums). Only rank 0 writes the manifest, merging those records, so
no two processes ever write the same file. A killed run restarted with the same command checks every
finished shard against its done.json (sizes, then sha256) and keeps those that hold, throws away partial
or damaged ones (saying so) and redoes them: the result is byte-identical to an uninterrupted run.
Rank 0 holds an exclusive ``flock`` on ``OUT/.lock`` while it runs (the kernel releases it when the
process ends, even by SIGKILL), so a second ``generate`` on the same folder stops with the holder's pid.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoremix_plugin.errors import InputError, OutputLockedError
from scoremix_plugin.generation.settings import SAMPLER
from scoremix_plugin.io_utils import refuse_output_overlapping_inputs, sha256_file, write_json_atomic
from scoremix_plugin.synthesis.manifest import Manifest, ManifestError, Shard

OUTPUT_SIZE = 112  # recognisers always take 112x112
SETTINGS_NAME = "settings.json"
# settings.json's format: a folder written under another one is refused in one line (use a new --out).
SETTINGS_FORMAT = "scoremix-generate-settings/2"
DONE_NAME = "done.json"
LOCK_NAME = ".lock"
SHARD_FILES = (("train.rec", "rec_sha256", "rec_size"), ("train.idx", "idx_sha256", "idx_size"))
GRID_IDENTITIES = 4  # rows of a shard's grid
GRID_IMAGES = 6  # mixes per row


@dataclass(frozen=True)
class GenerateSettings:
    ckpt: str  # generator checkpoint
    pairs: str  # pairs CSV (scoremix select)
    real: str  # real RecordIO folder: its classes are labels 0..C_real-1
    images_per_identity: int
    shard_size: int = 1000  # identities per shard
    # The sampler: defaults and their meaning in generation.settings.SamplerSettings.
    steps: int = SAMPLER.steps
    solver: str = SAMPLER.solver
    guidance: str = SAMPLER.guidance
    guidance_scale: float = SAMPLER.guidance_scale
    guide: str | None = None  # weaker generator (autoguidance)
    mix_window: tuple[float, float] | None = SAMPLER.mix_window
    guidance_interval: tuple[float, float] | None = SAMPLER.guidance_interval
    seed: int = 0
    batch_size: int = SAMPLER.batch_size
    bf16: bool = SAMPLER.bf16
    mix_space: str = "score"  # score: mix denoiser outputs (ScoreMix); condition: mix class embeddings (AugGen)
    mix_weights: tuple[float, ...] | None = None  # every identity's weights instead of the pairs file's


def shard_name(s: int) -> str:
    return f"shard-{s:05d}"


def plan_shards(num_identities: int, shard_size: int) -> list[tuple[int, int]]:
    """[first, end) identity ranges (new labels) of each shard."""
    if shard_size < 1:
        raise InputError(f"--shard-size must be >= 1, got {shard_size}")
    return [(f, min(f + shard_size, num_identities)) for f in range(0, num_identities, shard_size)]


def _rel(path: str | os.PathLike, root: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root))


def _fingerprint(st: GenerateSettings, c_real: int) -> dict[str, Any]:
    """Everything the output bytes depend on (contents by checksum, so moving files is fine)."""
    return {
        "format": SETTINGS_FORMAT,
        "generator_sha256": sha256_file(st.ckpt),
        "pairs_sha256": sha256_file(st.pairs),
        "guide_sha256": sha256_file(st.guide) if st.guide else None,
        "real_num_classes": int(c_real),
        "images_per_identity": int(st.images_per_identity),
        "shard_size": int(st.shard_size),
        "steps": int(st.steps),
        "solver": st.solver,
        "guidance": st.guidance,
        "guidance_scale": float(st.guidance_scale),
        "mix_window": list(st.mix_window) if st.mix_window is not None else None,
        "guidance_interval": [float(v) for v in st.guidance_interval] if st.guidance_interval is not None else None,
        "seed": int(st.seed),
        "batch_size": int(st.batch_size),
        "bf16": bool(st.bf16),
        "output_size": OUTPUT_SIZE,
        "mix_space": st.mix_space,
        "mix_weights": [float(w) for w in st.mix_weights] if st.mix_weights is not None else None,
    }


MIX_WEIGHT_MAX = 10.0  # a condition weight beyond this saturates the embedding: images, but no face


def check_mix_weights(weights, what: str = "--mix-weights") -> None:
    """Mixing weights: finite, each in [0, MIX_WEIGHT_MAX], not all zero (then no class conditions the image)."""
    from scoremix_plugin.checks import check_number

    text = ",".join(str(w) for w in weights)
    for w in weights:
        check_number(w, f"{what} {text}: each weight", lo=0, hi=MIX_WEIGHT_MAX)
    if not any(float(w) > 0 for w in weights):
        raise InputError(f"{what} {text}: all weights are zero (no class would condition the images)")


def _check_settings(out: Path, fp: dict[str, Any]) -> bool:
    """True when ``out`` already holds a run with these settings; raise when it holds another run."""
    f = out / SETTINGS_NAME
    if not f.is_file():
        if (out / "manifest.json").is_file():
            raise InputError(f"{out} holds a manifest but no {SETTINGS_NAME}: not a folder this command can resume")
        return False
    try:
        old = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{f}: not valid JSON ({e}); this folder cannot be resumed (use a new --out folder)") from None
    if not isinstance(old, dict):
        raise InputError(
            f"{f}: holds a JSON {type(old).__name__}, not the settings object generate writes; this "
            "folder cannot be resumed (use a new --out folder)"
        )
    if old.get("format") != fp["format"]:
        raise InputError(
            f"{out} was generated by an older scoremix (settings format {old.get('format')!r}, this "
            f"version writes {fp['format']!r}); it cannot be resumed: use a new --out folder"
        )
    if old != fp:
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {fp.get(k)!r}" for k in diff)
        raise InputError(
            f"{out} was generated with other settings ({detail}); refusing to resume into it. "
            "Use a new --out folder, or rerun with the original settings."
        )
    return True


def _lock_output(out: Path):
    """Take the folder's writer lock (rank 0) or raise naming the process that holds it; returns the open file."""
    import fcntl

    f = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole run: closing it releases the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise OutputLockedError(
            f"{out} is being written by another `scoremix generate` (pid {holder}, lock file "
            f"{out / LOCK_NAME}); wait for it or stop it, then rerun to resume"
        ) from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def _unlock_output(f) -> None:
    # Emptied before release: the folder's bytes do not depend on which process wrote it last.
    f.truncate(0)
    f.close()


def shard_problem(folder: Path, rec: dict) -> str | None:
    """Why a finished shard does not match its done.json record (None when it does)."""
    for name, sha_key, size_key in SHARD_FILES:
        f = folder / name
        if not f.is_file():
            return f"{f} is missing"
        size = f.stat().st_size
        if size != rec.get(size_key):
            return f"{f} has {size} bytes, done.json records {rec.get(size_key)} (truncated?)"
        if sha256_file(f) != rec.get(sha_key):
            return f"{f} does not match the sha256 in done.json (damaged)"
    return None


def _clean_stale(out: Path) -> None:
    """Remove what a killed run left under temporary names (atomic writes, unfinished shard folders)."""
    for p in list(out.glob(".*.tmp-*")) + list((out / "grids").glob(".*.tmp-*")):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _resize(img: np.ndarray) -> np.ndarray:
    import cv2

    if img.shape[:2] == (OUTPUT_SIZE, OUTPUT_SIZE):
        return np.ascontiguousarray(img)
    # Upsampling (the CPU generator's 32 px): bicubic; downsampling: area averaging.
    interp = cv2.INTER_CUBIC if img.shape[0] < OUTPUT_SIZE else cv2.INTER_AREA
    return cv2.resize(img, (OUTPUT_SIZE, OUTPUT_SIZE), interpolation=interp)


class _Run:
    """Everything one process needs to make its shards."""

    def __init__(self, st: GenerateSettings, out: Path, env, *, grids: bool, progress: bool):
        import torch

        from scoremix_plugin.generation.checkpoint import load_generator
        from scoremix_plugin.recordio import FaceRecFolder
        from scoremix_plugin.synthesis.select import read_pairs, read_pairs_meta

        self.st, self.out, self.env, self.grids, self.progress = st, out, env, grids, progress
        if st.images_per_identity < 1:
            raise InputError(f"--images-per-identity must be >= 1, got {st.images_per_identity}")
        if st.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {st.batch_size}")
        if st.steps < 1:
            raise InputError(f"--steps must be >= 1, got {st.steps}")
        if st.mix_space not in ("score", "condition"):
            raise InputError(f"--mix-space must be 'score' or 'condition', got {st.mix_space!r}")
        plan_shards(0, st.shard_size)  # checks --shard-size before the inputs load
        self.sel = read_pairs(st.pairs)
        self.weights = self.sel.weights
        from scoremix_plugin.checks import check_number

        check_number(st.guidance_scale, "--guidance-scale", lo=0, hi=100)
        if st.mix_window is not None:
            lo = check_number(st.mix_window[0], "--mix-window", lo=0)
            check_number(st.mix_window[1], "--mix-window", lo=lo)
        if st.mix_weights is not None:
            check_mix_weights(st.mix_weights)
            w = np.asarray(st.mix_weights, dtype=np.float64)
            if w.shape != (self.sel.k,) or not np.isfinite(w).all():
                raise InputError(
                    f"--mix-weights {list(st.mix_weights)}: need {self.sel.k} finite numbers, one per "
                    f"class column of {st.pairs}"
                )
            if st.mix_space == "score" and ((w < 0).any() or abs(w.sum() - 1) > 1e-5):
                raise InputError(
                    f"--mix-weights {list(st.mix_weights)}: score mixing needs convex weights (each >= 0, "
                    "summing to 1); non-convex ones (AugGen's 0.7,0.7) are for --mix-space condition"
                )
            self.weights = np.broadcast_to(w, self.sel.weights.shape)
        self.pairs_meta = read_pairs_meta(st.pairs)
        self.real = FaceRecFolder(st.real)
        self.c_real = int(self.real.num_classes)
        self.n_real = len(self.real)
        # Recorded in the manifest: readers verify the real folder by it even after the folder moved.
        self.real_idx_sha256 = sha256_file(self.real.idx_path)
        amp = torch.bfloat16 if st.bf16 else None
        self.denoiser, self.gen_config = load_generator(st.ckpt, device=env.device, amp=amp)
        g_classes = int(self.denoiser.num_classes)
        top = int(self.sel.classes.max())
        if top >= g_classes or top >= self.c_real:
            raise InputError(
                f"{st.pairs}: class {top} is outside the generator's {g_classes} classes "
                f"({st.ckpt}) or the real folder's {self.c_real} ({st.real})"
            )
        if g_classes != self.c_real:
            print(f"warning: generator {st.ckpt} has {g_classes} classes, real folder {st.real} has {self.c_real}")
        self.guide = None
        if st.guidance == "autoguidance":
            if not st.guide:
                raise InputError("--guidance autoguidance needs --guide (a weaker generator checkpoint)")
            self.guide, _ = load_generator(st.guide, device=env.device, amp=amp)
        self.plan = plan_shards(len(self.sel), st.shard_size)
        self.fp = _fingerprint(st, self.c_real)
        self.resolution = int(self.denoiser.resolution)

    # The manifest.

    def record_path(self, s: int) -> Path:
        return self.out / shard_name(s) / DONE_NAME

    def read_record(self, s: int, verify: bool) -> dict | None:
        f = self.record_path(s)
        if not f.is_file():
            return None
        try:
            rec = json.loads(f.read_text())
        except ValueError:  # a done.json cut short: the shard is not finished
            return None
        if not isinstance(rec, dict):
            return None
        if verify and shard_problem(self.out / shard_name(s), rec) is not None:
            return None
        return rec

    def verify_finished(self, listed: set[str], log) -> None:
        """Rank 0 on resume: keep the finished shards whose files match done.json; drop the others to redo.

        Each shard is hashed once here and then trusted (listed) by merge(): hashing reads every byte, so
        a resume costs one read of the finished shards, not one per manifest rewrite.
        """
        for s in range(len(self.plan)):
            name = shard_name(s)
            rec = self.read_record(s, verify=False)
            problem = "its done.json is missing or unreadable" if rec is None else shard_problem(self.out / name, rec)
            if rec is None and name not in listed:
                continue  # never finished: planned as usual
            if problem is None:
                listed.add(name)
                continue
            log(f"generate: {name}: {problem}; redoing this shard")
            listed.discard(name)
            self.record_path(s).unlink(missing_ok=True)
            shutil.rmtree(self.out / name, ignore_errors=True)

    def manifest(self, records: list[dict]) -> Manifest:
        st, n = self.st, len(self.sel)
        meta = self.pairs_meta
        shards = tuple(
            Shard(
                i, self.out / r["path"], (r["labels"][0], r["labels"][1]), r["images"], r["rec_sha256"], r["idx_sha256"]
            )
            for i, r in enumerate(records)
        )
        return Manifest(
            path=Path(os.path.abspath(self.out / "manifest.json")),
            real_num_classes=self.c_real,
            real_num_image=self.n_real,
            real_rec=Path(os.path.abspath(st.real)),
            real_idx_sha256=self.real_idx_sha256,
            num_synthetic_classes=n,
            num_synthetic_images=n * st.images_per_identity,
            generator={
                "checkpoint": _rel(st.ckpt, self.out),
                "sha256": self.fp["generator_sha256"],
                "step": self.gen_config.get("step"),
                "resolution": self.resolution,
            },
            selection={
                "file": _rel(st.pairs, self.out),
                "sha256": self.fp["pairs_sha256"],
                "strategy": meta.get("strategy"),
                "space": meta.get("space"),
                "k": self.sel.k,
            },
            sampler={
                "solver": st.solver,
                "steps": st.steps,
                "guidance": st.guidance,
                "guidance_scale": st.guidance_scale,
                "guide": {"checkpoint": _rel(st.guide, self.out), "sha256": self.fp["guide_sha256"]}
                if st.guide
                else None,
                "mix_window": list(st.mix_window) if st.mix_window is not None else None,
                "guidance_interval": list(st.guidance_interval) if st.guidance_interval is not None else None,
                "mix_space": st.mix_space,
                "mix_weights": [float(w) for w in st.mix_weights] if st.mix_weights is not None else None,
                "seed": st.seed,
                "batch_size": st.batch_size,
                "bf16": st.bf16,
                "images_per_identity": st.images_per_identity,
                "shard_size": st.shard_size,
                "output_size": OUTPUT_SIZE,
                "resize": "cv2.INTER_CUBIC"
                if self.resolution < OUTPUT_SIZE
                else ("none" if self.resolution == OUTPUT_SIZE else "cv2.INTER_AREA"),
            },
            shards=shards,
            planned_shards=len(self.plan),
            complete=len(records) == len(self.plan),
        )

    def merge(self, in_manifest: set[str]) -> Manifest:
        """Rank 0: collect every done record (verifying those not yet listed) and rewrite the manifest."""
        records = []
        for s in range(len(self.plan)):
            rec = self.read_record(s, verify=shard_name(s) not in in_manifest)
            if rec is not None:
                records.append(rec)
                in_manifest.add(shard_name(s))
        return self.manifest(records).write()

    # One shard.

    def make_shard(self, s: int, bar) -> dict:
        import torch

        from scoremix_plugin.generation.images import image_grid, to_uint8, write_png
        from scoremix_plugin.generation.sampler import image_generator, sample
        from scoremix_plugin.io_utils import atomic_tempdir
        from scoremix_plugin.recordio import FaceRecWriter

        st, out, dev = self.st, self.out, self.env.device
        first, end = self.plan[s]
        name = shard_name(s)
        final = out / name
        items = [(n, i) for n in range(first, end) for i in range(st.images_per_identity)]
        grid_ids = set(range(first, min(end, first + GRID_IDENTITIES)))
        kept: dict[int, list[np.ndarray]] = {n: [] for n in grid_ids}
        with atomic_tempdir(final) as tmp:
            tmp_dir = Path(tmp) / name
            with FaceRecWriter(tmp_dir, num_classes=self.c_real + len(self.sel), image_size=OUTPUT_SIZE) as w:
                for b0 in range(0, len(items), st.batch_size):
                    batch = items[b0 : b0 + st.batch_size]
                    ids = [n for n, _ in batch]
                    images = sample(
                        self.denoiser,
                        torch.as_tensor(self.sel.classes[ids]),
                        torch.as_tensor(self.weights[ids], dtype=torch.float32),
                        generators=[image_generator(st.seed, n, i, dev) for n, i in batch],
                        num_steps=st.steps,
                        solver=st.solver,
                        guidance=st.guidance,
                        guidance_scale=st.guidance_scale,
                        guide=self.guide,
                        mix_window=st.mix_window,
                        mix_space=st.mix_space,
                        guidance_interval=st.guidance_interval,
                    )
                    for (n, i), img in zip(batch, to_uint8(images)):
                        img = _resize(img)
                        w.write(img, self.c_real + n)
                        if n in kept and i < GRID_IMAGES:
                            kept[n].append(img)
                    bar.update(len(batch))
            if final.exists():  # a folder renamed into place by a run killed before its done.json
                shutil.rmtree(final)
            os.replace(tmp_dir, final)
        if self.grids:
            rows = []
            for n in sorted(grid_ids):
                rows.append([self._real_image(int(c)) for c in self.sel.classes[n]] + kept[n])
            write_png(out / "grids" / f"{name}.png", image_grid(rows))
        rec = {"path": name, "labels": [self.c_real + first, self.c_real + end], "images": len(items)}
        for fname, sha_key, size_key in SHARD_FILES:
            rec[sha_key], rec[size_key] = sha256_file(final / fname), (final / fname).stat().st_size
        write_json_atomic(self.record_path(s), rec)  # written last: the shard is now complete
        return rec

    def _real_image(self, label: int) -> np.ndarray:
        hits = np.flatnonzero(self.real.labels == label)
        if len(hits) == 0:
            return np.zeros((OUTPUT_SIZE, OUTPUT_SIZE, 3), np.uint8)
        return _resize(self.real.image(int(hits[0])))


def generate(
    settings: GenerateSettings,
    out: str | os.PathLike,
    *,
    device: str | None = None,
    grids: bool = True,
    progress: bool = True,
) -> Manifest | None:
    """Make every shard of the plan not yet complete; return the manifest on rank 0 (None elsewhere)."""
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from scoremix_plugin.distributed import barrier, init_distributed

    out = Path(out)
    opened = not dist.is_initialized()
    env = init_distributed(device)
    lock = None
    try:
        refuse_output_overlapping_inputs(out, {"--real": settings.real})
        run = _Run(settings, out, env, grids=grids, progress=progress)
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            lock = _lock_output(out)
        # Every rank checks the settings before anyone writes, so a refusal cannot strand a rank at a barrier.
        resuming = _check_settings(out, run.fp)
        if env.is_main:
            _clean_stale(out)
            if not resuming:
                write_json_atomic(out / SETTINGS_NAME, run.fp)
            listed = _listed(out)
            if resuming:
                run.verify_finished(listed, log=print)
            run.merge(listed)
        barrier(env)
        listed = _listed(out)
        mine = [s for s in range(len(run.plan)) if s % env.world_size == env.rank and shard_name(s) not in listed]
        todo = sum((run.plan[s][1] - run.plan[s][0]) * settings.images_per_identity for s in mine)
        skipped = sum(1 for s in range(len(run.plan)) if s % env.world_size == env.rank) - len(mine)
        desc = f"generate (rank {env.rank})" if env.distributed else "generate"
        with tqdm(total=todo, desc=desc, unit="img", disable=not progress, position=env.rank) as bar:
            if skipped:
                bar.write(f"{desc}: {skipped} shard(s) already complete, {len(mine)} to make")
            for s in mine:
                run.make_shard(s, bar)
                bar.write(f"rank {env.rank} made {shard_name(s)}")
                if env.is_main:
                    run.merge(listed)
        barrier(env)
        if not env.is_main:
            return None
        m = run.merge(listed)
        if not m.complete:
            missing = [shard_name(s) for s in range(len(run.plan)) if shard_name(s) not in listed]
            raise ManifestError(f"{out}: shards {missing[:5]} did not complete")
        return m
    finally:
        if lock is not None:
            _unlock_output(lock)
        if opened and env.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _listed(out: Path) -> set[str]:
    f = out / "manifest.json"
    if not f.is_file():
        return set()
    return {s.path.name for s in Manifest.read(f).shards}
