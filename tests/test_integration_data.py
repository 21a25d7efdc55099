"""ScoreMix training data and the training loader: labels, ratios, augmentation, config checks, host signatures."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from test_integration_helpers import edit_manifest, synthetic_image, write_recogniser_config, write_shards
from torch.utils.data import DataLoader

from scoremix_plugin.config import ConfigError, load_recogniser_config
from scoremix_plugin.data.augment import Augmentation, DegradeResize
from scoremix_plugin.data.loader import build_train_dataset, make_train_loader
from scoremix_plugin.data.scoremix_dataset import ScoreMixDataset
from scoremix_plugin.integration.loader import get_dataloader
from scoremix_plugin.recordio import FaceRecFolder, FaceRecWriter, RecordIOError
from scoremix_plugin.synthesis.manifest import ManifestError

C_SYN, PER_CLASS = 6, 5  # toy_data: 12 real classes x 8 images = 96; synthetic 6 x 5 = 30 in 2 shards


@pytest.fixture(scope="session")
def synth(toy_data, tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("syn"), toy_data, C_SYN, PER_CLASS, classes_per_shard=4)


def _copy_synth(synth, tmp_path):
    dst = tmp_path / "syn"
    shutil.copytree(synth.parent, dst)
    return dst / "manifest.json"


def _norm(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)


def _is_plain_or_flipped(x: torch.Tensor, img: np.ndarray) -> bool:
    ref = _norm(img)
    return torch.equal(x, ref) or torch.equal(x, ref.flip(2))


def test_every_image_once_with_final_labels(toy_data, synth):
    ds = ScoreMixDataset(toy_data, synth)
    assert len(ds) == ds.num_image == 96 + C_SYN * PER_CLASS
    assert ds.num_classes == 12 + C_SYN
    real = FaceRecFolder(toy_data)
    np.testing.assert_array_equal(ds.labels[:96], real.labels)
    # Synthetic labels are the shards' final labels, not shifted again.
    np.testing.assert_array_equal(ds.labels[96:], np.repeat(np.arange(12, 12 + C_SYN), PER_CLASS))
    assert sorted(set(ds.labels.tolist())) == list(range(12 + C_SYN))
    x, y = ds[100]
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert int(y) == ds.labels[100]
    ds.set_epoch(5)  # no ratio: the map never changes
    np.testing.assert_array_equal(ds.labels[96:], np.repeat(np.arange(12, 12 + C_SYN), PER_CLASS))


def test_ratio_draws_per_epoch_deterministically(toy_data, synth):
    ds = ScoreMixDataset(toy_data, synth, ratio=0.25, seed=7)
    n = ds.num_image
    assert len(ds) == n
    expect_syn = round(0.25 * n)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert int(ds.is_synthetic.sum()) == expect_syn
        assert (ds.labels[ds.is_synthetic] >= 12).all() and (ds.labels[~ds.is_synthetic] < 12).all()
    # Synthetic pool (30) < 32 draws: one full pass plus 2, so every synthetic image appears.
    ds.set_epoch(0)
    syn_idx = ds._index[ds.is_synthetic]
    assert set(syn_idx.tolist()) == set(range(96, n))
    first = ds._index.copy()
    ds.set_epoch(1)
    assert not np.array_equal(first, ds._index)
    again = ScoreMixDataset(toy_data, synth, ratio=0.25, seed=7)
    np.testing.assert_array_equal(again._index, first)  # same (seed, epoch) -> same map, on every rank
    other = ScoreMixDataset(toy_data, synth, ratio=0.25, seed=8)
    assert not np.array_equal(other._index, first)
    # The sampler's set_epoch (what the host calls) moves the dataset's map too.
    loader = make_train_loader(ds, 8, 2048, 0, 0, 1, "cpu")
    loader.sampler.set_epoch(4)
    assert ds.epoch == 4
    with pytest.raises(ValueError, match="ratio"):
        ScoreMixDataset(toy_data, synth, ratio=1.0)


def test_augmentation_per_source(toy_data, synth):
    pytest.importorskip("albumentations", reason="the [augment] extra (albumentations) is not installed")
    torch.manual_seed(0)
    ds = ScoreMixDataset(toy_data, synth, aug_real="strong", aug_synthetic=None)
    assert isinstance(ds.sources[0].transform, Augmentation) and ds.sources[1].transform is None
    real, shard = FaceRecFolder(toy_data), FaceRecFolder(synth.parent / "shard-00000")
    # Synthetic: flip + normalise only (exactly the stored image or its mirror).
    for i in range(96, 101):
        assert _is_plain_or_flipped(ds[i][0], shard.image(i - 96))
    # Real: "strong" changes pixels beyond a flip for most draws.
    changed = sum(not _is_plain_or_flipped(ds[i][0], real.image(i)) for i in range(8))
    assert changed >= 4
    with pytest.raises(ConfigError, match="aug_synthetic.*unknown augmentation"):
        ScoreMixDataset(toy_data, synth, aug_synthetic="heavy")


def test_build_train_dataset_checks_counts_and_degrades(toy_data, synth, tmp_path):
    block = {"manifest": str(synth), "ratio": None, "aug_real": None, "aug_synthetic": None}
    good = dict(
        rec=str(toy_data),
        num_classes=12 + C_SYN,
        num_image=96 + C_SYN * PER_CLASS,
        num_epoch=1,
        warmup_epoch=0,
        val_targets=["toy_lfw"],
        dataset="scoremix",
        scoremix=block,
        image_degrade=16,
    )
    cfg = load_recogniser_config(write_recogniser_config(tmp_path / "good.py", **good))
    ds = build_train_dataset(cfg)
    assert isinstance(ds, ScoreMixDataset) and len(ds) == good["num_image"]
    # The down-and-up resize reaches real and synthetic images alike.
    down = DegradeResize(16)
    real, shard = FaceRecFolder(toy_data), FaceRecFolder(synth.parent / "shard-00000")
    assert _is_plain_or_flipped(ds[3][0], down(real.image(3)))
    assert _is_plain_or_flipped(ds[97][0], down(shard.image(1)))

    for key, bad in (("num_classes", 12), ("num_image", 96)):
        cfg = load_recogniser_config(write_recogniser_config(tmp_path / f"bad_{key}.py", **{**good, key: bad}))
        with pytest.raises(ConfigError, match=rf"config\.{key} = {bad}.*manifest.*{synth.name}"):
            build_train_dataset(cfg)
        with pytest.raises(ConfigError, match=rf"bad_{key}\.py: config\.{key}"):
            build_train_dataset(cfg, source=str(tmp_path / f"bad_{key}.py"))

    plain = load_recogniser_config(
        write_recogniser_config(
            tmp_path / "plain.py",
            rec=str(toy_data),
            num_classes=12,
            num_image=96,
            num_epoch=1,
            warmup_epoch=0,
            val_targets=[],
        )
    )
    ds = build_train_dataset(plain)
    assert type(ds).__name__ == "FaceRecDataset" and len(ds) == 96


def test_manifest_and_shard_errors(toy_data, synth, tmp_path):
    m = _copy_synth(synth, tmp_path)
    raw = json.loads(m.read_text())
    edit_manifest(m, shards=[{**raw["shards"][0], "rec_sha256": "0" * 64}, raw["shards"][1]])
    with pytest.raises(Exception, match=r"shard"):
        ScoreMixDataset(toy_data, m)
    edit_manifest(m, shards=raw["shards"])
    shutil.rmtree(m.parent / "shard-00001")
    with pytest.raises(Exception, match="shard-00001"):
        ScoreMixDataset(toy_data, m)
    # Labels that were never made final (0-based in the shard) are refused, naming the shard file.
    bad = tmp_path / "bad"
    with FaceRecWriter(bad / "shard-00000", num_classes=12 + 2) as w:
        for n in range(2):
            for i in range(3):
                w.write(synthetic_image(n, i), n)
    from scoremix_plugin.io_utils import sha256_file

    s = bad / "shard-00000"
    manifest = {
        **raw,
        "num_classes": 14,
        "num_synthetic_classes": 2,
        "num_synthetic_images": 6,
        "shards": [
            {
                "path": "shard-00000",
                "labels": [12, 14],
                "images": 6,
                "rec_sha256": sha256_file(s / "train.rec"),
                "idx_sha256": sha256_file(s / "train.idx"),
            }
        ],
    }
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecordIOError, match=r"label 0 .*outside \[12, 14\).*final"):
        ScoreMixDataset(toy_data, bad / "manifest.json")
    edit_manifest(bad / "manifest.json", num_synthetic_images=7)
    with pytest.raises(ManifestError, match="num_synthetic_images"):
        ScoreMixDataset(toy_data, bad / "manifest.json")


def test_get_dataloader_host_signatures(toy_data, synth, tmp_path):
    block = {"manifest": str(synth)}
    cfg = load_recogniser_config(
        write_recogniser_config(
            tmp_path / "c.py",
            rec=str(toy_data),
            num_classes=12 + C_SYN,
            num_image=96 + C_SYN * PER_CLASS,
            num_epoch=1,
            warmup_epoch=0,
            val_targets=[],
            dataset="scoremix",
            scoremix=block,
        )
    )
    new = get_dataloader(str(toy_data), 0, 16, False, False, 123, 0, cfg=cfg)  # (.., dali, dali_aug, seed, workers)
    old = get_dataloader(str(toy_data), 0, 16, False, 321, 0, cfg=cfg)  # (.., dali, seed, workers)
    assert isinstance(new, DataLoader) and isinstance(old, DataLoader)
    assert new.sampler.seed == 123 and old.sampler.seed == 321 and new.num_workers == old.num_workers == 0
    assert new.drop_last and len(new) == (96 + 30) // 16
    new.sampler.set_epoch(1)
    batches = [b for _, b in zip(range(2), new)]  # two batches are enough (decoding is the slow part)
    assert all(x.shape == (16, 3, 112, 112) and y.shape == (16,) and y.dtype == torch.int64 for x, y in batches)
    labels = torch.cat([y for _, y in batches])
    assert int(labels.min()) >= 0 and int(labels.max()) < 12 + C_SYN
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert batches[0][0].device.type == expected_device
    # Worker processes seeded like the host: the same seed and epoch give the same batch, flips included.
    firsts = []
    for _ in range(2):
        loader = get_dataloader(str(toy_data), 0, 16, False, 321, 2, cfg=cfg)
        loader.sampler.set_epoch(3)
        firsts.append(next(iter(loader)))
    assert torch.equal(firsts[0][0], firsts[1][0]) and torch.equal(firsts[0][1], firsts[1][1])
    with pytest.raises(ConfigError, match="dali"):
        get_dataloader(str(toy_data), 0, 16, True, False, 1, 0, cfg=cfg)
    with pytest.raises(ConfigError, match="config.rec"):
        get_dataloader(str(tmp_path), 0, 16, False, False, 1, 0, cfg=cfg)


def test_ranks_partition_each_epoch(toy_data, synth):
    ds = ScoreMixDataset(toy_data, synth, ratio=0.5, seed=3)
    seen = []
    for rank in range(2):
        loader = make_train_loader(ds, 8, 2048, 0, rank, 2, "cpu")
        loader.sampler.set_epoch(2)
        seen.append(list(iter(loader.sampler)))
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(len(ds)))


def test_augmentation_specs():
    import pickle

    A = pytest.importorskip("albumentations", reason="the [augment] extra (albumentations) is not installed")

    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    serialised = A.to_dict(A.Compose([A.ToGray(p=1.0)]))
    for spec in (serialised, serialised["transform"]):  # to_dict's wrapper, or the bare transform dict
        out = pickle.loads(pickle.dumps(Augmentation(spec, key="config.scoremix.aug_real")))(img)
        assert out.shape == img.shape and (out[..., 0] == out[..., 1]).all()  # grey in all three channels
    with pytest.raises(ConfigError, match="aug_real.*could not read"):
        Augmentation(
            {"transform": {"__class_fullname__": "NoSuchTransform", "p": 1.0}}, key="config.scoremix.aug_real"
        )(img)
    with pytest.raises(ConfigError, match="aug_synthetic.*registered name"):
        Augmentation(3, key="config.scoremix.aug_synthetic")
    with pytest.raises(ConfigError, match="image_degrade"):
        DegradeResize(200)
    small = DegradeResize(8)(img)
    assert small.shape == img.shape and small.std() < img.std()  # detail is gone, size is kept


def test_warns_when_the_real_folder_is_not_the_manifests(toy_data, synth, tmp_path):
    m = _copy_synth(synth, tmp_path)
    edit_manifest(m, real={**json.loads(m.read_text())["real"], "rec": str(tmp_path / "elsewhere")})
    with pytest.warns(UserWarning, match="generated for the real folder .*elsewhere"):
        ScoreMixDataset(toy_data, m)


def test_no_warning_for_the_manifests_own_real_folder(toy_data, synth, tmp_path, monkeypatch):
    # generate records the real folder relative to the manifest: it must resolve the same from any CWD.
    m = _copy_synth(synth, tmp_path)
    real = json.loads(m.read_text())["real"]
    edit_manifest(m, real={**real, "rec": os.path.relpath(toy_data, m.parent)})
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScoreMixDataset(toy_data, m)
