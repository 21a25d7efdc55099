"""Run the host's unchanged ``train_v2.py`` with the ScoreMix loader: ``scoremix arcface-train``.

    scoremix arcface-train --arcface-root ~/insightface/recognition/arcface_torch configs/casia_scoremix_r50
    torchrun --nproc_per_node=8 -m scoremix_plugin arcface-train --arcface-root ROOT configs/NAME

Steps, in the order that makes them work:
1. chdir into the checkout and put it first on ``sys.path``: the host imports ``dataset``,
   ``backbones``, ``utils`` ... by top-level name and reads ``configs/NAME`` relative to its folder.
2. ``mxnet_compat.install()``: the host imports mxnet at the top of ``dataset.py`` and
   ``eval/verification.py``; the shim stands in when no working mxnet is installed.
3. Load the config the host's way (its own ``utils.utils_config.get_config``: ``configs.base`` updated
   with ``configs.NAME``). The merged object is the one ``train_v2.py`` gets back later.
4. With ``config.dataset == "scoremix"``: build (and so check) the training data now, before the host
   opens its process group, and set ``dataset.get_dataloader`` on the host's module. This must happen
   BEFORE ``train_v2.py`` runs: it does ``from dataset import get_dataloader`` when it starts, and a
   later patch would have no effect and raise no error. Other configs leave the host's loader alone.
5. Run ``train_v2.py`` as ``__main__`` (it opens its process group at import) with
   ``sys.argv = [train_v2.py, configs/NAME, *host_args]``.
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError, validate_scoremix_block
from ..errors import MissingInputError


def _say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"[scoremix] {message}", file=sys.stderr, flush=True)


def host_config_arg(config: str, root: Path) -> str:
    """``configs/NAME`` (the only form the host's get_config accepts) from NAME, configs/NAME[.py] or a path."""
    p = Path(config)
    if p.is_absolute() or (root / p).is_file() or (root / p).with_suffix(".py").is_file():
        full = p if p.is_absolute() else root / p
        try:
            rel = full.resolve().relative_to((root / "configs").resolve())
        except ValueError:
            raise ConfigError(f"{config}: the host only reads configs inside {root / 'configs'}") from None
        name = rel.as_posix().removesuffix(".py")
    else:
        name = p.as_posix().removeprefix("configs/").removesuffix(".py")
    if "/" in name:
        raise ConfigError(
            f"config {config!r}: the host reads configs only from {root / 'configs'} (copy the file "
            "there and pass configs/NAME)"
        )
    if not (root / "configs" / f"{name}.py").is_file():
        raise ConfigError(f"config {config!r}: {root / 'configs' / (name + '.py')} does not exist")
    return f"configs/{name}"


def _host_names(root: Path) -> set[str]:
    """Top-level module names the checkout provides (``dataset``, ``configs``, ``utils``, ...)."""
    names = {p.stem for p in root.glob("*.py")}
    names |= {d.name for d in root.iterdir() if d.is_dir() and (any(d.glob("*.py")) or (d / "__init__.py").exists())}
    return names


def forget_host_modules(root: Path) -> None:
    """Drop cached modules named like the checkout's, so the host's own files are what gets imported.

    Also makes a second launch in one process start from fresh ``configs.base`` (the host updates
    that module's ``config`` in place).
    """
    names = _host_names(root)
    for mod in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[mod]


def load_host_config(config_arg: str) -> Any:
    """The merged config exactly as the host gets it (its own get_config; the documented rule otherwise)."""
    try:
        utils_config = importlib.import_module("utils.utils_config")
        get_config = utils_config.get_config
    except (ImportError, AttributeError):
        get_config = None
    if get_config is not None:
        return get_config(config_arg)
    # The host's rule (arcface_torch.md): configs.base, then configs.NAME, shallow update in place.
    base = importlib.import_module("configs.base").config
    job = importlib.import_module("configs." + config_arg.removeprefix("configs/")).config
    base.update(job)
    return base


def install_scoremix_loader(cfg: Any, source: str) -> Any:
    """Check the scoremix config, build its data and replace the host's ``dataset.get_dataloader``."""
    from ..data.loader import build_train_dataset
    from . import loader

    validate_scoremix_block(cfg, source=source)
    if cfg.get("dali"):
        raise ConfigError(f"{source}: config.dali = True is not supported with dataset = 'scoremix'; set it False")
    dataset = build_train_dataset(cfg, source=source)
    host_dataset = importlib.import_module("dataset")
    bound = functools.partial(loader.get_dataloader, cfg=cfg, source=source, dataset=dataset)
    functools.update_wrapper(bound, loader.get_dataloader)
    host_dataset.get_dataloader = bound
    return dataset


def run_host(arcface_root: str | os.PathLike, config: str, host_args: Sequence[str] = ()) -> int:
    """Steps 1-5 of the module docstring. Restores cwd, sys.argv and sys.path afterwards."""
    from . import mxnet_compat

    root = Path(arcface_root).expanduser().resolve()
    train_py = root / "train_v2.py"
    if not train_py.is_file():
        raise MissingInputError(
            f"--arcface-root {arcface_root}: no train_v2.py there (expected the "
            "recognition/arcface_torch folder of an insightface checkout)"
        )
    config_arg = host_config_arg(config, root)
    source = str(root / f"{config_arg}.py")
    saved_argv, saved_cwd, saved_path = sys.argv[:], os.getcwd(), sys.path[:]
    try:
        os.chdir(root)
        sys.path.insert(0, str(root))
        forget_host_modules(root)
        shim = mxnet_compat.install()
        # print, not logging: the host configures the root logger itself once it runs.
        _say(f"mxnet: {'scoremix shim' if shim else 'the installed mxnet'}")
        cfg = load_host_config(config_arg)
        if cfg.get("dataset") == "scoremix":
            ds = install_scoremix_loader(cfg, source)
            _say(f"scoremix loader installed for {config_arg}: {getattr(ds, 'summary', dict)()}")
        sys.argv = [str(train_py), config_arg, *host_args]
        runpy.run_path(str(train_py), run_name="__main__")
    finally:
        # The host's top-level names (dataset, configs, utils, ...) must not shadow anything imported later.
        forget_host_modules(root)
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
    return 0
