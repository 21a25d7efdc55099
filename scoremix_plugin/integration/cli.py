"""``scoremix merge`` and ``scoremix arcface-train`` (flags only; the work is in merge.py / launcher.py)."""

from __future__ import annotations

import argparse
import json

from .merge import CONFIG_DEFAULTS


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", required=True, help="the real InsightFace-layout folder (train.rec/.idx, .bin files)")
    p.add_argument("--synthetic", required=True, help="the generation manifest.json (or its folder)")
    p.add_argument("--out", required=True, help="output folder (built under a temporary name, then renamed)")
    p.add_argument("--name", default="scoremix_merged", help="name of the generated arcface_torch config (NAME.py)")
    p.add_argument("--arcface-root", default=None, help="also write the config to ROOT/configs/NAME.py")
    p.add_argument("--num-epoch", type=int, default=CONFIG_DEFAULTS["num_epoch"])
    p.add_argument("--warmup-epoch", type=int, default=CONFIG_DEFAULTS["warmup_epoch"])
    p.add_argument("--network", default=CONFIG_DEFAULTS["network"], help="host backbone name (r18 r34 r50 r100 ...)")
    p.add_argument("--batch-size", type=int, default=CONFIG_DEFAULTS["batch_size"], help="per GPU")
    p.add_argument("--lr", type=float, default=CONFIG_DEFAULTS["lr"])
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--no-progress", action="store_true")


def run_merge(args: argparse.Namespace) -> int:
    from ..io_utils import write_json_atomic
    from .merge import merge

    overrides = {
        "num_epoch": args.num_epoch,
        "warmup_epoch": args.warmup_epoch,
        "network": args.network,
        "batch_size": args.batch_size,
        "lr": args.lr,
    }
    summary = merge(
        args.real,
        args.synthetic,
        args.out,
        name=args.name,
        arcface_root=args.arcface_root,
        config_overrides=overrides,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.json:
        write_json_atomic(args.json, summary)
    print(json.dumps({k: summary[k] for k in ("num_classes", "num_image", "val_targets", "config")}))
    print(
        f"train it with the unmodified host: cd ARCFACE_ROOT && torchrun --nproc_per_node=N train_v2.py "
        f"configs/{args.name}  (config: {summary.get('host_config', f'{args.out}/{args.name}.py')})"
    )
    return 0


def add_arcface_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arcface-root",
        required=True,
        help="the recognition/arcface_torch folder of an insightface checkout (holds train_v2.py)",
    )
    p.add_argument("config", help="configs/NAME (as the host takes it), NAME, or a file inside ROOT/configs")
    p.add_argument("host_args", nargs=argparse.REMAINDER, help="passed on to train_v2.py (e.g. --local_rank 0)")


def run_arcface_train(args: argparse.Namespace) -> int:
    from .launcher import run_host

    return run_host(args.arcface_root, args.config, args.host_args)
