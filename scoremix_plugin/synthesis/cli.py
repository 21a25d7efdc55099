"""``scoremix select``, ``scoremix generate`` and ``scoremix align``: flags, then one stage function each.

Examples::

    scoremix select --centres centres.npz --strategy far --num-identities 2000 --out pairs.csv
    scoremix generate --ckpt generator.pt --pairs pairs.csv --real data/real --images-per-identity 50 --out syn
    torchrun --nproc_per_node=2 -m scoremix_plugin generate ...   (shards split round-robin over ranks)
    scoremix align --a cond.npz --b centres.npz --out align/
"""

from __future__ import annotations

import argparse
import math

from scoremix_plugin.checks import number_arg
from scoremix_plugin.errors import InputError
from scoremix_plugin.generation.settings import GUIDANCE, MIX_SPACES, SAMPLER, SOLVERS
from scoremix_plugin.synthesis.select import STRATEGIES


def _window(flag: str):
    """argparse type of a sigma range 'lo,hi' for ``flag`` (finite, 0 <= lo <= hi)."""

    def parse(text: str | None):
        if text is None:
            return None
        try:
            lo, hi = (float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected two numbers 'sigma_lo,sigma_hi'") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: need 0 <= sigma_lo <= sigma_hi")
        return (lo, hi)

    return parse


