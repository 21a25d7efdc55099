"""IResNet backbones with the host's (arcface_torch) architecture and state-dict names, plus CPU presets.

A host ``model.pt`` (``r18`` .. ``r200``) loads into ``get_backbone(name)`` with ``strict=True`` and gives
the same embeddings. Every network takes ``[B, 3, 112, 112]`` in ``[-1, 1]`` and returns ``[B, D]``
(not normalised). The CPU presets keep the same module names and input size but are narrower and
downsample in the stem, so the demo can train on a laptop.

Module names (what the state dict holds): ``conv1, bn1, prelu, layer1..layer4`` (each block:
``bn1, conv1, bn2, prelu, conv2, bn3`` and, on the first block of a stage, ``downsample.0`` conv /
``downsample.1`` BN), then ``bn2, dropout, fc, features``.

``load_backbone(path, network)`` is the ``.pt`` model loader (a host ``model.pt``, our ``model.pt`` or a
checkpoint holding the backbone). This module sits in the package's base layer, below verification, so
scoring a ``.pt`` model needs nothing from the trainers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scoremix_plugin.errors import InputError

BN_EPS = 1e-5


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _out_size(size: int, stride: int, kernel: int = 3) -> int:
    # Spatial size after one conv with "same" padding (kernel // 2).
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        # The stride sits on the SECOND conv (the host's choice), so conv1 always sees full resolution.
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet: stem, four stride-2 stages, then BN2d -> flatten -> dropout -> Linear -> BN1d ("features").

    ``widths`` are the four stage widths (the host: 64, 128, 256, 512; the stem has ``widths[0]`` channels).
    ``stem_stride`` 1 is the host; the CPU presets use 2 (56x56 into layer1, 4x4 at the end) or 4 with a
    5x5 stem (``stem_kernel``; a 3x3 kernel at stride 4 would skip pixels).
    ``fp16`` runs the convolutions under CUDA autocast and the fc in float32, as the host does.
    """

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        *,
        stem_stride: int = 1,
        stem_kernel: int = 3,
        num_features: int = 512,
        dropout: float = 0.0,
        fp16: bool = False,
        input_size: int = 112,
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise InputError(f"IResNet needs 4 stages, got layers={list(layers)} widths={list(widths)}")
        self.fp16 = bool(fp16)
        self.num_features = int(num_features)
        self.conv1 = nn.Conv2d(
            3, widths[0], kernel_size=stem_kernel, stride=stem_stride, padding=stem_kernel // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(widths[0], eps=BN_EPS)
        self.prelu = nn.PReLU(widths[0])
        size = _out_size(input_size, stem_stride, stem_kernel)
        cin = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths), start=1):
            setattr(self, f"layer{i}", self._make_stage(cin, w, n))
            cin = w
            size = _out_size(size, 2)
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(cin * size * size, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self._init_weights()

    @staticmethod
    def _make_stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
        # Every stage halves the resolution, so its first block always needs a projection shortcut.
        downsample = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        )
        return nn.Sequential(
            IBasicBlock(cin, cout, 2, downsample), *(IBasicBlock(cout, cout) for _ in range(blocks - 1))
        )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # The embedding BN's scale stays 1 and is never trained (host): only its shift and statistics move.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        amp = self.fp16 and x.device.type == "cuda"
        with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=amp):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
        # The fc and the embedding BN run in float32 even under fp16 (host): the 25k-wide dot products
        # would lose precision in half.
        x = self.fc(x.float() if amp else x)
        return self.features(x)


def _host(layers: Sequence[int], **kw) -> IResNet:
    return IResNet(layers, **kw)


def _cpu(layers: Sequence[int], widths: Sequence[int], stem_stride: int = 2, **kw) -> IResNet:
    return IResNet(layers, widths, stem_stride=stem_stride, stem_kernel=3 if stem_stride <= 2 else 5, **kw)


# name -> constructor(num_features=, dropout=, fp16=). Feeds argparse ``choices=``.
BACKBONES: dict[str, Callable[..., IResNet]] = {
    "r18": partial(_host, (2, 2, 2, 2)),
    "r34": partial(_host, (3, 4, 6, 3)),
    "r50": partial(_host, (3, 4, 14, 3)),
    "r100": partial(_host, (3, 13, 30, 3)),
    "r200": partial(_host, (6, 26, 60, 6)),
    # CPU presets: strided stem, so several times the throughput of the same widths at full resolution.
    "r18_cpu": partial(_cpu, (2, 2, 2, 2), (16, 32, 64, 128)),  # quarter-width r18, 56x56 into layer1: the demo
    "r10_tiny": partial(_cpu, (1, 1, 1, 1), (8, 16, 32, 64), stem_stride=4),  # 28x28 into layer1: tests
}


def get_backbone(name: str, num_features: int = 512, fp16: bool = False, dropout: float = 0.0) -> IResNet:
    """Build a backbone by preset name (``r50`` is the host's default)."""
    try:
        ctor = BACKBONES[name]
    except KeyError:
        raise InputError(f"unknown network {name!r}; choices: {', '.join(BACKBONES)}") from None
    return ctor(num_features=num_features, dropout=dropout, fp16=fp16)


def _backbone_state_dict(obj: Any, path: Path) -> dict:
    """The backbone weights from a host ``model.pt`` or a checkpoint dict that holds them."""
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict, got {type(obj).__name__}")
    for key in ("state_dict_backbone", "backbone"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise InputError(f"{path}: no backbone state dict found (keys: {sorted(obj)[:8]})")
    # DistributedDataParallel prefixes every name with "module."
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_backbone(model_path: str | os.PathLike, network: str) -> IResNet:
    """A ``.pt`` / ``.pth`` state dict loaded (strict) into ``get_backbone(network)``, in eval mode, on the CPU."""
    from scoremix_plugin.io_utils import check_finite_weights, load_torch_safe

    p = Path(model_path)
    sd = _backbone_state_dict(load_torch_safe(p), p)
    check_finite_weights(sd, p)
    kwargs = {}
    # The embedding size is in the weights (fc: [D, 512*7*7] in the host's IResNets).
    if "fc.weight" in sd and len(sd["fc.weight"].shape) == 2:
        kwargs["num_features"] = int(sd["fc.weight"].shape[0])
    module = get_backbone(network, **kwargs)
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split("\n")[:2]).strip()  # the full list of mismatches can be pages long
        raise InputError(f"{p}: weights do not fit backbone '{network}' (--network): {detail[:300]}") from e
    return module.eval()
