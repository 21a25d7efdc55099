"""The mxnet shim runs the host's mxnet call patterns against files written by real mxnet 1.9.1 (golden)."""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import json
import numbers
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scoremix_plugin.integration import mxnet_compat
from scoremix_plugin.recordio import decode_image
from scoremix_plugin.verification.binfile import load_bin as safe_load_bin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mx():
    installed_here = "mxnet" not in sys.modules
    assert mxnet_compat.install() is True, "a real mxnet imports here: these tests are about the shim"
    assert mxnet_compat.install() is True  # idempotent
    import mxnet

    yield mxnet
    if installed_here:
        mxnet_compat.uninstall()
        assert "mxnet" not in sys.modules


def test_host_dataset_pattern_on_golden_insightface(mx, golden_dir):
    # arcface_torch dataset.py (MXFaceDataset): key 0 decides the layout, then read_idx / unpack / imdecode.
    root = golden_dir / "recordio" / "insightface"
    cases = json.loads((root / "cases.json").read_text())
    imgrec = mx.recordio.MXIndexedRecordIO(str(root / "train.idx"), str(root / "train.rec"), "r")
    header, _ = mx.recordio.unpack(imgrec.read_idx(0))
    assert header.flag > 0
    assert (int(header.label[0]), int(header.label[1])) == (21, 26)
    imgidx = np.array(range(1, int(header.label[0])))
    assert len(imgidx) == cases["num_images"]
    by_key = {c["key"]: c for c in cases["writes_in_file_order"]}
    for idx in imgidx:
        header, img = mx.recordio.unpack(imgrec.read_idx(idx))
        label = header.label
        if not isinstance(label, numbers.Number):
            label = label[0]
        c = by_key[int(idx)]
        assert (label, header.id, header.id2) == (c["label"], c["id"], c["id2"])
        assert hashlib.sha256(img).hexdigest() == c["payload_sha256"]
        sample = mx.image.imdecode(img).asnumpy()
        assert sample.shape == (112, 112, 3) and sample.dtype == np.uint8
        bgr = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(sample, bgr[:, :, ::-1])  # RGB, as mxnet's default to_rgb=1
    # Identity records: [first, end) key ranges, as the host's readers see them.
    h, payload = mx.recordio.unpack(imgrec.read_idx(21))
    assert h.flag == 2 and list(h.label) == [1.0, 5.0] and payload == b""
    assert isinstance(h.label, np.ndarray) and h.label.dtype == np.float32  # like mxnet
    assert imgrec.keys == [c["key"] for c in cases["writes_in_file_order"]]
    imgrec.close()


def test_edge_cases_read_and_rewrite_byte_identical(mx, golden_dir, tmp_path):
    root = golden_dir / "recordio" / "edge"
    writes = json.loads((root / "cases.json").read_text())["writes_in_file_order"]
    r = mx.recordio.MXIndexedRecordIO(str(root / "edge.idx"), str(root / "edge.rec"), "r")
    for c in writes:
        header, payload = mx.recordio.unpack(r.read_idx(c["key"]))
        assert payload == base64.b64decode(c["payload_b64"]), c["name"]
        want = c["read_header"]
        got_label = header.label.tolist() if isinstance(header.label, np.ndarray) else header.label
        assert (header.flag, got_label, header.id, header.id2) == (
            want["flag"],
            want["label"],
            want["id"],
            want["id2"],
        ), c["name"]
    # The shuffle_rec.py pattern: write_idx(key, pack(IRHeader(...), payload)) gives mxnet's bytes exactly.
    w = mx.recordio.MXIndexedRecordIO(str(tmp_path / "edge.idx"), str(tmp_path / "edge.rec"), "w")
    for c in writes:
        h = c["write_header"]
        w.write_idx(
            c["key"],
            mx.recordio.pack(
                mx.recordio.IRHeader(h["flag"], h["label"], h["id"], h["id2"]), base64.b64decode(c["payload_b64"])
            ),
        )
    w.close()
    assert (tmp_path / "edge.rec").read_bytes() == (root / "edge.rec").read_bytes()
    assert (tmp_path / "edge.idx").read_bytes() == (root / "edge.idx").read_bytes()


def test_sequential_records(mx, golden_dir, tmp_path):
    root = golden_dir / "recordio" / "sequential"
    records = [base64.b64decode(b) for b in json.loads((root / "cases.json").read_text())["records_b64"]]
    r = mx.recordio.MXRecordIO(str(root / "raw.rec"), "r")
    got = []
    while (item := r.read()) is not None:
        got.append(item)
    assert got == records
    w = mx.recordio.MXRecordIO(str(tmp_path / "raw.rec"), "w")
    for rec in records:
        w.write(rec)
    w.close()
    assert (tmp_path / "raw.rec").read_bytes() == (root / "raw.rec").read_bytes()


