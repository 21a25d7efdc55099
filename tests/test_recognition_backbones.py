"""Backbones: the host's r18 state-dict names and shapes (written out by hand from the architecture), presets."""

from __future__ import annotations

import pytest
import torch

from scoremix_plugin.recognition.backbones import BACKBONES, get_backbone


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


def test_host_state_dict_loads_strict_and_gives_same_embeddings():
    torch.manual_seed(0)
    a = get_backbone("r18", num_features=64).eval()
    b = get_backbone("r18", num_features=64).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


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
