"""The raw network F of EDM: diffusers' UNet2DModel with one learnable embedding per class.

The class table is UNet2DModel's own ``class_embedding`` (an ``nn.Embedding`` added to the time
embedding, as with ``class_embed_type=None, num_class_embeds=...``), with ``num_classes + 1`` rows:
the last row is the null class used by label dropout and classifier-free guidance. It is exported
by ``scoremix export-conditions`` (``class_table``). Besides integer labels the network takes label
weights (float ``[B, num_classes + 1]``): the embedding is then the weighted sum of table rows, which
is AugGen's condition mixing (the sampler's ``mix_space="condition"``).

Presets are plain keyword dicts for UNet2DModel, so a checkpoint can store the exact arguments it
was built with and be rebuilt even if a preset changes later.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# name -> UNet2DModel keyword arguments (besides sample_size and num_class_embeds) and the
# resolution it was designed for. Every down-block but the last halves the image, so the
# resolution must be a multiple of 2 ** (len(block_out_channels) - 1).
PRESETS: dict[str, dict[str, Any]] = {
    # The CPU demo (~3.2M parameters at 32 px): attention only at the 4x4 level, where it is cheap.
    "tiny-cpu": dict(
        resolution=32,
        block_out_channels=(32, 64, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=32,
    ),
    # 112 px = 7 * 16: four halvings 112 -> 56 -> 28 -> 14 -> 7; attention at 14 and 7.
    "gpu-112": dict(
        resolution=112,
        block_out_channels=(128, 128, 256, 256, 512),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=64,
    ),
    # Tests only: a few thousand parameters' worth of U-Net, 16 px.
    "test-micro": dict(
        resolution=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=16,
    ),
}


def network_kwargs(preset: str, num_classes: int, resolution: int | None = None) -> dict[str, Any]:
    """The plain (checkpoint-safe) keyword arguments that build a preset for ``num_classes`` real classes."""
    if preset not in PRESETS:
        raise ValueError(f"unknown generator preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = dict(PRESETS[preset])
    res = int(resolution or kw.pop("resolution"))
    kw.pop("resolution", None)
    halvings = len(kw["block_out_channels"]) - 1
    if res % 2**halvings:
        raise ValueError(f"preset {preset!r} halves the image {halvings} times: "
                         f"resolution {res} must be a multiple of {2**halvings}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    # Lists, not tuples: the kwargs go into checkpoints and configs as plain data.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()} | {
        "sample_size": res, "num_class_embeds": int(num_classes) + 1}


class SoftLabelEmbedding(nn.Embedding):
    """``nn.Embedding`` that also takes label weights (float ``[B, num_embeddings]``): ``weights @ table``.

    Same parameter name (``weight``) as the embedding it replaces, so checkpoints are unchanged. The
    product is taken in float32 outside autocast: a one-hot row then gives exactly the looked-up row.
    """

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if not labels.is_floating_point():
            return super().forward(labels)
        if labels.shape[-1] != self.num_embeddings:
            raise ValueError(f"label weights have {labels.shape[-1]} columns, the class table {self.num_embeddings} "
                             "rows (real classes + the null class)")
        with torch.autocast(device_type=labels.device.type, enabled=False):
            return labels.float() @ self.weight.float()


class ClassConditionalUNet(nn.Module):
    """F(x_in, c_noise, class_labels): UNet2DModel fed EDM's c_noise as its (continuous) time step."""

    def __init__(self, **unet_kwargs: Any):
        super().__init__()
        from diffusers import UNet2DModel  # heavy import, only when a network is built

        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in unet_kwargs.items()}
        self.unet = UNet2DModel(in_channels=3, out_channels=3, class_embed_type=None, **kw)
        table = self.unet.class_embedding  # _weight: reuse the initialised rows (no second random draw)
        self.unet.class_embedding = SoftLabelEmbedding(*table.weight.shape, _weight=table.weight)
        self.kwargs = dict(unet_kwargs)

    @property
    def class_table(self) -> nn.Embedding:
        """[num_classes + 1, emb_dim]; the last row is the null class."""
        return self.unet.class_embedding

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """``class_labels``: int64 ``[B]`` or label weights float ``[B, num_classes + 1]``."""
        return self.unet(x_in, c_noise, class_labels=class_labels, return_dict=False)[0]


def build_network(kwargs: dict[str, Any]) -> ClassConditionalUNet:
    return ClassConditionalUNet(**kwargs)
