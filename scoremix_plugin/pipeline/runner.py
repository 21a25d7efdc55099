"""A small stage runner: stages in order, each skipped when its fingerprint and outputs say it is complete.

Knows nothing of ScoreMix: the stages (``stages.py``) are passed in, and each Stage carries its own
output folder and result type. After a stage's outputs are all written, ``OUT/.stages/<stage>.json`` is
written atomically with its *fingerprint* (a hash of the recipe settings it reads, the contents of the
config files it reads and the run ids of the stages it depends on), a new run id, its duration and its
result (JSON). A later run skips a stage whose marker matches and whose outputs exist; a stage that runs
again gets a new run id, so every stage after it runs again too. A marker of another format
(``MARKER_FORMAT``) is refused in one line that says to rerun with ``--force``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoremix_plugin.errors import ScoreMixError
from scoremix_plugin.io_utils import atomic_path, check_inside, sha256_file, write_json_atomic

MARKER_DIR = ".stages"
# Markers of another format (version 1 had no "format" key) are refused, not guessed at: rerun with --force.
MARKER_FORMAT = "scoremix-stage-marker/2"


class PipelineError(ScoreMixError, RuntimeError):
    """A recipe key, a stage name or a stage's inputs are wrong; the message names which."""


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], Any]  # does the work; returns its result (a dataclass or a JSON-able mapping)
    needs: tuple[str, ...]  # stages whose results it reads
    settings: Callable[[Context], Any]  # the recipe settings it reads (fingerprinted)
    outputs: Callable[[Context], Sequence[Path]]  # files that must exist when it is complete
    files: Callable[[Context], Sequence[Path]] = lambda ctx: ()  # config files it reads (hashed)
    help: str = ""
    folder: str | None = None  # its output folder under OUT (None: its name; "": OUT itself)
    result: type | None = None  # the dataclass its run returns (rebuilt from the marker); None: a dict


@dataclass
class Context:
    recipe: Any  # the filled recipe (an EasyDict with "_path")
    out: Path
    progress: bool = True
    markers: dict[str, dict] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)  # set by run_stages from the stages passed in

    @property
    def recipe_dir(self) -> Path:
        return Path(self.recipe._path).parent

    def resolve(self, rel: str | os.PathLike) -> Path:
        """A path from the recipe (relative to the recipe's folder)."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else (self.recipe_dir / p).resolve()

    def dir(self, stage: str) -> Path:
        """A stage's output folder (the Stage's ``folder``, else its name)."""
        s = self.stages.get(stage)
        return self.out / (stage if s is None or s.folder is None else s.folder)

    def result(self, stage: str) -> Any:
        """What an earlier stage returned, as its Stage's result type (rebuilt from its marker)."""
        if stage not in self.markers:
            raise PipelineError(f"stage '{stage}' has not completed in {self.out} (run it first)")
        summary = self.markers[stage]["summary"]
        s = self.stages.get(stage)
        return summary if s is None or s.result is None else from_json(s.result, summary)

    def adopt(self, other: Context, names: Sequence[str]) -> None:
        """Use ``other``'s finished stages ``names`` as this run's inputs (shared stages of an experiment)."""
        for name in names:
            if name not in other.markers:
                raise PipelineError(f"stage '{name}' has not completed in {other.out}")
            self.markers[name] = other.markers[name]
            if name in other.stages:
                self.stages.setdefault(name, other.stages[name])


def from_json(cls: type, summary: Mapping[str, Any]) -> Any:
    """A result dataclass from its marker's JSON (written by ``to_json`` of the same type)."""
    try:
        return cls(**summary)
    except TypeError as e:
        raise PipelineError(f"a stage marker does not hold a {cls.__name__} ({e}); rerun with --force") from None


