"""``scoremix train-generator``, ``scoremix export-conditions`` and ``scoremix sample``."""

from __future__ import annotations

import argparse
from pathlib import Path

from scoremix_plugin.errors import InputError
from scoremix_plugin.generation.settings import GUIDANCE, MIX_SPACES, SAMPLER, SOLVERS


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# train-generator


def add_train_generator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help="generator config file (config = edict(rec=..., ...)); keys in "
        "scoremix_plugin/generation/train.py GENERATOR_DEFAULTS",
    )
    parser.add_argument("--output", help="override config.output")
    parser.add_argument("--total-steps", type=int, help="override config.total_steps")
    parser.add_argument("--duration", type=float, help="override config.duration (seconds)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from OUTPUT/generator.pt, or from the given checkpoint",
    )
    parser.add_argument("--device", help="override config.device (e.g. cpu, cuda)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an output folder that holds a generator (replacing it)",
    )
    parser.add_argument(
        "--guide-preset",
        help="then train an autoguidance guide: this smaller preset on the same "
        "recipe for --guide-fraction of the steps, into OUTPUT/guide (generation/guide.py)",
    )
    parser.add_argument("--guide-fraction", type=float, default=0.25, help="the guide's share of the main run's steps")


def run_train_generator(args: argparse.Namespace) -> int:
    import os

    from scoremix_plugin.config import merge_config, read_config_file
    from scoremix_plugin.generation.train import GENERATOR_DEFAULTS, train_generator
    from scoremix_plugin.io_utils import refuse_existing_output, refuse_output_overlapping_inputs

    overrides = {
        k: v
        for k, v in (
            ("output", args.output),
            ("total_steps", args.total_steps),
            ("duration", args.duration),
            ("resume", args.resume),
            ("device", args.device),
        )
        if v is not None
    }
    job = read_config_file(args.config)
    cfg = merge_config({**job, **overrides}, GENERATOR_DEFAULTS, source=str(args.config), warn_unknown=False)
    if os.environ.get("RANK", "0") == "0" and cfg.rec is not None:  # rank 0 decides before anyone writes
        refuse_output_overlapping_inputs(cfg.output, {"config.rec": cfg.rec}, what="config.output")
        if not cfg.resume and not args.overwrite:
            refuse_existing_output(
                cfg.output,
                ("generator.pt", "generator-*.pt"),
                what="config.output",
                hint="pass --resume to continue that run, or --overwrite to start a new one over it",
            )
    summary = train_generator(args.config, **overrides)
    if summary["rank"] == 0:
        print(
            f"step {summary['step']}, loss {summary['final_loss']:.4f}, checkpoint {summary['checkpoint']}"
            + (" (stopped at config.duration)" if summary["stopped_early"] else "")
        )
    if args.guide_preset:
        from scoremix_plugin.config import read_config_file
        from scoremix_plugin.generation.guide import train_guide

        main = read_config_file(args.config) | overrides
        main.pop("resume", None)
        guide = train_guide(main, preset=args.guide_preset, fraction=args.guide_fraction)
        if guide["rank"] == 0:
            print(
                f"guide ({args.guide_preset}): step {guide['step']}, checkpoint {guide['checkpoint']} "
                "(use: scoremix generate --guidance autoguidance --guide CHECKPOINT)"
            )
    return 0


# export-conditions


def add_export_conditions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="generator checkpoint (generator.pt)")
    parser.add_argument("--out", required=True, help="centres file to write (.npz, space 'condition')")
    parser.add_argument("--raw", action="store_true", help="the raw weights' table instead of the EMA's")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run_export_conditions(args: argparse.Namespace) -> int:
    from scoremix_plugin.generation.conditions import export_conditions
    from scoremix_plugin.io_utils import refuse_output_file

    refuse_output_file(args.out, overwrite=args.overwrite, inputs={"--ckpt": args.ckpt})
    c = export_conditions(args.ckpt, args.out, ema=not args.raw)
    print(f"{args.out}: {len(c)} class embeddings of dimension {c.centres.shape[1]} (null class excluded)")
    return 0


# sample


