"""A small IJB-C root made from the golden set's images that have files (for the IJB and pipeline tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "ijb"
N_FILES = 24  # golden images that have a file and landmarks


def small_ijb_root(tmp_path: Path, n: int = N_FILES) -> Path:
    """An IJB root with the golden's first ``n`` images (those with files) and pairs among their templates."""
    root = tmp_path / "IJBC"
    (root / "meta").mkdir(parents=True)
    shutil.copytree(GOLDEN / "loose_crop", root / "loose_crop")
    for name in ("ijbc_face_tid_mid.txt", "ijbc_name_5pts_score.txt"):
        lines = (GOLDEN / "meta" / name).read_text().splitlines()[:n]
        (root / "meta" / name).write_text("\n".join(lines) + "\n")
    tids = sorted({int(line.split()[1]) for line in (root / "meta" / "ijbc_face_tid_mid.txt").read_text().splitlines()})
    pairs = [f"{a} {b} {int((a + b) % 3 == 0)}" for i, a in enumerate(tids) for b in tids[i + 1 :]]
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return root
