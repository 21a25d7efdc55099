"""``scoremix report-dataset``: flags, then :func:`scoremix_plugin.datareport.report.report_dataset`.

scoremix report-dataset --data syn/manifest.json --model model.onnx --out rep
scoremix report-dataset --data data/real --model model.pt --network r50 --targets lfw,cfp_fp --out rep
"""

from __future__ import annotations

import argparse

from scoremix_plugin.checks import number_arg


def _far(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--far {text!r}: not a number") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"--far {text!r}: must be in (0, 1)")
    return v


def add_leak_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluation sets and FAR (shared by report-dataset and generate)."""
    p.add_argument(
        "--targets",
        default=None,
        help="evaluation .bin names, e.g. lfw,cfp_fp (looked up in --bins, "
        "else in the real folder, where arcface_torch keeps them)",
    )
    p.add_argument("--bins", default=None, help="folder of evaluation .bin files (all of them, unless --targets)")
    p.add_argument("--far", type=_far, default=1e-4, help="FAR at which real impostor pairs set the leak threshold")


def bins_from_args(args, fallback):
    from scoremix_plugin.datareport.report import resolve_bins

    targets = [t for t in args.targets.split(",") if t] if args.targets else None
    return resolve_bins(targets, args.bins, fallback)


def add_report_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="RecordIO folder or generation manifest (file or its folder)")
    p.add_argument("--model", required=True, help="recogniser: .onnx, or model.pt with --network")
    p.add_argument("--network", default=None, help="backbone name for a .pt model (e.g. r50)")
    p.add_argument("--real", default=None, help="real RecordIO folder (default: the manifest's own)")
    add_leak_arguments(p)
    p.add_argument(
        "--genuine-cap",
        type=number_arg("--genuine-cap", integer=True, lo=1),
        default=10**6,
        help="genuine pairs: all, or a seeded sample of this many",
    )
    p.add_argument(
        "--impostor-cap",
        type=number_arg("--impostor-cap", integer=True, lo=1),
        default=10**6,
        help="impostor pairs sampled (all when fewer)",
    )
    p.add_argument(
        "--min-share",
        type=number_arg("--min-share", lo=0, hi=1),
        default=0.5,
        help="quality gate: share of identities to recognise, in [0, 1]",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="embedding cache folder (default OUT/cache)")
    p.add_argument("--batch-size", type=number_arg("--batch-size", integer=True, lo=1), default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="report folder: report.md, report.json, PNGs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out folder that holds other files (a previous report's folder is reused)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the shard sha256 check of a manifest (faster on large sets; printed)",
    )


def run_report_dataset(args) -> int:
    from pathlib import Path

    from scoremix_plugin.datareport.embeddings import open_data, real_rec_of
    from scoremix_plugin.datareport.report import report_dataset
    from scoremix_plugin.errors import OutputExistsError
    from scoremix_plugin.io_utils import refuse_output_overlapping_inputs

    data = Path(args.data)
    data_dir = data.parent if data.suffix == ".json" else data
    refuse_output_overlapping_inputs(
        args.out, {"--data": data_dir, "--real": args.real, "--model": args.model, "--bins": args.bins}
    )
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file() and not args.overwrite:
        raise OutputExistsError(
            f"--out {out} holds files that are not a dataset report; choose another folder or pass --overwrite"
        )
    if args.no_verify:
        print("--no-verify: shard sha256 not checked against the manifest")
    fallback = args.real
    if fallback is None:
        ds = open_data(args.data, verify=False)  # only to find the real folder; report_dataset verifies
        fallback = real_rec_of(ds.manifest) if ds.kind == "manifest" else ds.path
    bins = bins_from_args(args, fallback)
    rep = report_dataset(
        args.data,
        args.model,
        args.out,
        real=args.real,
        bins=bins,
        far=args.far,
        network=args.network,
        cache_dir=args.cache,
        genuine_cap=args.genuine_cap,
        impostor_cap=args.impostor_cap,
        seed=args.seed,
        min_share=args.min_share,
        batch_size=args.batch_size,
        device=args.device,
        verify=not args.no_verify,
    )
    st = rep.data.stats
    print(
        f"{rep.data.name}: EER {100 * st.eer:.2f} %, d' {st.d_prime:.3f}, FDR {st.fdr:.3f}; threshold "
        f"{rep.threshold.cosine:.4f} at FAR {rep.far:g}; leaks {rep.leak_counts}"
    )
    if rep.gate is not None:
        print(rep.gate.text())
    print(Path(args.out) / "report.md")
    return 0
