"""Small file helpers shared by every writer: atomic writes, checksums, safe checkpoint loads, output guards.

Every file the project writes goes through a temporary name in the same folder and is renamed
when complete, so an interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scoremix_plugin.errors import CheckpointError, MissingInputError, OutputExistsError, OutputWriteError


def tmp_name(path: str | os.PathLike) -> Path:
    """The temporary sibling a writer uses before renaming to ``path`` (same folder, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success fsync + rename it to ``path``, on error remove it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temporary name (a killed run keeps the previous checkpoint intact)."""
    import torch

    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as e:
        # A full disk reaches torch's zip writer as RuntimeError("... unexpected pos ..."): a failed write,
        # not a bug. atomic_path removed the partial temporary file; the previous checkpoint is untouched.
        if isinstance(e, OutputWriteError):
            raise
        reason = (
            e.strerror
            if isinstance(e, OSError) and e.strerror
            else str(e).strip().splitlines()[0][:160]
            if str(e).strip()
            else type(e).__name__
        )
        raise OutputWriteError(
            f"{path}: could not save ({reason}; is the disk full?); "
            "the previous file under that name, if any, is unchanged"
        ) from e


def load_torch_safe(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint as untrusted input: ``weights_only=True`` runs no code from the file."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        # torch's message is a page long and suggests weights_only=False, which would run code from the
        # file: keep only the reason (the line after "WeightsUnpickler error:", else the first line).
        text = str(e)
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text.strip() else ""
        raise CheckpointError(
            f"{p}: not a checkpoint torch.load(weights_only=True) can read ({type(e).__name__}: {reason[:200]})"
        ) from e


def atomic_tempdir(final_dir: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A temporary folder beside ``final_dir`` (same file system, so it can be renamed into place)."""
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{final.name}.tmp-", dir=final.parent)


def refuse_output_overlapping_inputs(
    out: str | os.PathLike, inputs: dict[str, Any], *, what: str = "--out", may_contain: bool = False
) -> None:
    """Refuse an output folder that is, holds or lies inside one of the command's inputs.

    Writing there would replace or mix into the data the command reads (``merge --out`` onto the real
    folder, onto a shard of its own synthetic input, ``generate --out`` into the real folder).
    ``may_contain``: an output that holds an input is fine (the command only adds its own named files
    beside it, e.g. ``rec from-folder images/ .`` writes train.rec next to images/).
    """
    o = Path(out).resolve()
    for flag, path in inputs.items():
        if path is None:
            continue
        i = Path(path).resolve()
        if o == i or i in o.parents or (o in i.parents and not may_contain):
            relation = "is" if o == i else ("lies inside" if i in o.parents else "contains")
            raise OutputExistsError(
                f"{what} {out} {relation} {flag} {path}: the output must not overlap an input "
                "the command reads (choose another folder)"
            )


def refuse_existing_output(
    folder: str | os.PathLike, patterns: tuple[str, ...], *, hint: str, what: str = "--out"
) -> None:
    """Refuse to write into ``folder`` when it already holds files matching ``patterns`` (a user's data)."""
    f = Path(folder)
    if not f.is_dir():
        return
    hits = sorted({p.name for pat in patterns for p in f.glob(pat)})
    if hits:
        more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
        raise OutputExistsError(f"{what} {f} already holds {', '.join(hits[:5])}{more}; {hint}")


def refuse_output_file(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: dict[str, Any] | None = None,
    folders: dict[str, Any] | None = None,
    what: str = "--out",
) -> None:
    """The one rule for a command that writes one file: never over an input (not even with ``--overwrite``),
    never into a folder the command reads (``folders``: flag -> folder; not even with ``--overwrite``), and
    never over an existing file unless ``overwrite`` (the user says the file is theirs to replace)."""
    o = Path(out)
    if folders:
        refuse_output_overlapping_inputs(out, folders, what=what)
    for flag, path in (inputs or {}).items():
        if path is not None and Path(path).exists() and o.resolve() == Path(path).resolve():
            raise OutputExistsError(f"{what} {out} is {flag} {path}: the command reads it; write elsewhere")
    if o.is_dir():
        raise OutputExistsError(f"{what} {out} is a folder; name a file")
    if o.exists() and not overwrite:
        raise OutputExistsError(f"{what} {out} already exists; choose another name or pass --overwrite")


def refuse_output_folder(
    out: str | os.PathLike,
    patterns: tuple[str, ...],
    *,
    overwrite: bool = False,
    inputs: dict[str, Any] | None = None,
    what: str = "--out",
    may_contain: bool = False,
) -> None:
    """The same rule for a command that writes named files into a folder (a report, an image tree): never
    onto, into or around an input (``inputs``: flag -> path; ``may_contain`` as in
    :func:`refuse_output_overlapping_inputs`), and never over files matching ``patterns`` unless ``overwrite``."""
    if Path(out).exists() and not Path(out).is_dir():
        raise OutputExistsError(f"{what} {out} is a file; name a folder")
    refuse_output_overlapping_inputs(out, inputs or {}, what=what, may_contain=may_contain)
    if not overwrite:
        refuse_existing_output(out, patterns, what=what, hint="choose another folder or pass --overwrite")


def check_state_tensors(
    state: Any, path: str | os.PathLike, expected: dict[str, tuple[int, ...]] | None = None, prefix: str = ""
) -> None:
    """A loaded state dict is a dict of tensors, finite, with the ``expected`` shapes (when given), else a
    CheckpointError naming the file and the tensor (a wrong shape would broadcast silently into sums)."""
    import torch

    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: {prefix.rstrip('.') or 'state'} is a {type(state).__name__}, not a dict of tensors"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: '{prefix}{key}' is a {type(value).__name__}, not a tensor")
        want = (expected or {}).get(key)
        if want is not None and tuple(value.shape) != tuple(want):
            raise CheckpointError(
                f"{path}: '{prefix}{key}' has shape {list(value.shape)}, the network expects {list(want)}"
            )
    check_finite_weights(state, path, prefix=prefix)


def check_finite_weights(state: Any, path: str | os.PathLike, prefix: str = "") -> None:
    """Refuse a state dict with NaN/inf in a floating tensor (a diverged run), naming the file and the key.

    Every value computed from such weights is NaN: centres, embeddings and samples would be written as
    if they were results.
    """
    import torch

    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            check_finite_weights(value, path, prefix=f"{name}.")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{path}: key '{name}' holds {bad} non-finite value(s) (NaN/inf) of {value.numel()}: "
                "the weights are unusable (did the training run diverge?)"
            )


def pyplot():
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display, also on a headless server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG, written atomically; the figure is closed (pyplot keeps every open one)."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` joined by "/" (sha256: the same on every machine, process and run, unlike
    Python's salted ``hash()``); per-item seeds (an image's noise, an epoch's data order) come from here."""
    key = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


def check_inside(root: str | os.PathLike, rel: str, where: str) -> Path:
    """``root / rel`` for a path read from a list file, refusing one that is absolute or climbs out of ``root``
    with ``..`` (a list file names images under its root; elsewhere is never what it means, and such a file's
    content must not be read or quoted). ``where``: the list file and line, e.g. ``meta.txt:12``."""
    from scoremix_plugin.errors import InputError

    r = Path(rel)
    if r.is_absolute() or ".." in r.parts:
        raise InputError(
            f"{where}: image path {rel!r} is {'absolute' if r.is_absolute() else 'outside its root'}; "
            f"entries must be relative paths under {root}"
        )
    return Path(root) / r
