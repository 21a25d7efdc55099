"""`scoremix rec` end to end: from-folder, to-folder, info, check on small drawn images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from scoremix_plugin.cli import main
from scoremix_plugin.recordio import FaceRecFolder
from scoremix_plugin.recordio.dataset import FaceRecDataset


def _draw(rng, size=112) -> np.ndarray:
    img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
    c = tuple(int(v) for v in rng.integers(0, 256, 3))
    cv2.circle(img, (int(rng.integers(20, size - 20)), int(rng.integers(20, size - 20))), size // 5, c, -1)
    return img


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 identities (names sort as b, c, d) with 2-3 images each; one PNG."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for name, n in [("d_person", 2), ("b_person", 3), ("c_person", 2)]:
        (root / name).mkdir()
        for j in range(n):
            ext = ".png" if (name, j) == ("c_person", 1) else ".jpg"
            cv2.imwrite(str(root / name / f"{j:03d}{ext}"), _draw(rng))
    (root / "notes.txt").write_text("ignored: not a folder")
    return root


def test_from_folder_info_check_to_folder(image_folder, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["rec", "from-folder", str(image_folder), str(out), "--no-progress"]) == 0
    f = FaceRecFolder(out)
    assert f.layout == "insightface" and f.labels.tolist() == [0, 0, 0, 1, 1, 2, 2] and f.num_classes == 3
    assert (out / "classes.txt").read_text().split() == ["b_person", "c_person", "d_person"]
    src = cv2.imread(str(image_folder / "c_person" / "001.png"))[:, :, ::-1]
    assert np.abs(f.image(4).astype(int) - src).mean() < 2.0  # the PNG, re-encoded as JPEG q95, still RGB
    capsys.readouterr()

    assert main(["rec", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 7 and info["classes"] == 3 and info["layout"] == "insightface"
    assert info["label_range"] == [0, 3] and info["identity_records"] == 3 and info["image_size"] == [112, 112]

    assert main(["rec", "check", str(out), "--decode", "--no-progress"]) == 0
    assert "ok:" in capsys.readouterr().out

    back = tmp_path / "back"
    assert main(["rec", "to-folder", str(out), str(back), "--no-progress"]) == 0
    assert sorted(p.name for p in back.iterdir()) == ["0", "1", "2"]
    assert sorted(p.name for p in (back / "1").iterdir()) == ["4.jpg", "5.jpg"]
    assert (back / "1" / "4.jpg").read_bytes() == f.jpeg(3)
    # Converting the exported folder again gives the same labels and the same (re-encoded) pictures.
    again = tmp_path / "again"
    assert main(["rec", "from-folder", str(back), str(again), "--no-progress"]) == 0
    g = FaceRecFolder(again)
    assert g.labels.tolist() == f.labels.tolist()
    assert np.abs(g.image(6).astype(int) - f.image(6)).mean() < 1.5


def test_from_folder_refuses_wrong_size_unless_resize(tmp_path, capsys):
    src = tmp_path / "src" / "only"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "a.jpg"), _draw(np.random.default_rng(1), size=96))
    assert main(["rec", "from-folder", str(tmp_path / "src"), str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a.jpg: image is 96x96, expected 112x112" in err and "--resize" in err
    assert not (tmp_path / "out" / "train.rec").exists() and not list((tmp_path / "out").glob(".*tmp*"))
    assert main(["rec", "from-folder", str(tmp_path / "src"), str(tmp_path / "out"), "--resize", "--no-progress"]) == 0
    ds = FaceRecDataset(tmp_path / "out")
    assert ds[0][0].shape == (3, 112, 112)


def test_info_json_file_and_converter_script(image_folder, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "rec"
    r = subprocess.run(
        [sys.executable, str(repo / "converters" / "folder_to_rec.py"), str(image_folder), str(out), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert main(["rec", "info", str(out), "--json", str(tmp_path / "info.json")]) == 0
    assert json.loads((tmp_path / "info.json").read_text())["images"] == 7
