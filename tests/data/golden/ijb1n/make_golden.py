"""Make the IJB 1:N golden (not part of the package; run by hand, see README.md here).

    python tests/data/golden/ijb1n/make_golden.py --reference /tmp/ref/ijb_1n.py

1. writes a small synthetic IJB-C 1:N set in the release layout into this folder (seed 0): meta/ijbc_face_tid_mid.txt,
   meta/ijbc_name_5pts_score.txt, meta/ijbc_1N_gallery_G1.csv, _G2.csv, _probe_mixed.csv and img_feats.npy
   (per image: its features then its flip's, what the reference's get_image_feature returns);
2. takes insightface's functions read_template_subject_id_list, read_template_media_list, image2template_feature,
   gen_mask and evaluation out of the reference file with ``ast`` (their source unmodified; ``np`` inside
   them is numpy plus the removed aliases np.int / np.float / np.bool / np.object = the builtins; the file as a whole
   cannot be imported: it needs menpo, mxnet's Embedding and cv2 at import) and runs them the way its
   ``__main__`` does (F1N1D1: flip added, norm kept, faceness-weighted with np.matlib.repmat);
3. writes expected.json: what ``evaluation`` prints (top1/5/10, and pr + th at far 0.01 / 0.1) for the
   reference's own search (G1 and G2 enrolled together, all probes) and, with the same functions, for G1 and G2
   apart (each with the probe rows of its own subjects).

The reference file is not in this repository (fetch recognition/_evaluation_/ijb/ijb_1n.py from
deepinsight/insightface; made from commit 7fadd420c2351d0ffa8cac403421c1a3ed733365). These functions
need no sklearn.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import heapq
import io
import json
import math
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FUNCS = (
    "read_template_subject_id_list",
    "read_template_media_list",
    "image2template_feature",
    "gen_mask",
    "evaluation",
)


def make_layout(seed: int = 0, subjects: int = 40, dim: int = 32) -> None:
    rng = np.random.default_rng(seed)
    meta = HERE / "meta"
    meta.mkdir(exist_ok=True)
    centres = rng.standard_normal((subjects, dim))
    lines_tm, lines_5p, feats = [], [], []
    rows: dict[str, list[str]] = {"G1": [], "G2": [], "probe": []}
    tid, mid, img = 1, 1, 0

    def template(subject: int, n_media: int, kind: str, noise: float) -> None:
        nonlocal tid, mid, img
        for _ in range(n_media):
            for _ in range(int(rng.integers(1, 4))):  # 1-3 frames per media (a media of several = a video)
                name = f"{img}.jpg"
                f = centres[subject] * 0.5 + rng.standard_normal(dim) * noise
                flip = f + rng.standard_normal(dim) * 0.1
                feats.append(np.concatenate([f, flip]))
                lines_tm.append(f"{name} {tid} {mid}")
                lines_5p.append(f"{name} " + " ".join(["0.000"] * 10) + f" {rng.uniform(0.3, 1.0):.6f}")
                rows[kind].append(f"{tid},{subject + 1},{name}")
                img += 1
            mid += 1
        tid += 1

    for s in range(subjects):
        template(s, int(rng.integers(1, 3)), "G1" if s < subjects // 2 else "G2", 0.8)
    for s in range(subjects):
        for _ in range(int(rng.integers(3, 7))):
            template(s, int(rng.integers(1, 3)), "probe", 1.4)
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(lines_tm) + "\n")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lines_5p) + "\n")
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME"
    for k, name in (
        ("G1", "ijbc_1N_gallery_G1.csv"),
        ("G2", "ijbc_1N_gallery_G2.csv"),
        ("probe", "ijbc_1N_probe_mixed.csv"),
    ):
        (meta / name).write_text("\n".join([header] + rows[k]) + "\n")
    np.save(HERE / "img_feats.npy", np.asarray(feats, dtype=np.float32))


def _numpy_with_aliases():
    """numpy, plus the aliases numpy >= 1.24 removed and the reference uses (np.int, ...): the builtins they named."""
    import types

    mod = types.ModuleType("numpy_with_aliases")
    mod.__getattr__ = lambda name: getattr(np, name)  # module-level __getattr__ (PEP 562)
    mod.int, mod.float, mod.bool, mod.object = int, float, bool, object
    return mod


def reference_functions(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in FUNCS]
    assert sorted(n.name for n in found) == sorted(FUNCS), [n.name for n in found]
    ns: dict = {"np": _numpy_with_aliases(), "math": math, "heapq": heapq}
    exec(compile(ast.Module(body=found, type_ignores=[]), str(path), "exec"), ns)
    return ns


def run_reference(ref: dict, gallery_files: list[str], probe_subjects: set[int] | None) -> dict:
    import numpy.matlib  # noqa: F401 - the reference's __main__ uses np.matlib.repmat

    meta = HERE / "meta"
    g = [ref["read_template_subject_id_list"](str(meta / f)) for f in gallery_files]
    gallery_templates = np.concatenate([t for t, _ in g])
    gallery_subject_ids = np.concatenate([s for _, s in g])
    total_templates, total_medias = ref["read_template_media_list"](str(meta / "ijbc_face_tid_mid.txt"))
    img_feats = np.load(HERE / "img_feats.npy")
    # as the reference's get_image_feature: the faceness is the last field of each 5pts line, text -> float32
    faceness = np.array(
        [line.strip().split(" ")[-1] for line in (meta / "ijbc_name_5pts_score.txt").read_text().splitlines()]
    ).astype(np.float32)
    # its __main__, use_flip_test / use_norm_score / use_detector_score all True (F1N1D1)
    img_input_feats = img_feats[:, 0 : int(img_feats.shape[1] / 2)] + img_feats[:, int(img_feats.shape[1] / 2) :]
    img_input_feats = img_input_feats * np.matlib.repmat(faceness[:, np.newaxis], 1, img_input_feats.shape[1])
    gallery_feats, _, gallery_ids = ref["image2template_feature"](
        img_input_feats, total_templates, total_medias, gallery_templates, gallery_subject_ids
    )
    probe_t, probe_s = ref["read_template_subject_id_list"](str(meta / "ijbc_1N_probe_mixed.csv"))
    if probe_subjects is not None:
        keep = np.isin(probe_s, sorted(probe_subjects))
        probe_t, probe_s = probe_t[keep], probe_s[keep]
    probe_feats, _, probe_ids = ref["image2template_feature"](
        img_input_feats, total_templates, total_medias, probe_t, probe_s
    )
    mask = ref["gen_mask"](probe_ids, gallery_ids)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ref["evaluation"](probe_feats, gallery_feats, mask)
    text = out.getvalue()
    q = probe_feats.shape[0]
    res: dict = {"num_probes": int(q), "num_gallery": int(gallery_feats.shape[0]), "printed": text}
    for k in (1, 5, 10):
        v = float(re.search(rf"top{k} = (\S+)", text).group(1))
        res[f"top{k}"] = v
        res[f"top{k}_count"] = int(round(v * q))
    res["far"] = []
    for m in re.finditer(r"far = (\S+) pr = (\S+) th = (\S+)", text):
        res["far"].append(
            {
                "far": float(m.group(1)),
                "pr": float(m.group(2)),
                "pr_count": int(round(float(m.group(2)) * q)),
                "th": float(m.group(3)),
            }
        )
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True, help="insightface recognition/_evaluation_/ijb/ijb_1n.py")
    args = ap.parse_args()
    make_layout()
    ref = reference_functions(Path(args.reference))
    subj = {
        k: set(ref["read_template_subject_id_list"](str(HERE / "meta" / f"ijbc_1N_gallery_{k}.csv"))[1].tolist())
        for k in ("G1", "G2")
    }
    expected = {
        "G1+G2": run_reference(ref, ["ijbc_1N_gallery_G1.csv", "ijbc_1N_gallery_G2.csv"], None),
        "G1": run_reference(ref, ["ijbc_1N_gallery_G1.csv"], subj["G1"]),
        "G2": run_reference(ref, ["ijbc_1N_gallery_G2.csv"], subj["G2"]),
    }
    (HERE / "expected.json").write_text(json.dumps({"mode": "F1N1D1", "seed": 0, "galleries": expected}, indent=1))
    for k, v in expected.items():
        print(k, {kk: vv for kk, vv in v.items() if kk != "printed"})


if __name__ == "__main__":
    main()