def _weights(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mix-weights {text!r}: expected comma-separated numbers") from None
    if not values:
        raise argparse.ArgumentTypeError("--mix-weights: no values")
    from scoremix_plugin.synthesis.generate import check_mix_weights

    try:
        check_mix_weights(values)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return values


# ----------------------------------------------------------------------------------------------
# select


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--centres", required=True, help="centres .npz (scoremix embed / export-conditions)")
    p.add_argument("--strategy", choices=STRATEGIES, default="far")
    p.add_argument("--num-identities", type=int, required=True, help="new identities to choose")
    p.add_argument("--max-uses", type=int, default=1, help="how many identities one real class may join")
    p.add_argument("--k", type=int, default=2, help="classes per identity (2 = pairs)")
    p.add_argument("--weights", default=None, help="mixing weights 'w_a,w_b,...' (convex; default 1/k each)")
    p.add_argument("--seed", type=int, default=0, help="random strategy / random tuple growth")
    p.add_argument("--chunk-size", type=int, default=4096, help="rows per similarity block")
    p.add_argument("--margin", type=int, default=8, help="partners kept per class beyond --max-uses")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--out", required=True, help="pairs CSV (its settings go to OUT.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out CSV and its OUT.json")


def run_select(args) -> int:
    from scoremix_plugin.io_utils import refuse_output_file
    from scoremix_plugin.synthesis.select import meta_path, parse_weights, run_selection

    refuse_output_file(args.out, overwrite=args.overwrite, inputs={"--centres": args.centres})
    refuse_output_file(
        meta_path(args.out), overwrite=args.overwrite, inputs={"--centres": args.centres}, what="--out's settings file"
    )
    for flag, value, low in (
        ("--num-identities", args.num_identities, 1),
        ("--max-uses", args.max_uses, 1),
        ("--k", args.k, 2),
        ("--chunk-size", args.chunk_size, 1),
        ("--margin", args.margin, 0),
    ):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    weights = parse_weights(args.weights, args.k)
    sel = run_selection(
        args.centres,
        args.out,
        strategy=args.strategy,
        num_identities=args.num_identities,
        max_uses=args.max_uses,
        k=args.k,
        weights=weights,
        seed=args.seed,
        chunk_size=args.chunk_size,
        margin=args.margin,
        device=args.device,
    )
    d = sel.distance
    print(
        f"chose {len(sel)} identities ({args.strategy}, k={sel.k}, max uses {args.max_uses}); distance "
        f"min {d.min():.4f} mean {d.mean():.4f} max {d.max():.4f} -> {args.out}"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# generate


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="generator checkpoint (scoremix train-generator)")
    p.add_argument("--pairs", required=True, help="pairs CSV from scoremix select")
    p.add_argument("--real", required=True, help="the real RecordIO folder (its classes come first)")
    p.add_argument("--images-per-identity", type=int, required=True)
    p.add_argument("--shard-size", type=int, default=1000, help="identities per shard")
    # The sampler's defaults: generation.settings.SamplerSettings.
    p.add_argument("--steps", type=int, default=SAMPLER.steps)
    p.add_argument(
        "--solver",
        choices=SOLVERS,
        default=SAMPLER.solver,
        help="heun (2N-1 evaluations), euler or dpm2m (N each; dpm2m is 2nd order)",
    )
    p.add_argument("--guidance", choices=GUIDANCE, default=SAMPLER.guidance)
    p.add_argument(
        "--guidance-scale", type=number_arg("--guidance-scale", lo=0, hi=100), default=SAMPLER.guidance_scale
    )
    p.add_argument("--guide", default=None, help="reference generator for autoguidance")
    p.add_argument(
        "--mix-window",
        type=_window("--mix-window"),
        default=SAMPLER.mix_window,
        help="'sigma_lo,sigma_hi': mix only inside; outside, the pair's first class alone (K - 1 fewer network "
        "inputs per stage there)",
    )
    p.add_argument(
        "--guidance-interval",
        type=_window("--guidance-interval"),
        default=SAMPLER.guidance_interval,
        help="'sigma_lo,sigma_hi': guide only where lo < sigma <= hi (the reference is not evaluated "
        "outside: fewer network inputs)",
    )
    p.add_argument(
        "--mix-space",
        choices=MIX_SPACES,
        default=MIX_SPACES[0],
        help="score: mix denoiser outputs (ScoreMix); condition: one forward on the weighted class embeddings (AugGen)",
    )
    p.add_argument(
        "--mix-weights",
        type=_weights,
        default=None,
        help="mixing weights for every identity instead of the pairs file's, e.g. 0.7,0.7 (AugGen's "
        "condition weights; score mixing needs convex ones)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=SAMPLER.batch_size, help="images per sampler call")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=SAMPLER.bf16,
        help="run the network under bfloat16 autocast",
    )
    p.add_argument(
        "--embedder",
        default=None,
        help="recogniser (.onnx / .pt): the dataset report (OUT/report/) and its quality gate after generation",
    )
    p.add_argument("--network", default=None, help="backbone name for a .pt embedder")
    p.add_argument("--no-grids", action="store_true", help="skip the per-shard sample grid PNGs")
    p.add_argument(
        "--drop-leaks",
        action="store_true",
        help="with --embedder: write OUT/leak-free/ without identities that leak (datareport.filter)",
    )
    from scoremix_plugin.datareport.cli import add_leak_arguments

    add_leak_arguments(p)  # --targets / --bins / --far: the dataset report and quality gate after generation
    p.add_argument("--out", required=True)


def run_generate(args) -> int:
    from scoremix_plugin.synthesis.generate import GenerateSettings, generate

    if args.drop_leaks and not args.embedder:
        from scoremix_plugin.datareport.report import ReportError

        raise ReportError("--drop-leaks needs --embedder (the recogniser that judges leaks)")
    settings = GenerateSettings(
        ckpt=args.ckpt,
        pairs=args.pairs,
        real=args.real,
        images_per_identity=args.images_per_identity,
        shard_size=args.shard_size,
        steps=args.steps,
        solver=args.solver,
        guidance=args.guidance,
        guidance_scale=args.guidance_scale,
        guide=args.guide,
        mix_window=args.mix_window,
        seed=args.seed,
        guidance_interval=args.guidance_interval,
        batch_size=args.batch_size,
        bf16=args.bf16,
        mix_space=args.mix_space,
        mix_weights=tuple(args.mix_weights) if args.mix_weights else None,
    )
    manifest = generate(settings, args.out, device=args.device, grids=not args.no_grids)
    if manifest is None:  # a non-zero rank
        return 0
    print(
        f"{manifest.num_synthetic_classes} identities, {manifest.num_synthetic_images} images in "
        f"{len(manifest.shards)} shard(s) -> {manifest.path}"
    )
    if args.embedder:
        from scoremix_plugin.datareport.cli import bins_from_args
        from scoremix_plugin.datareport.filter import check_generation

        report, filtered = check_generation(
            args.out,
            args.embedder,
            network=args.network,
            real=args.real,
            bins=bins_from_args(args, args.real),
            far=args.far,
            drop_leaks=args.drop_leaks,
            device=args.device,
        )
        print(report.gate.text())
        if filtered is not None:
            print(
                f"dropped {len(filtered.extra['dropped'])} leaking identities, kept {filtered.num_synthetic_classes} "
                f"-> {args.out}/leak-free/manifest.json"
            )
    return 0


# ----------------------------------------------------------------------------------------------
# align


def add_align_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", required=True, help="centres .npz (e.g. cond.npz)")
    p.add_argument("--b", required=True, help="centres .npz (e.g. centres.npz)")
    p.add_argument("--k", type=int, default=10, help="neighbours for mutual k-NN")
    p.add_argument("--permutations", type=int, default=3, help="shuffled-label baselines to average")
    p.add_argument("--max-items", type=int, default=4000, help="rows used by RBF CKA (n x n kernels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for alignment.json + alignment.png")
    p.add_argument("--json", default=None, help="machine-readable summary")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file / --out's alignment files")


def run_align(args) -> int:
    from scoremix_plugin.io_utils import refuse_output_file, refuse_output_folder
    from scoremix_plugin.synthesis.align import run_alignment

    inputs = {"--a": args.a, "--b": args.b}
    if args.out:
        refuse_output_folder(
            args.out, ("alignment.json", "alignment.png"), overwrite=args.overwrite, inputs=inputs, may_contain=True
        )
    if args.json:
        refuse_output_file(args.json, overwrite=args.overwrite, inputs=inputs, what="--json")
    for flag, value, low in (
        ("--k", args.k, 1),
        ("--permutations", args.permutations, 0),
        ("--max-items", args.max_items, 3),
    ):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")

    res = run_alignment(
        args.a,
        args.b,
        out_dir=args.out,
        json_path=args.json,
        k=args.k,
        permutations=args.permutations,
        max_items=args.max_items,
        seed=args.seed,
    )

    def f(key):
        v = res[key]
        return "n/a" if v is None else f"{v:.3f}"

    print(
        f"{res['num_matched']} matched classes: linear CKA {f('linear_cka')} (shuffled {f('linear_cka_shuffled')}), "
        f"RBF CKA {f('rbf_cka')} (shuffled {f('rbf_cka_shuffled')}), mutual {res['k']}-NN {f('mutual_knn')} "
        f"(shuffled {f('mutual_knn_shuffled')})"
    )
    return 0
