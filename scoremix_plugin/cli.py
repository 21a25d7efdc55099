"""One entry point for every stage: ``scoremix <subcommand> ...``.

Each subcommand lives beside the code it drives. A table entry names the module and the
stem ``X``; that module defines ``add_X_arguments(parser)`` and ``run_X(args) -> int``.
Modules are imported only for the subcommand being run, so ``scoremix --help`` stays fast
and no stage's dependencies (torch, onnxruntime, diffusers) load unless needed.

Under torchrun: ``torchrun --nproc_per_node=N -m scoremix_plugin train CONFIG``.

Every command runs inside one error boundary (``main``): a user's mistake (the project's error types,
``scoremix_plugin.errors``, and OS errors on the user's files) prints ``scoremix CMD: error: MESSAGE``
and exits 2; anything else is a bug: its traceback is printed and the exit code is 1.
``scoremix --debug CMD ...`` (or ``SCOREMIX_DEBUG=1``) prints the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# name -> (module, stem, one-line help). Order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "rec": ("scoremix_plugin.recordio.cli", "rec", "RecordIO folders: from-folder, to-folder, info, check"),
    "toy-data": ("scoremix_plugin.toydata", "toy_data", "write the embedded toy identity dataset"),
    "make-bin": ("scoremix_plugin.verification.cli", "make_bin", "write a verification .bin file"),
    "verify": ("scoremix_plugin.verification.cli", "verify", "evaluate a model on .bin verification sets"),
    "verify-ijb": ("scoremix_plugin.verification.cli", "verify_ijb", "IJB-B / IJB-C template verification (TAR@FAR)"),
    "verify-tinyface": (
        "scoremix_plugin.verification.cli",
        "verify_tinyface",
        "TinyFace closed-set identification (rank-1/5/20)",
    ),
    "train": ("scoremix_plugin.recognition.cli", "train", "train a recogniser from an arcface_torch config"),
    "export": ("scoremix_plugin.recognition.cli", "export", "export model.pt to ONNX"),
    "embed": ("scoremix_plugin.recognition.cli", "embed", "class centres from a model or a head checkpoint"),
    "train-generator": (
        "scoremix_plugin.generation.cli",
        "train_generator",
        "train the class-conditional EDM generator",
    ),
    "ema": (
        "scoremix_plugin.generation.posthoc_ema",
        "ema",
        "post-hoc EMA: reconstruct any sigma_rel from the snapshots",
    ),
    "export-conditions": (
        "scoremix_plugin.generation.cli",
        "export_conditions",
        "generator class embeddings as a centres file",
    ),
    "sample": ("scoremix_plugin.generation.cli", "sample", "sample a grid of source classes and their mix"),
    "select": ("scoremix_plugin.synthesis.cli", "select", "choose far/near/random class pairs"),
    "generate": ("scoremix_plugin.synthesis.cli", "generate", "ScoreMix synthetic identities into RecordIO shards"),
    "align": ("scoremix_plugin.synthesis.cli", "align", "CKA / mutual-kNN alignment of two centres files"),
    "report-dataset": (
        "scoremix_plugin.datareport.cli",
        "report_dataset",
        "dataset report: EER, d', FDR, consistency, leak checks",
    ),
    "merge": ("scoremix_plugin.integration.cli", "merge", "merge real + synthetic into one arcface_torch folder"),
    "arcface-train": (
        "scoremix_plugin.integration.cli",
        "arcface_train",
        "run the unchanged arcface_torch train_v2.py with the scoremix loader",
    ),
    "pipeline": ("scoremix_plugin.pipeline.cli", "pipeline", "run a pipeline recipe end to end"),
    "demo": ("scoremix_plugin.pipeline.cli", "demo", "the CPU demo end to end on the embedded toy data"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoremix", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of every error, not only of bugs (also SCOREMIX_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, stem, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == only:
            mod = importlib.import_module(module)
            getattr(mod, f"add_{stem}_arguments")(p)
            p.set_defaults(_run=getattr(mod, f"run_{stem}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module (the first non-option word that names one).
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    name = " ".join(x for x in (args.command, getattr(args, "rec_command", None)) if x)
    debug = args.debug or os.environ.get("SCOREMIX_DEBUG", "") not in ("", "0")
    try:
        rc = args._run(args)
    except KeyboardInterrupt:
        print(f"scoremix {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one boundary: every error leaves through here
        user = user_error_message(e)
        if user is None:
            traceback.print_exc()
            print(
                f"scoremix {name}: internal error: {type(e).__name__}: {e}\n"
                "This is a bug in scoremix, not in your input: please report it with the traceback above.",
                file=sys.stderr,
            )
            return 1
        if debug:
            traceback.print_exc()
        print(f"scoremix {name}: error: {user}", file=sys.stderr)
        return 2
    return int(rc or 0)


def user_error_message(e: BaseException) -> str | None:
    """The one-line message for a user's mistake, or None when ``e`` is a bug."""
    from scoremix_plugin.errors import ScoreMixError

    if isinstance(e, ScoreMixError):
        text = str(e)
    elif isinstance(e, OSError):
        # A file the user named (missing, unreadable, read-only, disk full): the OS says which and why.
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        text = f"{where}: {e.strerror}" if where and e.strerror else str(e)
    else:
        return None
    return " ".join(text.split("\n")).strip() or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
