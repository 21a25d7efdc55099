"""``scoremix rec``: RecordIO folders without mxnet.

    scoremix rec from-folder SRC OUT [--resize] [--overwrite]   # SRC/<identity>/<image>; sorted names -> labels
    scoremix rec to-folder DIR OUT [--overwrite]  # OUT/<label>/<key>.jpg, stored bytes verbatim
    scoremix rec info DIR [--json [FILE]]         # counts, layout, label range (JSON to stdout or FILE)
    scoremix rec check DIR [--decode]             # exit 0 when sound, 1 naming the first problem

Bad input (a missing folder, a refused image) exits 2 through the CLI's error boundary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_rec_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rec_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("from-folder", help="image folder (one sub-folder per identity) -> InsightFace RecordIO folder")
    p.add_argument("src", help="folder of identity sub-folders; sorted names become labels 0..C-1")
    p.add_argument("out", help="output folder (train.rec, train.idx, property, classes.txt)")
    p.add_argument("--resize", action="store_true", help="resize images that are not SIZE x SIZE (default: refuse)")
    p.add_argument("--image-size", type=int, default=112, help="required side in pixels (default 112)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95, like InsightFace)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT (default: refuse)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("to-folder", help="RecordIO folder -> OUT/<label>/<key>.jpg (stored bytes)")
    p.add_argument("rec", help="RecordIO folder (train.rec + train.idx)")
    p.add_argument("out", help="output folder: empty or new (it must not lie inside DIR)")
    p.add_argument("--overwrite", action="store_true", help="write into an OUT that already holds files")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("info", help="summary: images, classes, layout, label range")
    p.add_argument("rec", help="RecordIO folder (train.rec + train.idx)")
    p.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="FILE", help="print JSON (to stdout, or written to FILE)"
    )

    p = sub.add_parser("check", help="validate every record and the index (exit 0 when sound)")
    p.add_argument("rec", help="RecordIO folder (train.rec + train.idx)")
    p.add_argument("--decode", action="store_true", help="also decode every image (slower)")
    p.add_argument("--no-progress", action="store_true")


def run_rec(args: argparse.Namespace) -> int:
    from . import convert
    from .format import RecordIOError

    try:
        if args.rec_command == "from-folder":
            s = convert.folder_to_rec(
                args.src,
                args.out,
                resize=args.resize,
                quality=args.quality,
                image_size=args.image_size,
                progress=not args.no_progress,
                overwrite=args.overwrite,
            )
            print(f"wrote {s['out']}: {s['images']} images, {s['classes']} classes")
        elif args.rec_command == "to-folder":
            s = convert.rec_to_folder(args.rec, args.out, progress=not args.no_progress, overwrite=args.overwrite)
            print(f"wrote {s['out']}: {s['images']} images, {s['classes']} labels")
        elif args.rec_command == "info":
            info = convert.rec_info(args.rec)
            if args.json is None:
                for k, v in info.items():
                    print(f"{k}: {v}")
            elif args.json == "-":
                print(json.dumps(info, indent=2))
            else:
                from ..io_utils import write_json_atomic

                write_json_atomic(args.json, info)
        elif args.rec_command == "check":
            s = convert.check_rec(args.rec, decode=args.decode, progress=not args.no_progress)
            print(
                f"ok: {s['path']}: {s['records']} records, {s['index_keys']} index keys, {s['images']} images "
                f"({s['layout']} layout)"
            )
    except RecordIOError as e:
        if args.rec_command != "check" or not Path(args.rec).is_dir():
            raise  # the CLI's error boundary: a user error, exit 2
        # A check that finds a problem reports it and exits 1 (the folder exists but is not sound).
        print(f"scoremix rec check: error: {e}", file=sys.stderr)
        return 1
    return 0