def to_json(obj: Any) -> Any:
    """Results and settings as JSON values (dataclasses, paths, numpy / torch scalars); "_" keys dropped."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):
        return obj.item()
    return obj


def marker_path(out: Path, stage: str) -> Path:
    return out / MARKER_DIR / f"{stage}.json"


def read_marker(out: Path, stage: str, *, other_format: bool = False) -> dict | None:
    """The stage's marker, None when there is none (or a damaged one); one of another format raises
    PipelineError, unless ``other_format`` (then None: --force reruns the stage anyway)."""
    p = marker_path(out, stage)
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None  # a damaged marker means "not complete": the stage runs again
    if not isinstance(m, dict) or m.get("stage") != stage:
        return None
    if m.get("format") != MARKER_FORMAT:
        if other_format:
            return None
        raise PipelineError(
            f"{out}: stage '{stage}' was finished by an older scoremix (marker format "
            f"{m.get('format')!r}, this version reads {MARKER_FORMAT!r}); rerun with --force"
        )
    return m


def fingerprint(stage: Stage, ctx: Context) -> str:
    """Hash of what the stage reads: recipe settings, config file contents, upstream run ids."""
    files = {}
    for f in map(Path, stage.files(ctx)):
        if not f.is_file():
            raise PipelineError(f"stage '{stage.name}': config file not found: {f}")
        files[str(f)] = sha256_file(f)
    upstream = {}
    for dep in stage.needs:
        if dep not in ctx.markers:
            raise PipelineError(f"stage '{stage.name}' needs stage '{dep}', which has not completed in {ctx.out}")
        upstream[dep] = ctx.markers[dep]["run_id"]
    payload = {"stage": stage.name, "settings": to_json(stage.settings(ctx)), "files": files, "upstream": upstream}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def is_complete(stage: Stage, ctx: Context, fp: str) -> bool:
    m = read_marker(ctx.out, stage.name)
    return m is not None and m.get("fingerprint") == fp and all(Path(p).exists() for p in stage.outputs(ctx))


def _load_markers(stages: Sequence[Stage], ctx: Context, force: bool = False) -> None:
    ctx.stages.update({s.name: s for s in stages})
    for s in stages:
        m = read_marker(ctx.out, s.name, other_format=force)
        if m is not None:
            ctx.markers[s.name] = m


def run_stages(
    stages: Sequence[Stage],
    ctx: Context,
    *,
    only: str | None = None,
    start: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run (or skip) each stage in order; returns ``{stage: {"status": "ran"|"skipped", "seconds": s}}``.

    ``only``: rerun that stage alone (its inputs must be complete). ``start``: rerun it and all after.
    """
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise PipelineError(f"stage names must be unique: {names}")
    for opt, value in (("--stage", only), ("--from", start)):
        if value is not None and value not in names:
            raise PipelineError(f"{opt} {value!r}: no such stage; stages: {names}")
    forced = set(names) if force else {only} if only else set(names[names.index(start) :]) if start else set()
    _load_markers(stages, ctx, force)  # the markers of stages not run here are the inputs of those that are
    selected = [s for s in stages if only is None or s.name == only]
    status: dict[str, dict] = {}
    for i, stage in enumerate(selected, start=1):
        fp = fingerprint(stage, ctx)
        head = f"[pipeline {i}/{len(selected)}] {stage.name}"
        if stage.name not in forced and is_complete(stage, ctx, fp):
            seconds = ctx.markers[stage.name]["seconds"]
            log(f"{head}: complete, skipped (took {seconds:.1f} s when it ran)")
            status[stage.name] = {"status": "skipped", "seconds": seconds}
            continue
        log(f"{head}: running ({stage.help})")
        # A stage that fails half-way must not look complete next time under its old marker.
        marker_path(ctx.out, stage.name).unlink(missing_ok=True)
        ctx.markers.pop(stage.name, None)
        ctx.dir(stage.name).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = stage.run(ctx)
        seconds = time.perf_counter() - t0
        if stage.result is not None and not isinstance(result, stage.result):
            raise PipelineError(
                f"stage '{stage.name}' returned {type(result).__name__}, not its result type {stage.result.__name__}"
            )
        missing = [str(p) for p in stage.outputs(ctx) if not Path(p).exists()]
        if missing:
            raise PipelineError(f"stage '{stage.name}' finished without writing {missing}")
        _write_marker(ctx, stage.name, fp, seconds, to_json(result))
        status[stage.name] = {"status": "ran", "seconds": ctx.markers[stage.name]["seconds"]}
        log(f"{head}: done in {seconds:.1f} s")
    return status


def _write_marker(ctx: Context, name: str, fp: str, seconds: float, summary: Any, **extra: Any) -> None:
    marker = {
        "format": MARKER_FORMAT,
        "stage": name,
        "fingerprint": fp,
        "run_id": uuid.uuid4().hex,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summary,
        **extra,
    }
    write_json_atomic(marker_path(ctx.out, name), marker)
    ctx.markers[name] = marker


# Saved stages: a finished stage's outputs and result, copied out of OUT (e.g. committed beside an experiment's
# results) and installed into another OUT later, so an expensive stage is never run twice. Paths inside OUT are
# stored relative to it; the saved settings (its own and its upstream stages') must equal the new run's.

SAVED_FORMAT = "scoremix-saved-stages/1"
_OUT_TOKEN = "$OUT"


