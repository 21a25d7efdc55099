"""The generation manifest (``DIR/manifest.json``).

One type, ``Manifest``, for everyone who reads or writes it: ``scoremix generate`` (rewrites it atomically
after each completed shard; a shard is complete exactly when it is listed), the quality report, the
ScoreMix dataset, ``scoremix merge`` and the pipeline. On disk, paths are relative to the manifest's
folder; in memory, shard folders and the real folder are absolute. Besides the contract's keys the file
carries ``planned_shards`` (how many shards the plan has) and ``complete`` (all of them listed), so a
reader can tell a finished run from an interrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scoremix_plugin.errors import ScoreMixError
from scoremix_plugin.io_utils import sha256_file, write_json_atomic

FORMAT = "scoremix-shards/1"
REQUIRED = (
    "format",
    "real",
    "num_classes",
    "num_synthetic_classes",
    "num_synthetic_images",
    "generator",
    "selection",
    "sampler",
    "shards",
)
SHARD_KEYS = ("path", "labels", "images", "rec_sha256", "idx_sha256")


def _abs(path: str | os.PathLike) -> Path:
    # abspath, not resolve: a path written relative to a symlinked folder must come back the same text.
    return Path(os.path.abspath(path))


class ManifestError(ScoreMixError, ValueError):
    """A manifest or one of its shards is missing, malformed or does not match its checksums."""


@dataclass(frozen=True)
class Shard:
    index: int  # position in the manifest's list
    path: Path  # the shard's InsightFace folder, absolute
    labels: tuple[int, int]  # [first, last_plus_one), final labels
    images: int
    rec_sha256: str
    idx_sha256: str


@dataclass(frozen=True)
class Manifest:
    path: Path  # the manifest file, absolute
    real_num_classes: int
    real_num_image: int
    real_rec: Path | None  # the real folder it was generated for, absolute (None: not recorded)
    num_synthetic_classes: int
    num_synthetic_images: int
    generator: dict[str, Any]  # checkpoint (relative, as on disk), sha256, ...
    selection: dict[str, Any]  # file (relative), sha256, strategy, space, k
    sampler: dict[str, Any]  # solver, steps, guidance, mix_window, seed, ...
    shards: tuple[Shard, ...] = ()
    planned_shards: int | None = None
    complete: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept on rewrite
    real_idx_sha256: str | None = None  # sha256 of the real folder's train.idx at generation (None: not recorded)

    # Totals.

    @property
    def num_classes(self) -> int:
        """Real + synthetic classes: what ``config.num_classes`` must equal."""
        return self.real_num_classes + self.num_synthetic_classes

    @property
    def num_image(self) -> int:
        """Real + synthetic images: what ``config.num_image`` must equal."""
        return self.real_num_image + self.num_synthetic_images

    @property
    def root(self) -> Path:
        return self.path.parent

    # Reading and writing.

    @classmethod
    def read(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest (the file, or the folder holding ``manifest.json``) and check its keys and types."""
        p = Path(path)
        if p.is_dir():
            p = p / "manifest.json"
        if not p.is_file():
            raise ManifestError(f"manifest not found: {p}")
        try:
            m = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"{p}: not valid JSON: {e}") from e
        return cls.from_json(m, p)

    @classmethod
    def from_json(cls, m: Any, path: str | os.PathLike) -> Manifest:
        """The manifest held by the JSON value ``m`` of the file ``path`` (paths resolve against its folder)."""
        p = _abs(path)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise ManifestError(
                f"{p}: format is {m.get('format') if isinstance(m, dict) else None!r}, expected {FORMAT!r}"
            )
        missing = [k for k in REQUIRED if k not in m]
        if missing:
            raise ManifestError(f"{p}: missing key(s) {missing}")
        for k in ("num_classes", "num_synthetic_classes", "num_synthetic_images"):
            if not isinstance(m[k], int) or m[k] < 0:
                raise ManifestError(f"{p}: {k} must be a non-negative integer, got {m[k]!r}")
        real = m["real"]
        if (
            not isinstance(real, dict)
            or not isinstance(real.get("num_classes"), int)
            or not isinstance(real.get("num_image"), int)
        ):
            raise ManifestError(
                f"{p}: real must be {{num_classes: int, num_image: int, rec: path or null}}, got {real!r}"
            )
        if m["num_classes"] != real["num_classes"] + m["num_synthetic_classes"]:
            raise ManifestError(
                f"{p}: num_classes {m['num_classes']} != real.num_classes {real['num_classes']} + "
                f"num_synthetic_classes {m['num_synthetic_classes']}"
            )
        if not isinstance(m["shards"], list):
            raise ManifestError(f"{p}: shards must be a list")
        idx_sha = real.get("idx_sha256")
        if idx_sha is not None and not (
            isinstance(idx_sha, str) and len(idx_sha) == 64 and all(c in "0123456789abcdef" for c in idx_sha)
        ):
            raise ManifestError(f"{p}: real.idx_sha256 must be a sha256 (64 lowercase hex digits), got {idx_sha!r}")
        shards = []
        for i, s in enumerate(m["shards"]):
            miss = [k for k in SHARD_KEYS if not isinstance(s, dict) or k not in s]
            if miss:
                raise ManifestError(f"{p}: shards[{i}] lacks {miss}")
            lab = s["labels"]
            if not (
                isinstance(lab, list) and len(lab) == 2 and all(isinstance(v, int) for v in lab) and lab[0] < lab[1]
            ):
                raise ManifestError(f"{p}: shards[{i}] ({s['path']}) labels {lab!r} must be [first, last_plus_one]")
            shards.append(
                Shard(
                    i, _abs(p.parent / s["path"]), (lab[0], lab[1]), int(s["images"]), s["rec_sha256"], s["idx_sha256"]
                )
            )
        known = set(REQUIRED) | {"planned_shards", "complete"}
        return cls(
            path=p,
            real_num_classes=real["num_classes"],
            real_num_image=real["num_image"],
            real_rec=_abs(p.parent / real["rec"]) if real.get("rec") else None,
            num_synthetic_classes=m["num_synthetic_classes"],
            num_synthetic_images=m["num_synthetic_images"],
            generator=m["generator"],
            selection=m["selection"],
            sampler=m["sampler"],
            shards=tuple(shards),
            planned_shards=m.get("planned_shards"),
            complete=m.get("complete"),
            extra={k: v for k, v in m.items() if k not in known},
            real_idx_sha256=idx_sha,
        )

    def to_json(self) -> dict[str, Any]:
        """The on-disk form: paths relative to the manifest's folder, keys in the contract's order."""
        root = os.path.abspath(self.root)

        def rel(p: Path) -> str:
            return os.path.relpath(os.path.abspath(p), root)

        out: dict[str, Any] = {
            "format": FORMAT,
            "real": {
                "num_classes": self.real_num_classes,
                "num_image": self.real_num_image,
                "rec": None if self.real_rec is None else rel(self.real_rec),
            },
            "num_classes": self.num_classes,
            "num_synthetic_classes": self.num_synthetic_classes,
            "num_synthetic_images": self.num_synthetic_images,
            "generator": self.generator,
            "selection": self.selection,
            "sampler": self.sampler,
        }
        if self.planned_shards is not None:
            out["planned_shards"] = self.planned_shards
        if self.complete is not None:
            out["complete"] = self.complete
        if self.real_idx_sha256 is not None:
            out["real"]["idx_sha256"] = self.real_idx_sha256
        out.update(self.extra)
        out["shards"] = [
            {
                "path": rel(s.path),
                "labels": list(s.labels),
                "images": s.images,
                "rec_sha256": s.rec_sha256,
                "idx_sha256": s.idx_sha256,
            }
            for s in self.shards
        ]
        return out

    def write(self, path: str | os.PathLike | None = None) -> Manifest:
        """Write atomically to ``path`` (default: where it belongs); returns the manifest as written."""
        m = self if path is None else replace(self, path=_abs(path))
        write_json_atomic(m.path, m.to_json())
        return m

    # Checks.

    def validate(self, *, check_sha: bool = True, allow_partial: bool = False) -> Manifest:
        """Check the manifest describes a usable set of shards; returns itself.

        Label ranges do not overlap and, sorted, run contiguously from ``real_num_classes`` to
        ``num_classes``; every shard folder has ``train.rec`` / ``train.idx`` (and, with ``check_sha``, their
        sha256 match); image counts add up to ``num_synthetic_images``. ``allow_partial`` accepts an
        interrupted run (a gap is then allowed, the totals are not checked).
        """
        p = self.path
        expect, images = self.real_num_classes, 0
        for s in sorted(self.shards, key=lambda s: s.labels[0]):
            first, end = s.labels
            if first < expect:
                raise ManifestError(
                    f"{p}: shard {s.path.name} labels [{first}, {end}) overlap the previous range "
                    f"(which ends at {expect}) or the real classes [0, {self.real_num_classes})"
                )
            if first > expect and not allow_partial:
                raise ManifestError(
                    f"{p}: labels not contiguous: [{expect}, {first}) is in no shard before "
                    f"{s.path.name} (an interrupted run? rerun the same generate command)"
                )
            expect = end
            images += s.images
        for s in self.shards:  # files only once the label ranges are known to be right
            for name, want in (("train.rec", s.rec_sha256), ("train.idx", s.idx_sha256)):
                f = s.path / name
                if not f.is_file():
                    raise ManifestError(f"{p}: shard {s.path.name} is missing {f}")
                if check_sha and sha256_file(f) != want:
                    key = "rec_sha256" if name == "train.rec" else "idx_sha256"
                    raise ManifestError(f"{p}: checksum mismatch for {f} ({key} in the manifest differs)")
        if not allow_partial:
            if expect != self.num_classes:
                raise ManifestError(
                    f"{p}: shards end at label {expect}, num_classes is {self.num_classes} "
                    "(an interrupted run? rerun the same generate command)"
                )
            if images != self.num_synthetic_images:
                raise ManifestError(
                    f"{p}: shards hold {images} images, num_synthetic_images is {self.num_synthetic_images}"
                )
        return self