def test_verification_load_bin_pattern(mx, golden_dir):
    # eval/verification.py load_bin: imdecode, resize_short when needed, nd.transpose, mx.ndarray.flip.
    from mxnet import ndarray as nd

    bins, issame = safe_load_bin(golden_dir / "verification" / "toy_py2.bin")
    image_size = (112, 112)
    data_list = [torch.zeros((len(issame) * 2, 3, *image_size), dtype=torch.uint8) for _ in range(2)]
    for idx in range(len(issame) * 2):
        img = mx.image.imdecode(bins[idx])
        if img.shape[1] != image_size[0]:
            img = mx.image.resize_short(img, image_size[0])
        img = nd.transpose(img, axes=(2, 0, 1))
        for flip in [0, 1]:
            if flip == 1:
                img = mx.ndarray.flip(data=img, axis=2)
            data_list[flip][idx][:] = torch.from_numpy(img.asnumpy())
    ref = np.stack([decode_image(b) for b in bins]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(data_list[0].numpy(), ref)
    np.testing.assert_array_equal(data_list[1].numpy(), ref[:, :, :, ::-1])
    # resize_short: the shorter edge becomes the size, the longer one scales by integer arithmetic.
    small = nd.array(np.zeros((90, 120, 3), np.uint8))
    assert mx.image.resize_short(small, 112).shape == (112, 149, 3)
    assert nd.array([[1, 2]]).dtype == np.float32


def test_unprovided_names_fail_clearly(mx):
    with pytest.raises(AttributeError, match=r"mxnet\.gpu is not provided by scoremix's mxnet shim"):
        mx.gpu(0)
    with pytest.raises(AttributeError, match=r"mxnet\.ndarray\.slice_axis is not provided"):
        _ = mx.nd.slice_axis
    with pytest.raises(AttributeError, match="not provided"):
        mx.image.imread("x.jpg")
    with pytest.raises(ImportError):
        importlib.import_module("mxnet.io")


def test_importing_the_package_does_not_install_the_shim():
    code = (
        "import sys, scoremix_plugin, scoremix_plugin.cli, scoremix_plugin.integration.loader, "
        "scoremix_plugin.integration.launcher, scoremix_plugin.integration.merge; "
        "assert 'mxnet' not in sys.modules, 'mxnet shim installed at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.fixture
def host(mx, monkeypatch):
    """The REAL arcface_torch modules (dataset, eval.verification) importable over the mxnet shim.

    Opt-in: skipped when neither $ARCFACE_ROOT nor ../shared/host/arcface_torch exists (a bare clone).
    torchvision / scikit-learn stand-ins (tests/host_standins) go on the path only where the real
    package does not import.
    """
    from conftest import host_root

    root = host_root()
    if root is None or not (root / "dataset.py").is_file():
        pytest.skip("no arcface_torch host: set ARCFACE_ROOT or keep ../shared/host/arcface_torch beside the clone")
    standins = REPO / "tests" / "host_standins"
    for module, folder in (("torchvision", "torchvision_root"), ("sklearn", "sklearn_root")):
        if importlib.util.find_spec(module) is None:
            monkeypatch.syspath_prepend(str(standins / folder))
    monkeypatch.syspath_prepend(str(root))
    # The host's top-level names (dataset, eval, utils) are generic: drop any cached module of that name
    # before and after, so neither side sees the other's.
    names = ("dataset", "eval", "utils", "torchvision", "sklearn")

    def drop():
        for name in [m for m in sys.modules if m.split(".")[0] in names]:
            del sys.modules[name]

    drop()
    yield importlib.import_module("dataset"), importlib.import_module("eval.verification")
    drop()


@pytest.mark.filterwarnings("ignore:Decorating classes is deprecated:FutureWarning")  # the host's own code
def test_real_host_reads_our_files_through_the_shim(host, golden_dir, toy_data):
    from scoremix_plugin.recordio.dataset import FaceRecDataset
    from scoremix_plugin.verification.binfile import load_bin_images

    dataset, verification = host
    # MXFaceDataset over mxnet's golden folder and over a folder our FaceRecWriter wrote: sample for
    # sample (same flips under the same seed) what our Dataset gives.
    for root, n in ((golden_dir / "recordio" / "insightface", 20), (toy_data, 12 * 8)):
        theirs, ours = dataset.MXFaceDataset(str(root), 0), FaceRecDataset(root)
        assert len(theirs) == len(ours) == n
        for i in range(0, n, max(1, n // 10)):
            torch.manual_seed(i)
            x, y = theirs[i]
            torch.manual_seed(i)
            x2, y2 = ours[i]
            assert x.dtype == torch.float32 and x.shape == (3, 112, 112)
            assert int(y) == int(y2)
            torch.testing.assert_close(x, x2, rtol=0, atol=0)
    # load_bin over mxnet-era golden .bin files (Python 2 and 3 pickles) and a .bin our write_bin made.
    for path in (
        golden_dir / "verification" / "toy_py2.bin",
        golden_dir / "verification" / "toy_py3.bin",
        toy_data / "toy_lfw.bin",
    ):
        data_list, issame = verification.load_bin(str(path), (112, 112))
        images, same = load_bin_images(path)
        assert [bool(s) for s in issame] == same.tolist()
        ref = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))
        torch.testing.assert_close(data_list[0], ref, rtol=0, atol=0)
        torch.testing.assert_close(data_list[1], ref.flip(3), rtol=0, atol=0)
