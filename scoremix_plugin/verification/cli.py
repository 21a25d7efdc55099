"""``scoremix verify``, ``scoremix verify-ijb`` and ``scoremix make-bin``.

    scoremix verify --model model.onnx --data /data/ms1m --targets lfw,cfp_fp,agedb_30 --out reports/verify
    scoremix verify --model model.pt --network r50 --bins a.bin b.bin --out reports/verify --json summary.json
    scoremix verify --embeddings pairs.npz --json out.json     # precomputed [2N, D] embeddings + issame
    scoremix verify-ijb --root IJB_release/IJBC --target IJBC --model model.onnx --modes all --json ijbc.json --out rep
    scoremix verify-ijb --root IJB_release/IJBB --target IJBB --features feats.npy --json ijbb.json
    scoremix verify-ijb --root IJB_release/IJBC --target IJBC --features feats.npy --task identification --json 1n.json
    scoremix verify-tinyface --root tinyface_root --model model.onnx --json tinyface.json --out rep
    scoremix verify-tinyface --root tinyface_root --features feats.npz --json tinyface.json
    scoremix make-bin --pairs pairs.txt --images lfw_aligned/ --out lfw.bin
    scoremix make-bin --rec /data/test_ids --num-pairs 3000 --seed 0 --out toy.bin

Unlike the host, a requested target whose ``.bin`` is missing is an error, not a silent skip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scoremix_plugin.errors import InputError, MissingInputError

DEFAULT_TARGETS = "lfw,cfp_fp,agedb_30"


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="recogniser: .onnx (onnxruntime) or .pt/.pth state dict (needs --network)")
    src.add_argument("--embeddings", help=".npz with 'embeddings' [2N, D] (pairs interleaved) and 'issame' [N]")
    p.add_argument("--network", help="backbone name for a .pt state dict (e.g. r50)")
    p.add_argument("--device", help="torch device or 'cpu' to keep ONNX on CPU (default: cuda when available)")
    p.add_argument("--data", help="folder holding <target>.bin files (the host's cfg.rec)")
    p.add_argument(
        "--targets", default=DEFAULT_TARGETS, help=f"comma-separated targets in --data (default {DEFAULT_TARGETS})"
    )
    p.add_argument("--bins", nargs="+", help="explicit .bin files (target name = file stem), instead of --data")
    p.add_argument("--out", help="report folder: verification.json, verification.md, roc.png")
    p.add_argument("--json", help="machine-readable summary file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--far", type=float, nargs="+", default=[1e-3], help="FARs for TAR@FAR (default 1e-3)")
    p.add_argument("--no-flip", action="store_true", help="embed images only, without the flip-added embedding")
    p.add_argument("--no-progress", action="store_true")


def _bins_from_args(args: argparse.Namespace) -> dict[str, Path]:
    if args.bins and args.data:
        raise InputError("give --data/--targets or --bins, not both")
    if args.bins:
        bins = {}
        for b in args.bins:
            p = Path(b)
            if p.stem in bins:
                raise InputError(f"two .bin files named '{p.stem}' ({bins[p.stem]}, {p})")
            bins[p.stem] = p
    elif args.data:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        if not targets:
            raise InputError("--targets is empty")
        bins = {t: Path(args.data) / f"{t}.bin" for t in targets}
    else:
        raise InputError("--model needs --data DIR (with --targets) or --bins FILE ...")
    missing = [str(p) for p in bins.values() if not p.is_file()]
    if missing:
        raise MissingInputError(f"missing verification file(s): {', '.join(missing)}")
    return bins


def _summary(results) -> dict:
    return {t: r.to_dict(curves=False) for t, r in results.items()}


def run_verify(args: argparse.Namespace) -> int:
    import numpy as np

    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.verification.protocol import evaluate_embeddings
    from scoremix_plugin.verification.report import format_table, write_report

    fars = tuple(args.far)
    meta: dict = {}
    if args.embeddings:
        path = Path(args.embeddings)
        if not path.is_file():
            raise MissingInputError(f"embeddings file not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            missing = {"embeddings", "issame"} - set(z.files)
            if missing:
                raise InputError(f"{path} lacks array(s) {sorted(missing)}")
            try:
                results = {path.stem: evaluate_embeddings(z["embeddings"], z["issame"], fars=fars)}
            except InputError as e:  # the protocol's checks do not know the file
                raise InputError(f"{path}: {e}") from e
        meta["embeddings"] = str(path)
    else:
        from scoremix_plugin.verification.evaluate import load_embedder, verify_bins

        bins = _bins_from_args(args)
        embedder = load_embedder(args.model, network=args.network, device=args.device)
        meta.update(model=str(args.model), network=args.network, bins={t: str(p) for t, p in bins.items()})
        if getattr(embedder, "providers", None):
            meta["onnx_providers"] = list(embedder.providers)
        results = verify_bins(
            embedder, bins, batch_size=args.batch_size, progress=not args.no_progress, fars=fars, flip=not args.no_flip
        )
    print(format_table(results, far=fars[0]))
    if args.out:
        paths = write_report(args.out, results, far=fars[0], meta=meta)
        print(f"report: {paths['markdown']}")
    if args.json:
        from scoremix_plugin.verification.report import avg_h

        summary = {"meta": meta, "results": _summary(results)}
        a = avg_h({t: r.accuracy_mean for t, r in results.items()})
        if a is not None:
            summary["avg_h"] = a  # the paper's "Avg-H": mean accuracy of the five high-quality sets present
        write_json_atomic(args.json, summary if not args.embeddings else _summary(results)[next(iter(results))])
    return 0


def add_make_bin_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="LFW pairs.txt or CSV path_a,path_b,same (relative to --images)")
    src.add_argument("--rec", help="RecordIO folder (InsightFace layout) to draw balanced pairs from")
    p.add_argument("--images", help="root of aligned 112x112 images (with --pairs)")
    p.add_argument("--num-pairs", type=int, help="pairs to draw (with --rec): half same, half different")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .bin")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run_make_bin(args: argparse.Namespace) -> int:
    from scoremix_plugin.io_utils import refuse_output_file
    from scoremix_plugin.verification.binfile import bin_from_pairs, bin_from_rec

    refuse_output_file(
        args.out,
        overwrite=args.overwrite,
        inputs={"--pairs": args.pairs},
        folders={"--images": args.images, "--rec": args.rec},
    )
    if args.pairs:
        if not args.images:
            raise InputError("--pairs needs --images ROOT")
        n = bin_from_pairs(args.pairs, args.images, args.out)
    else:
        if not args.num_pairs:
            raise InputError("--rec needs --num-pairs N")
        n = bin_from_rec(args.rec, args.out, num_pairs=args.num_pairs, seed=args.seed)
    print(f"wrote {args.out}: {n} pairs", file=sys.stderr)
    return 0


def add_verify_ijb_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root", required=True, help="IJB release folder holding meta/ and loose_crop/ (e.g. IJB_release/IJBC)"
    )
    p.add_argument("--target", required=True, type=str.upper, choices=["IJBC", "IJBB"])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="recogniser: .onnx (onnxruntime) or .pt/.pth state dict (needs --network)")
    src.add_argument(
        "--features",
        help=".npy [images, 2*D]: each image's features then its flip's, rows in the "
        "order of meta/<target>_name_5pts_score.txt",
    )
    p.add_argument("--network", help="backbone name for a .pt state dict (e.g. r50)")
    p.add_argument("--device", help="torch device or 'cpu' to keep ONNX on CPU (default: cuda when available)")
    p.add_argument("--modes", default="F1N1D1", help="F1N1D1 (the host's default), a comma list, or 'all' (8 modes)")
    p.add_argument(
        "--task",
        choices=["verification", "identification"],
        default="verification",
        help="verification: 1:1 template pairs (TAR@FAR); identification: 1:N search of the mixed probe "
        "templates in galleries G1 / G2 (IJB-B: S1 / S2), rank-1/5/10 and TPIR@FPIR "
        "(insightface's ijb_1n.py; needs meta/<t>_1N_*.csv)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", required=True, help="machine-readable result (TAR, strict TAR, AUC per mode)")
    p.add_argument("--out", help="report folder: ijb.md (the host's table), ijb.json, ijb_roc.png")
    p.add_argument("--save-features", help="write the computed image features (.npy) for later --features runs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json file / --out's report files (never --save-features: features take hours)",
    )
    p.add_argument("--no-progress", action="store_true")


def run_verify_ijb(args: argparse.Namespace) -> int:
    from scoremix_plugin.verification.ijb_meta import IJBError

    try:
        return _run_verify_ijb(args)
    except IJBError as e:  # bad input: the message names the file and line
        print(f"scoremix verify-ijb: error: {e}", file=sys.stderr)
        return 2


def _run_verify_ijb(args: argparse.Namespace) -> int:
    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.verification.ijb import check_modes, evaluate_ijb_features
    from scoremix_plugin.verification.ijb_meta import IJBError, read_ijb_meta
    from scoremix_plugin.verification.report import format_ijb_table, write_ijb_report

    modes = check_modes(args.modes)
    if args.task == "identification":
        return _run_verify_ijb_1n(args, modes)
    if args.save_features and Path(args.save_features).exists():  # hours of embedding: never replace silently
        raise IJBError(f"--save-features {args.save_features} already exists; remove it or name another file")
    _check_ijb_outputs(args, ("ijb.md", "ijb.json", "ijb_roc.png"))
    meta_info: dict = {"root": str(args.root), "target": args.target}
    meta = read_ijb_meta(args.root, args.target)
    feats = _ijb_features(args, meta, meta_info)
    result = evaluate_ijb_features(meta, feats, modes, progress=not args.no_progress)
    result.meta.update(meta_info)
    print(format_ijb_table(result))
    print()
    print(format_ijb_table(result, strict=True))
    write_json_atomic(args.json, result.to_dict())
    if args.out:
        paths = write_ijb_report(args.out, result, title=f"{args.target} verification", meta=meta_info)
        print(f"report: {paths['markdown']}")
    return 0


def _check_ijb_outputs(args: argparse.Namespace, report_files: tuple[str, ...]) -> None:
    """verify-ijb's outputs: --json never over an input nor an existing file, --out never onto the release
    folder nor over a report (both unless --overwrite), --save-features never inside the release folder."""
    from scoremix_plugin.io_utils import refuse_output_file, refuse_output_folder

    inputs = {"--features": args.features, "--model": args.model}
    refuse_output_file(args.json, overwrite=args.overwrite, inputs=inputs, folders={"--root": args.root}, what="--json")
    if args.out:
        refuse_output_folder(
            args.out, report_files, overwrite=args.overwrite, inputs={"--root": args.root, **inputs}, may_contain=True
        )
    if args.save_features:
        refuse_output_file(args.save_features, inputs=inputs, folders={"--root": args.root}, what="--save-features")


def _ijb_embedder(args: argparse.Namespace, meta_info: dict):
    from scoremix_plugin.verification.evaluate import load_embedder
    from scoremix_plugin.verification.ijb_meta import IJBError

    try:
        embedder = load_embedder(args.model, network=args.network, device=args.device)
    except (ValueError, FileNotFoundError) as e:
        raise IJBError(str(e)) from e
    meta_info.update(model=str(args.model), network=args.network)
    if getattr(embedder, "providers", None):
        meta_info["onnx_providers"] = list(embedder.providers)
    return embedder


def _ijb_features(args: argparse.Namespace, meta, meta_info: dict):
    """The image features: read from --features, or embedded with --model (and kept in --save-features)."""
    import numpy as np

    from scoremix_plugin.io_utils import atomic_path
    from scoremix_plugin.verification.ijb import image_features
    from scoremix_plugin.verification.ijb_meta import load_features

    if args.features:
        feats = load_features(args.features, meta)
        meta_info["features"] = str(args.features)
        return feats
    feats = image_features(
        meta, _ijb_embedder(args, meta_info), batch_size=args.batch_size, progress=not args.no_progress
    )
    if args.save_features:
        with atomic_path(args.save_features) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, feats)
        meta_info["saved_features"] = str(args.save_features)
    return feats


def _run_verify_ijb_1n(args: argparse.Namespace, modes: tuple[str, ...]) -> int:

    from scoremix_plugin.io_utils import write_json_atomic, write_text_atomic
    from scoremix_plugin.verification.ijb_1n import evaluate_ijb_1n_features, format_1n_table
    from scoremix_plugin.verification.ijb_meta import IJBError, read_ijb_1n_meta

    if args.save_features and Path(args.save_features).exists():
        raise IJBError(f"--save-features {args.save_features} already exists; remove it or name another file")
    _check_ijb_outputs(args, ("ijb_1n.json", "ijb_1n.md"))
    meta_info: dict = {"root": str(args.root), "target": args.target, "task": "identification"}
    meta, sets = read_ijb_1n_meta(args.root, args.target)
    feats = _ijb_features(args, meta, meta_info)
    results = {m: evaluate_ijb_1n_features(meta, sets, feats, m) for m in modes}
    tables = [f"{args.target} 1:N, {m}:\n\n{format_1n_table(r)}" for m, r in results.items()]
    print("\n\n".join(tables))
    payload = {"meta": meta_info, "modes": {m: r.to_dict() for m, r in results.items()}}
    write_json_atomic(args.json, payload)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "ijb_1n.json", payload)
        md = (
            [f"# {args.target} 1:N identification", ""]
            + [f"- {k}: {v}" for k, v in meta_info.items()]
            + [
                "",
                "insightface's `ijb_1n.py` protocol: template features as for 1:1; rank-k = share of probe "
                "templates whose subject's gallery template is among the k best; TPIR@FPIR: threshold = the "
                "ceil(probes x FPIR)-th highest non-mated score, TPIR = share of mated scores above it. G1+G2: both "
                "galleries enrolled together (the reference's own run); G1, G2: each with the probes of its subjects.",
                "",
            ]
        )
        for t in tables:
            md += [t, ""]
        write_text_atomic(out / "ijb_1n.md", "\n".join(md))
        print(f"report: {out / 'ijb_1n.md'}")
    return 0


def add_verify_tinyface_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="TinyFace root holding tinyface/Testing_Set/ and the aligned folder")
    p.add_argument(
        "--aligned-dir",
        default="aligned_pad_0.1_pad_high",
        help="aligned images' folder under --root (default: AdaFace's aligned_pad_0.1_pad_high)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="recogniser: .onnx (onnxruntime) or .pt/.pth state dict (needs --network)")
    src.add_argument(
        "--features",
        help=".npz with 'paths' [N] (relative to the aligned folder, e.g. Probe/1_1.jpg) "
        "and 'features' [N, D]: features computed elsewhere, scored as given",
    )
    p.add_argument("--network", help="backbone name for a .pt state dict (e.g. r50)")
    p.add_argument("--device", help="torch device or 'cpu' to keep ONNX on CPU (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 5, 20], help="CMC ranks (default 1 5 20)")
    p.add_argument("--far", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1], help="open-set DIR FARs")
    p.add_argument("--json", required=True, help="machine-readable result (CMC shares and counts, DIR@FAR)")
    p.add_argument("--out", help="report folder: tinyface.md, tinyface.json, tinyface_cmc.png")
    p.add_argument("--save-features", help="write the computed features (.npz, the --features format)")
    p.add_argument("--no-progress", action="store_true")


def run_verify_tinyface(args: argparse.Namespace) -> int:
    import numpy as np

    from scoremix_plugin.io_utils import atomic_path, write_json_atomic
    from scoremix_plugin.verification.report import format_tinyface_table, write_tinyface_report
    from scoremix_plugin.verification.tinyface import (
        evaluate_tinyface_features,
        image_features,
        load_features,
        read_tinyface,
    )

    if args.save_features and Path(args.save_features).exists():
        raise InputError(f"--save-features {args.save_features} already exists; remove it or name another file")
    if args.batch_size < 1 or min(args.ranks) < 1 or not all(0 < f <= 1 for f in args.far):
        raise InputError("--batch-size and --ranks must be >= 1 and every --far in (0, 1]")
    layout = read_tinyface(args.root, args.aligned_dir)
    meta: dict = {"root": str(args.root), "aligned": str(layout.aligned)}
    if args.features:
        feats = load_features(args.features, layout)
        meta["features"] = str(args.features)
    else:
        from scoremix_plugin.verification.evaluate import load_embedder

        embedder = load_embedder(args.model, network=args.network, device=args.device)
        meta.update(model=str(args.model), network=args.network)
        feats = image_features(layout, embedder, batch_size=args.batch_size, progress=not args.no_progress)
        if args.save_features:
            with atomic_path(args.save_features) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, paths=np.array(layout.all_paths), features=feats)
            meta["saved_features"] = str(args.save_features)
    result = evaluate_tinyface_features(layout, feats, args.ranks, args.far, progress=not args.no_progress)
    result.meta.update(meta)
    print(format_tinyface_table(result))
    write_json_atomic(args.json, result.to_dict())
    if args.out:
        paths = write_tinyface_report(args.out, result, meta=meta)
        print(f"report: {paths['markdown']}")
    return 0