def verify_manifest(path: str | os.PathLike, check_sha: bool = True, allow_partial: bool = False) -> Manifest:
    """Read a manifest and check its label ranges, shard files (checksums with ``check_sha``) and totals."""
    return Manifest.read(path).validate(check_sha=check_sha, allow_partial=allow_partial)


def check_provenance(m: Manifest, real_dir: str | os.PathLike | None = None, what: str = "--real") -> None:
    """What a manifest says it was made from agrees with what the reader holds (every reader calls this).

    - generator / selection sha256: ``generate`` records them twice, in the manifest and in ``settings.json``
      beside it; an edit of one is a mismatch (the manifest no longer says which generator made the images).
    - the real folder: a manifest that records ``real.idx_sha256`` (the real ``train.idx`` at generation) is
      compared with the reader's ``real_dir/train.idx``, wherever either folder now lies (a moved or copied
      folder is fine, another dataset with the same counts is not, nor the same folder rewritten). Without
      it (older manifests): when ``real_dir`` is not the folder the manifest names and that folder still
      exists, their ``train.idx`` must be byte-identical; a recorded folder that no longer exists cannot be
      compared, and the class and image counts, which every reader checks, are then the only test.
    """
    settings = m.root / "settings.json"
    if settings.is_file():
        try:
            fp = json.loads(settings.read_text())
        except (ValueError, UnicodeDecodeError):
            fp = None
        if isinstance(fp, dict):
            for block, key, fp_key in (
                ("generator", "sha256", "generator_sha256"),
                ("selection", "sha256", "pairs_sha256"),
            ):
                have = m.generator if block == "generator" else m.selection
                want = fp.get(fp_key)
                if want is not None and isinstance(have, dict) and have.get(key) != want:
                    raise ManifestError(
                        f"{m.path}: {block}.{key} {have.get(key)!r} differs from {fp_key} {want!r} in "
                        f"{settings} (the manifest was edited after generation)"
                    )
    if real_dir is not None and m.real_idx_sha256 is not None:
        idx = Path(real_dir) / "train.idx"
        if idx.is_file() and sha256_file(idx) != m.real_idx_sha256:
            raise ManifestError(
                f"{m.path} was made for a real folder whose train.idx had sha256 "
                f"{m.real_idx_sha256[:12]}...; {what} {real_dir} holds other data (its train.idx "
                "differs): use the manifest of a generation from this folder"
            )
        return
    if real_dir is None or m.real_rec is None:
        return
    given, made = Path(real_dir).resolve(), m.real_rec.resolve()
    if given == made or not made.is_dir():
        return
    a, b = made / "train.idx", given / "train.idx"
    if a.is_file() and b.is_file() and sha256_file(a) != sha256_file(b):
        raise ManifestError(
            f"{m.path} was made for the real folder {made}; {what} {real_dir} holds other data "
            "(its train.idx differs): use the manifest of a generation from this folder"
        )
