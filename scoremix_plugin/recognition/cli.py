"""``scoremix train`` / ``export`` / ``embed``: parse flags, call one stage function."""

from __future__ import annotations

import argparse
import glob
import json

from scoremix_plugin.errors import InputError, MissingInputError


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from scoremix_plugin.backbones import BACKBONES

    p.add_argument("config", help="arcface_torch-style config file (configs/NAME or a path to a .py)")
    p.add_argument("--output", help="override config.output (the run folder)")
    p.add_argument("--network", choices=list(BACKBONES), help="override config.network")
    p.add_argument("--max-steps", type=int, help="override config.max_steps (stop after N global steps)")
    p.add_argument("--resume", action="store_true", help="set config.resume = True (continue from the run folder)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an output folder that holds one (its files are replaced)",
    )
    p.add_argument("--json", help="write the run summary (steps, verification) to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from scoremix_plugin.config import load_recogniser_config
    from scoremix_plugin.io_utils import write_json_atomic
    from scoremix_plugin.recognition.train import train

    cfg = load_recogniser_config(args.config)
    cfg.config_file = str(args.config)
    for key, value in (("output", args.output), ("network", args.network), ("max_steps", args.max_steps)):
        if value is not None:
            cfg[key] = value
    if args.resume:
        cfg.resume = True
    check_config_output(cfg, overwrite=args.overwrite)
    try:
        summary = train(cfg, progress=not args.no_progress)
        if args.json and (not dist.is_initialized() or dist.get_rank() == 0):
            write_json_atomic(args.json, summary)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


# What a recogniser run leaves in its output folder (train.py): a new run would replace these.
RUN_FILES = ("model.pt", "checkpoint_rank*.pt", "checkpoint_gpu_*.pt")


def check_config_output(cfg, *, overwrite: bool) -> None:
    """Refuse (on rank 0, before anything is written) a fresh run into a folder holding a run, or onto the data."""
    import os

    from scoremix_plugin.io_utils import refuse_existing_output, refuse_output_overlapping_inputs

    if os.environ.get("RANK", "0") != "0":  # the other ranks wait for rank 0, which stops the job on refusal
        return
    refuse_output_overlapping_inputs(cfg.output, {"config.rec": cfg.rec}, what="config.output")
    if not cfg.resume and not overwrite:
        refuse_existing_output(
            cfg.output,
            RUN_FILES + (str(cfg.log_json or "train_log.jsonl"),),
            what="config.output",
            hint="pass --resume to continue that run, or --overwrite to start a new one over it",
        )


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from scoremix_plugin.backbones import BACKBONES

    p.add_argument("--model", required=True, help="model.pt (backbone state dict, host format) or our checkpoint")
    p.add_argument("--network", required=True, choices=list(BACKBONES), help="backbone the weights belong to")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 11; the host uses 11)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check")
    p.add_argument("--json", help="write the export summary (and check numbers) to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --json file")


def run_export(args: argparse.Namespace) -> int:
    from scoremix_plugin.io_utils import refuse_output_file, write_json_atomic
    from scoremix_plugin.recognition.export import MIN_COSINE, export_model

    refuse_output_file(args.out, overwrite=args.overwrite, inputs={"--model": args.model})
    if args.json:
        refuse_output_file(
            args.json, overwrite=args.overwrite, inputs={"--model": args.model, "--out": args.out}, what="--json"
        )
    summary = export_model(args.model, args.network, args.out, opset=args.opset, check=not args.no_check)
    print(f"wrote {summary['onnx']} (opset {args.opset}, input 'data' [B,3,112,112])")
    if "check" in summary:
        c = summary["check"]
        print(
            f"onnxruntime vs torch on {c['batch']} random inputs: min cosine {c['min_cosine']:.7f} "
            f"(>= {MIN_COSINE}), max |diff| {c['max_abs_diff']:.2e}"
        )
    if args.json:
        write_json_atomic(args.json, summary)
    return 0


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="recogniser: .onnx (onnxruntime) or .pt (torch, needs --network)")
    src.add_argument(
        "--checkpoint",
        nargs="+",
        help="head checkpoint(s): ours (checkpoint_rank*.pt) or the host's checkpoint_gpu_*.pt, "
        "one per rank; globs allowed",
    )
    p.add_argument("--network", help="backbone name for a .pt model")
    p.add_argument("--data", help="RecordIO folder whose classes get a centre (with --model)")
    p.add_argument("--out", required=True, help="output centres .npz")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", action="store_true")


def run_embed(args: argparse.Namespace) -> int:
    from scoremix_plugin.io_utils import refuse_output_file
    from scoremix_plugin.recognition.embed import write_embedding_centres, write_head_centres

    if args.checkpoint:
        paths = []
        for item in args.checkpoint:
            hits = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
            if not hits:
                raise MissingInputError(f"--checkpoint {item!r} matches no file")
            paths += hits
        for path in paths:  # never over one of the checkpoints, even with --overwrite
            refuse_output_file(args.out, overwrite=True, inputs={"--checkpoint": path})
        refuse_output_file(args.out, overwrite=args.overwrite)
        c = write_head_centres(paths, args.out)
        print(f"wrote {args.out}: {len(c)} class weights (space 'head') from {len(paths)} checkpoint file(s)")
        return 0
    if not args.data:
        raise InputError("--model needs --data (the RecordIO folder whose classes get a centre)")
    from scoremix_plugin.verification.evaluate import load_embedder

    refuse_output_file(
        args.out, overwrite=args.overwrite, inputs={"--model": args.model}, folders={"--data": args.data}
    )
    embedder = load_embedder(args.model, network=args.network, device=args.device)
    c = write_embedding_centres(
        embedder, args.data, args.out, batch_size=args.batch_size, progress=not args.no_progress
    )
    print(json.dumps({"out": str(args.out), "classes": len(c), "images": int(c.counts.sum()), "space": c.space}))
    return 0