def _rebase(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return new + obj[len(old) :] if obj == old or obj.startswith(old + os.sep) else obj
    if isinstance(obj, list):
        return [_rebase(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    return obj


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    return []


def _settings_of(ctx: Context, name: str) -> Any:
    """What a stage is made from, wherever OUT lies: its recipe settings and the contents of the files it reads
    (e.g. the generator's weights), by sha256 (the fingerprint keys them by path, which moves with a clone)."""
    stage = ctx.stages[name]
    settings = json.loads(json.dumps(to_json(stage.settings(ctx)), sort_keys=True, default=str))
    return {"settings": settings, "files": sorted(sha256_file(f) for f in map(Path, stage.files(ctx)) if f.is_file())}


def save_stages(ctx: Context, names: Sequence[str], dest: str | os.PathLike) -> Path:
    """Copy the finished stages ``names`` (every output file, and each result) from ``ctx.out`` to ``dest``;
    returns ``dest/stages.json``. Every output must lie inside ``ctx.out``."""
    import shutil

    dest, out = Path(dest), Path(ctx.out).resolve()
    record: dict[str, Any] = {"format": SAVED_FORMAT, "stages": {}}
    for name in names:
        m = ctx.markers.get(name) or read_marker(ctx.out, name)
        if m is None or name not in ctx.stages:
            raise PipelineError(f"save_stages: stage '{name}' has not completed in {ctx.out}")
        stage, files = ctx.stages[name], {}
        # Its outputs, and every file its result names inside OUT (e.g. the centres' head.npz, an optional file).
        named = [Path(v).resolve() for v in _strings(m["summary"]) if v.startswith(str(out) + os.sep)]
        wanted = [Path(q).resolve() for q in stage.outputs(ctx)] + [f for f in named if f.is_file()]
        for f in dict.fromkeys(wanted):
            if out not in f.parents:
                raise PipelineError(f"save_stages: stage '{name}' output {f} lies outside {out}")
            rel = f.relative_to(out).as_posix()
            with atomic_path(dest / rel) as tmp:
                shutil.copyfile(f, tmp)
            files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        record["stages"][name] = {
            "settings": _settings_of(ctx, name),
            "upstream": {d: _settings_of(ctx, d) for d in stage.needs},
            "files": files,
            "seconds": m["seconds"],
            "finished": m["finished"],
            "summary": _rebase(m["summary"], str(out), _OUT_TOKEN),
        }
    path = dest / "stages.json"
    write_json_atomic(path, record)
    return path


def restore_stages(
    stages: Sequence[Stage], ctx: Context, src: str | os.PathLike, log: Callable[[str], None] = print
) -> list[str]:
    """Install the stages saved in ``src`` (``save_stages``) into ``ctx.out``, so ``run_stages(stages, ctx)``
    skips them.

    Their upstream stages that were not saved must have completed in ``ctx.out`` first (run them: a stage is
    installed only once everything it needs is). A saved stage is refused when its settings or an upstream
    stage's differ from this recipe's, or when a file's sha256 differs from the record. Returns the names
    installed (none already complete here are touched)."""
    import shutil

    src, out = Path(src), Path(ctx.out).resolve()
    meta = src / "stages.json"
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise PipelineError(f"{meta}: cannot read the saved stages ({e})") from None
    if record.get("format") != SAVED_FORMAT:
        raise PipelineError(f"{meta}: format {record.get('format')!r}, this version reads {SAVED_FORMAT!r}")
    _load_markers(stages, ctx)
    installed = []
    for name, saved in record["stages"].items():
        if name not in ctx.stages:
            raise PipelineError(f"{meta}: saved stage '{name}' is not a stage of this run ({sorted(ctx.stages)})")
        stage = ctx.stages[name]
        ready = all(d in ctx.markers for d in stage.needs)
        if name in ctx.markers and ready and is_complete(stage, ctx, fingerprint(stage, ctx)):
            continue
        for which, settings in ((name, saved["settings"]), *saved["upstream"].items()):
            if _settings_of(ctx, which) != settings:
                raise PipelineError(
                    f"{meta}: stage '{name}' was saved under other '{which}' settings or input files than this run's; "
                    f"delete {src} to run it again"
                )
        for rel, info in saved["files"].items():
            # stages.json is read from disk: a path in it must not climb out of the saved folder or OUT
            f = check_inside(src, rel, str(meta))
            if not f.is_file() or sha256_file(f) != info["sha256"]:
                raise PipelineError(f"{f}: missing, or its sha256 differs from {meta}'s record")
            with atomic_path(check_inside(out, rel, str(meta))) as tmp:
                shutil.copyfile(f, tmp)
        fp = fingerprint(stage, ctx)  # raises when an upstream stage has not completed here
        summary = _rebase(saved["summary"], _OUT_TOKEN, str(out))
        _write_marker(ctx, name, fp, saved["seconds"], summary, restored_from=str(src), ran=saved["finished"])
        installed.append(name)
        log(f"[restore] {name}: installed from {src} (ran {saved['seconds']:.0f} s on {saved['finished']})")
    return installed


def plan(stages: Sequence[Stage], ctx: Context) -> dict[str, str]:
    """What a plain run would do with each stage: skip it (complete) or run it, and why."""
    _load_markers(stages, ctx)
    will_run: set[str] = set()
    states = {}
    for s in stages:
        m = ctx.markers.get(s.name)
        if m is None:
            state = "not run"
        elif will_run & set(s.needs):
            state = "will run again (an input stage runs again)"
        elif is_complete(s, ctx, fingerprint(s, ctx)):
            states[s.name] = f"complete ({m['seconds']:.1f} s, finished {m['finished']})"
            continue
        else:
            state = "will run again (its settings, config files or outputs changed)"
        will_run.add(s.name)
        states[s.name] = state
    return states
