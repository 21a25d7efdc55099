"""A WebFace160K-style subset: N identities x K images picked from a folder of identity sub-folders.

    python recipes/webface160k/make_subset.py --src /data/WebFace4M --out /data/webface160k_images \
        --identities 10000 --images-per-identity 16 --seed 0
    scoremix rec from-folder /data/webface160k_images /data/webface160k

The paper's WebFace160K (~10K identities, 160K images) is not published; this picks identities that
have at least K images uniformly at random (seeded), and each one's first K images in name order, so
the same command gives the same subset. Images are linked (symlinks), not copied. A RecordIO source
(e.g. WebFace42M's train.rec) can first be unpacked with `scoremix rec to-folder`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def pick(src: Path, identities: int, per_identity: int, seed: int) -> dict[str, list[Path]]:
    """{identity folder name: its first ``per_identity`` images} for ``identities`` seeded random identities."""
    eligible = {}
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        images = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(images) >= per_identity:
            eligible[d.name] = images[:per_identity]
    if len(eligible) < identities:
        raise SystemExit(
            f"{src}: only {len(eligible)} identities have >= {per_identity} images, {identities} were asked for"
        )
    chosen = sorted(random.Random(seed).sample(sorted(eligible), identities))
    return {name: eligible[name] for name in chosen}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, type=Path, help="folder of identity sub-folders of aligned 112x112 images")
    p.add_argument("--out", required=True, type=Path, help="new folder of identity sub-folders (symlinks)")
    p.add_argument("--identities", type=int, default=10_000)
    p.add_argument("--images-per-identity", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"--out {args.out} exists and is not empty")
    subset = pick(args.src, args.identities, args.images_per_identity, args.seed)
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    for name, images in subset.items():
        (tmp / name).mkdir()
        for f in images:
            (tmp / name / f.name).symlink_to(f.resolve())
    (tmp / "subset.json").write_text(
        json.dumps(
            {
                "src": str(args.src.resolve()),
                "seed": args.seed,
                "identities": args.identities,
                "images_per_identity": args.images_per_identity,
            },
            indent=2,
        )
    )
    if args.out.exists():
        args.out.rmdir()
    os.replace(tmp, args.out)  # complete folders only appear under the final name
    print(f"{args.out}: {len(subset)} identities x {args.images_per_identity} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
