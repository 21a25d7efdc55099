"""The raw network F of EDM: diffusers' UNet2DModel with one learnable embedding per class, or EDM2's
magnitude-preserving U-Net (network_edm2.py; presets ``edm2-*``, kwargs with ``arch="edm2"``).

The class table is UNet2DModel's own ``class_embedding`` (an ``nn.Embedding`` added to the time
embedding, as with ``class_embed_type=None, num_class_embeds=...``), with ``num_classes + 1`` rows:
the last row is the null class used by label dropout and classifier-free guidance. It is exported
by ``scoremix export-conditions`` (``class_table``). Besides integer labels the network takes label
weights (float ``[B, num_classes + 1]``): the embedding is then the weighted sum of table rows, which
is AugGen's condition mixing (the sampler's ``mix_space="condition"``).

Presets are plain keyword dicts for UNet2DModel (or EDM2UNet), so a checkpoint can store the exact arguments it
was built with and be rebuilt even if a preset changes later.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scoremix_plugin.errors import InputError

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

# EDM2 presets (Karras et al. 2024): ``model_channels`` x ``channel_mult`` per level, ``num_blocks``
# blocks per level, attention at the levels ``attn_levels`` (0 = full resolution) and always in the
# bottleneck. XS / S use the paper's widths (128 / 192, [1, 2, 3, 4], 3 blocks); at 112 px the levels
# are 112, 56, 28, 14 and attention sits at 28 and 14, the levels where EDM2 has it at 64 px (16, 8).
EDM2_PRESETS: dict[str, dict[str, Any]] = {
    "edm2-s": dict(resolution=112, model_channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3, attn_levels=(2, 3)),
    "edm2-xs": dict(resolution=112, model_channels=128, channel_mult=(1, 2, 3, 4), num_blocks=3, attn_levels=(2, 3)),
    # The CPU demo size at 32 px (levels 32, 16, 8, 4 with 32, 32, 64, 128 channels; attention only in the
    # 4x4 bottleneck, as tiny-cpu): 3.0M parameters, 0.44 GFLOP per forward (tiny-cpu: 3.2M, 0.56); a training
    # step (batch 32, 1 thread) measured 0.82x tiny-cpu's in fp32 and 0.78x in bf16 on the shared 2-core CPU
    # (benchmarks/generator_presets.py; the 32-64-64-128 variant was 1.28x).
    "edm2-cpu": dict(
        resolution=32, model_channels=32, channel_mult=(1, 1, 2, 4), num_blocks=1, attn_levels=(), channels_per_head=32
    ),
    # The CPU demo's autoguidance guide: edm2-cpu at half the width (16, 16, 32, 64 channels), ~1/4 of its FLOPs.
    "edm2-cpu-xs": dict(
        resolution=32, model_channels=16, channel_mult=(1, 1, 2, 4), num_blocks=1, attn_levels=(), channels_per_head=16
    ),
    # Tests only, 16 px.
    "edm2-test": dict(
        resolution=16, model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_levels=(1,), channels_per_head=16
    ),
}
PRESETS.update({name: dict(kw, arch="edm2") for name, kw in EDM2_PRESETS.items()})


def _edm2_kwargs(preset: str, kw: dict[str, Any], num_classes: int, res: int) -> dict[str, Any]:
    levels = len(kw["channel_mult"])
    if res % 2 ** (levels - 1):
        raise InputError(
            f"preset {preset!r} halves the image {levels - 1} times: "
            f"resolution {res} must be a multiple of {2 ** (levels - 1)}"
        )
    attn = [res >> level for level in kw.pop("attn_levels")]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()} | {
        "img_resolution": res,
        "label_dim": int(num_classes) + 1,
        "attn_resolutions": attn,
    }


def network_kwargs(preset: str, num_classes: int, resolution: int | None = None) -> dict[str, Any]:
    """The plain (checkpoint-safe) keyword arguments that build a preset for ``num_classes`` real classes."""
    if preset not in PRESETS:
        raise InputError(f"unknown generator preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = dict(PRESETS[preset])
    res = int(resolution or kw.pop("resolution"))
    kw.pop("resolution", None)
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    if kw.get("arch") == "edm2":
        return _edm2_kwargs(preset, kw, num_classes, res)
    halvings = len(kw["block_out_channels"]) - 1
    if res % 2**halvings:
        raise InputError(
            f"preset {preset!r} halves the image {halvings} times: resolution {res} must be a multiple of {2**halvings}"
        )
    # Lists, not tuples: the kwargs go into checkpoints and configs as plain data.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()} | {
        "sample_size": res,
        "num_class_embeds": int(num_classes) + 1,
    }


def network_resolution(kwargs: dict[str, Any]) -> int:
    """The image size a network's kwargs build (either architecture)."""
    return int(kwargs["img_resolution"] if kwargs.get("arch") == "edm2" else kwargs["sample_size"])


class SoftLabelEmbedding(nn.Embedding):
    """``nn.Embedding`` that also takes label weights (float ``[B, num_embeddings]``): ``weights @ table``.

    Same parameter name (``weight``) as the embedding it replaces, so checkpoints are unchanged. The
    product is taken in float32 outside autocast: a one-hot row then gives exactly the looked-up row.
    """

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if not labels.is_floating_point():
            return super().forward(labels)
        if labels.shape[-1] != self.num_embeddings:
            raise ValueError(
                f"label weights have {labels.shape[-1]} columns, the class table {self.num_embeddings} "
                "rows (real classes + the null class)"
            )
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

    def condition_table(self) -> torch.Tensor:
        """[num_classes + 1, emb_dim]: each class's condition vector (as EDM2UNet.condition_table)."""
        return self.class_table.weight

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """``class_labels``: int64 ``[B]`` or label weights float ``[B, num_classes + 1]``."""
        return self.unet(x_in, c_noise, class_labels=class_labels, return_dict=False)[0]


def build_network(kwargs: dict[str, Any]) -> nn.Module:
    """The network a checkpoint's ``network_kwargs`` describe (no ``arch`` key: UNet2DModel)."""
    if kwargs.get("arch") == "edm2":
        from scoremix_plugin.generation.network_edm2 import build_edm2

        return build_edm2(dict(kwargs))
    return ClassConditionalUNet(**kwargs)
