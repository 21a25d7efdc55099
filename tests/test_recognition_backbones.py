"""Backbones: the host's r18 state-dict names and shapes (written out by hand from the architecture), presets."""

from __future__ import annotations

import pytest
import torch

from scoremix_plugin.backbones import BACKBONES, get_backbone

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _host_r18_keys() -> dict[str, tuple]:
    """arcface_torch iresnet18: stem 3->64 (3x3, stride 1), stages 64/128/256/512 x [2,2,2,2], fc 512*7*7 -> 512.

    Written from the architecture, not from our module: block = bn1(cin), conv1 3x3 cin->c, bn2(c), prelu(c),
    conv2 3x3 c->c (stride), bn3(c); first block of each stage: downsample.0 1x1 cin->c, downsample.1 BN(c).
    """
    keys: dict[str, tuple] = {"conv1.weight": (64, 3, 3, 3)}
    keys |= _bn("bn1", 64)
    keys["prelu.weight"] = (64,)
    cin = 64
    for stage, c in zip((1, 2, 3, 4), (64, 128, 256, 512)):
        for b in (0, 1):
            p = f"layer{stage}.{b}"
            keys |= _bn(f"{p}.bn1", cin)
            keys[f"{p}.conv1.weight"] = (c, cin, 3, 3)
            keys |= _bn(f"{p}.bn2", c)
            keys[f"{p}.prelu.weight"] = (c,)
            keys[f"{p}.conv2.weight"] = (c, c, 3, 3)
            keys |= _bn(f"{p}.bn3", c)
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                keys |= _bn(f"{p}.downsample.1", c)
            cin = c
    keys |= _bn("bn2", 512)
    keys["fc.weight"] = (512, 512 * 7 * 7)
    keys["fc.bias"] = (512,)
    keys |= _bn("features", 512)
    return keys


def test_r18_state_dict_matches_host_names_and_shapes():
    expected = _host_r18_keys()
    sd = get_backbone("r18").state_dict()
    assert set(sd) == set(expected), (sorted(set(sd) - set(expected)), sorted(set(expected) - set(sd)))
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k


def _host_backbones():
    """The REAL host's backbones/iresnet.py (ARCFACE_ROOT, else shared/host/arcface_torch beside or in the repo)."""
    import importlib.util
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    roots = [os.environ.get("ARCFACE_ROOT")] + [p / "shared/host/arcface_torch" for p in (repo, repo.parent)]
    f = next((Path(r) / "backbones" / "iresnet.py" for r in roots if r and (Path(r) / "backbones").is_dir()), None)
    if f is None or not f.is_file():
        return None
    # By file, not as the package: the host's backbones/__init__.py imports every family (vit needs timm).
    spec = importlib.util.spec_from_file_location("host_iresnet", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["r18", "r50"])
def test_host_state_dict_loads_strict_and_gives_same_embeddings(name):
    host = _host_backbones()
    if host is None:
        pytest.skip("no arcface_torch checkout (set ARCFACE_ROOT, or ../shared/host/arcface_torch)")
    torch.manual_seed(0)
    theirs = getattr(host, {"r18": "iresnet18", "r50": "iresnet50"}[name])(num_features=64).eval()
    with torch.no_grad():  # running statistics away from 0/1, so BatchNorm's buffers are checked too
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = get_backbone(name, num_features=64).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["r10_tiny", "r18_cpu"])
def test_cpu_presets_take_112_and_keep_host_names(name):
    net = get_backbone(name, num_features=32).eval()
    with torch.no_grad():
        y = net(torch.zeros(3, 3, 112, 112))
    assert y.shape == (3, 32)
    assert not net.features.weight.requires_grad
    top = {k.split(".")[0] for k in net.state_dict()}
    assert top == {"conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2", "fc", "features"}


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="r50"):
        get_backbone("r51")
    assert {"r18", "r34", "r50", "r100", "r200"} <= set(BACKBONES)