def check_sample_flags(args: argparse.Namespace, weights: list[float]) -> None:
    """The flags' values, checked before the checkpoint loads; messages name the flag to change."""
    import math

    k = len(args.classes)
    if k < 1:
        raise InputError("--classes is empty")
    if len(weights) != k:
        raise InputError(f"--weights has {len(weights)} values for {k} classes (--classes)")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or abs(sum(weights) - 1) > 1e-5:
        # The sampler can mix non-convex weights for experiments (Python API); the CLI keeps the method's mixes.
        raise InputError(
            f"--weights {','.join(map(str, weights))}: must be >= 0 and sum to 1 (a convex mix), "
            f"e.g. --weights {','.join(['%.3g' % (1 / k)] * k)}"
        )
    for flag, value in (("--n", args.n), ("--steps", args.steps)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if args.mix_window is not None and (len(args.mix_window) != 2 or not 0 <= args.mix_window[0] <= args.mix_window[1]):
        raise InputError(
            f"--mix-window takes two values sigma_lo,sigma_hi with 0 <= sigma_lo <= sigma_hi, got {args.mix_window}"
        )
    if not 0 <= args.outside_window < k:
        raise InputError(f"--outside-window must be a column of --classes (0..{k - 1}), got {args.outside_window}")
    if args.guidance == "autoguidance" and not args.guide:
        raise InputError("--guidance autoguidance needs --guide (a weaker generator checkpoint)")


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="generator checkpoint")
    parser.add_argument("--classes", required=True, type=_int_list, help="source classes, e.g. 3,17")
    parser.add_argument("--weights", type=_float_list, help="mixing weights (default: uniform), e.g. 0.5,0.5")
    parser.add_argument("--n", type=int, default=8, help="images per row (one noise seed per column)")
    parser.add_argument("--out", required=True, help="grid PNG (a JSON with the settings is written beside it)")
    parser.add_argument("--steps", type=int, default=SAMPLER.steps)
    parser.add_argument("--solver", choices=SOLVERS, default=SAMPLER.solver)
    parser.add_argument("--guidance", choices=GUIDANCE, default=SAMPLER.guidance)
    parser.add_argument("--guidance-scale", type=float, default=SAMPLER.guidance_scale, help="w; 1 = no guidance")
    parser.add_argument("--guide", help="weaker checkpoint for --guidance autoguidance")
    parser.add_argument("--mix-window", type=_float_list, help="sigma_lo,sigma_hi: mix only in this noise range")
    parser.add_argument(
        "--outside-window",
        type=int,
        default=0,
        help="with --mix-window: the column of --classes sampled alone outside the window",
    )
    parser.add_argument(
        "--mix-space",
        choices=("both", *MIX_SPACES),
        default="both",
        help="rows of the mix: ScoreMix's score mixing (--weights), AugGen's condition mixing "
        "(--condition-weights), or both one under the other (same noise per column)",
    )
    parser.add_argument(
        "--condition-weights",
        type=_float_list,
        help="class-embedding coefficients for the condition mix (default 0.7 each: AugGen's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=SAMPLER.bf16, help="bfloat16 autocast for the network"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out grid and its .json")


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from scoremix_plugin.generation.checkpoint import load_generator
    from scoremix_plugin.generation.images import save_grid
    from scoremix_plugin.generation.sampler import image_generator, sample
    from scoremix_plugin.io_utils import refuse_output_file, write_json_atomic

    k = len(args.classes)
    weights = args.weights or [1.0 / k] * k
    check_sample_flags(args, weights)
    inputs = {"--ckpt": args.ckpt, "--guide": args.guide}
    refuse_output_file(args.out, overwrite=args.overwrite, inputs=inputs)
    refuse_output_file(
        Path(args.out).with_suffix(".json"), overwrite=args.overwrite, inputs=inputs, what="--out's settings file"
    )
    amp = torch.bfloat16 if args.bf16 else None
    denoiser, _ = load_generator(args.ckpt, device=args.device, amp=amp)
    bad = [c for c in args.classes if not 0 <= c < denoiser.num_classes]
    if bad:
        raise InputError(
            f"--classes {','.join(map(str, args.classes))}: class(es) {bad} outside the generator's "
            f"{denoiser.num_classes} classes 0..{denoiser.num_classes - 1} ({args.ckpt})"
        )
    guide = load_generator(args.guide, device=args.device, amp=amp)[0] if args.guide else None
    window = tuple(args.mix_window) if args.mix_window else None
    outside = args.outside_window
    common = dict(
        num_steps=args.steps,
        solver=args.solver,
        guidance=args.guidance,
        guidance_scale=args.guidance_scale,
        guide=guide,
    )
    # Same seeds per column: every row starts from the same noise, so rows differ only by condition.
    gens = lambda: [image_generator(args.seed, 0, j, args.device) for j in range(args.n)]  # noqa: E731
    rows = []
    for c in args.classes:  # each source class alone
        rows.append(sample(denoiser, torch.full((args.n, 1), c), torch.ones(args.n, 1), generators=gens(), **common))
    cond_weights = args.condition_weights or [0.7] * k
    if len(cond_weights) != k:
        raise InputError(f"--condition-weights has {len(cond_weights)} values for {k} classes")
    names = [f"class {c}" for c in args.classes]
    spaces = ("score", "condition") if args.mix_space == "both" else (args.mix_space,)
    for space in spaces if k > 1 else ():  # the mix(es), from the same noise as the class rows
        w = weights if space == "score" else cond_weights
        rows.append(
            sample(
                denoiser,
                torch.tensor([args.classes] * args.n),
                torch.tensor([w] * args.n),
                generators=gens(),
                mix_window=window,
                outside_window=outside,
                mix_space=space,
                **common,
            )
        )
        names.append(f"{space} mix")
    save_grid(args.out, torch.cat(rows), ncol=args.n)
    write_json_atomic(
        Path(args.out).with_suffix(".json"),
        {
            "checkpoint": str(args.ckpt),
            "rows": names,
            "mix_space": args.mix_space,
            "condition_weights": cond_weights,
            "classes": args.classes,
            "weights": weights,
            "n": args.n,
            "seed": args.seed,
            "steps": args.steps,
            "solver": args.solver,
            "guidance": args.guidance,
            "guidance_scale": args.guidance_scale,
            "guide": args.guide,
            "mix_window": list(window) if window else None,
            "outside_window": outside,
        },
    )
    print(f"{args.out}: {len(rows)} rows x {args.n}")
    return 0
