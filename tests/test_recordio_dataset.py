"""FaceRecDataset: the host's MXFaceDataset samples (RGB, flip, [-1, 1]) and lazy per-worker maps."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from scoremix_plugin.recordio import FaceRecFolder, FaceRecWriter, RecordIOError
from scoremix_plugin.recordio.dataset import FaceRecDataset


@pytest.fixture(scope="module")
def gold_folder(golden_dir):
    return golden_dir / "recordio" / "insightface"


def _host_tensor(rgb: np.ndarray) -> np.ndarray:
    # torchvision ToTensor + Normalize(0.5, 0.5), written out in numpy float32.
    t = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return (t - np.float32(0.5)) / np.float32(0.5)


def test_samples_match_host_transform(gold_folder):
    folder = FaceRecFolder(gold_folder)
    ds = FaceRecDataset(gold_folder, flip=False)
    assert len(ds) == 20 and ds.labels.dtype == np.int64 and ds.labels.tolist() == folder.labels.tolist()
    x, y = ds[5]
    assert x.dtype == torch.float32 and x.shape == (3, 112, 112) and y.dtype == torch.int64 and int(y) == 1
    np.testing.assert_array_equal(x.numpy(), _host_tensor(folder.image(5)))
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_flip_uses_torch_generator(gold_folder):
    ds = FaceRecDataset(gold_folder)
    img = FaceRecFolder(gold_folder).image(0)
    torch.manual_seed(0)
    draws = [bool(torch.rand(1) < 0.5) for _ in range(8)]
    torch.manual_seed(0)
    for flipped in draws:
        x, _ = ds[0]
        expect = _host_tensor(img[:, ::-1] if flipped else img)
        np.testing.assert_array_equal(x.numpy(), expect)
    assert any(draws) and not all(draws)


def test_transform_runs_before_flip_and_size_is_checked(gold_folder):
    ds = FaceRecDataset(gold_folder, flip=False, transform=lambda im: np.zeros_like(im))
    assert float(ds[0][0].max()) == -1.0
    bad = FaceRecDataset(gold_folder, transform=lambda im: im[:100])
    with pytest.raises(RecordIOError, match=r"key 1, offset 0: image is 100x112"):
        bad[0]


def test_pickle_carries_no_map_and_workers_read(gold_folder):
    ds = FaceRecDataset(gold_folder, flip=False)
    ds[0]  # map opened in this process
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.folder.reader._file._buf is None
    np.testing.assert_array_equal(copy[7][0].numpy(), ds[7][0].numpy())
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    assert torch.cat(ys).tolist() == ds.labels.tolist()
    np.testing.assert_array_equal(torch.cat(xs)[12].numpy(), ds[12][0].numpy())


def test_shard_round_trip_through_dataset(tmp_path):
    rng = np.random.default_rng(1)
    # Smooth images (upsampled 4x4 noise): JPEG keeps them close, unlike pixel noise.
    small = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    imgs = [cv2.resize(s, (112, 112), interpolation=cv2.INTER_LINEAR) for s in small]
    with FaceRecWriter(tmp_path, num_classes=10) as w:
        for i, img in enumerate(imgs):
            w.write(img, 7 + i // 3)
    ds = FaceRecDataset(tmp_path, flip=False)
    assert ds.labels.tolist() == [7, 7, 7, 8, 8, 8] and ds.num_classes == 10
    assert np.abs(ds[4][0].numpy() - _host_tensor(imgs[4])).mean() < 0.02  # JPEG q95: close, not exact
