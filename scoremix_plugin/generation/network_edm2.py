"""The EDM2 magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
of Diffusion Models", configuration G): the raw network F for generation/edm.py's EDMPrecond.

Every layer keeps the expected magnitude (RMS) of its activations at 1, so nothing drifts during
training: weights are forcibly normalised before each training forward and normalised again in the
forward pass (MPConv, no biases), activations pass through MP-SiLU (SiLU / 0.596), residual and
attention branches are joined by MP-sums with t = 0.3 and U-Net skips by MP-concatenation with t = 0.5,
encoder blocks use pixel norm instead of group norm, attention is cosine attention (pixel-normed q,
k), the noise level enters through MP-Fourier features, and the output passes through a learned gain
that starts at 0.

The class embedding is an MP linear layer over ``num_classes + 1`` one-hot inputs (the last one is
the null class of label dropout and classifier-free guidance), which is the same as a table whose
columns are the normalised weight's columns: ``condition_table()`` returns it ([C + 1, D]) for
``scoremix export-conditions``. ``forward`` takes class indices [B] or, for condition mixing, a float
[B, C + 1] weighting of the table's rows (one-hot rows reproduce the indices).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SILU_GAIN = 0.596  # E[silu(x)^2]^0.5 for x ~ N(0, 1): dividing by it keeps unit magnitude


def normalize(x: torch.Tensor, dim=None, eps: float = 1e-4) -> torch.Tensor:
    """x scaled to unit RMS over ``dim`` (default: all but the first); eps guards all-zero slices."""
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    rms = norm * math.sqrt(norm.numel() / x.numel())
    return x / (rms + eps).to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / SILU_GAIN


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """(1 - t) a + t b, rescaled so two unit-magnitude uncorrelated inputs give a unit-magnitude output."""
    b = b.to(a.dtype)
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Channel concatenation weighted (1 - t) : t that keeps unit magnitude whatever the channel counts."""
    na, nb = a.shape[1], b.shape[1]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    return torch.cat([a * (c / math.sqrt(na) * (1 - t)), b.to(a.dtype) * (c / math.sqrt(nb) * t)], dim=1)


class MPFourier(nn.Module):
    """Random Fourier features sqrt(2) cos(2 pi (f x + phi)) of a scalar: unit magnitude for any x."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0):
        super().__init__()
        # Buffers, not parameters: fixed at init, but saved in the state dict so a checkpoint rebuilds them.
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.outer(x.float().reshape(-1), self.freqs.float()) + self.phases.float()
        return y.cos() * math.sqrt(2)


class MPConv(nn.Module):
    """Bias-free convolution (kernel [k, k]) or linear layer (kernel []) with forced weight normalisation.

    In training mode each forward first rescales the stored weight to unit RMS per output channel (so
    Adam's steps stay relative to a fixed weight norm and the effective learning rate does not decay),
    then normalises again differentiably and divides by sqrt(fan_in): unit-magnitude inputs give
    unit-magnitude outputs (times ``gain``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...] | list[int] = ()):
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def normalized_weight(self, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        w = self.weight.float()
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(w))  # forced weight normalisation
        w = normalize(w)
        return w * (gain / math.sqrt(w[0].numel()))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        w = self.normalized_weight(gain).to(x.dtype)  # under autocast F casts both to the autocast type
        if w.ndim == 2:
            return F.linear(x, w)
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


class Block(nn.Module):
    """EDM2 encoder / decoder block: [resample] -> (enc: skip conv, pixel norm) -> residual branch with the
    embedding as a multiplicative modulation -> MP-sum -> optional cosine self-attention -> MP-sum."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        *,
        flavor: str = "enc",
        resample: str = "keep",
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float | None = 256,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.flavor, self.resample = flavor, resample
        self.num_heads = max(out_channels // channels_per_head, 1) if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))  # the embedding's modulation starts as identity
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, (3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels)
        self.conv_res1 = MPConv(out_channels, out_channels, (3, 3))
        self.conv_skip = MPConv(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, (1, 1)) if attention else None
        self.attn_proj = MPConv(out_channels, out_channels, (1, 1)) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # A 2x2 box filter down and nearest-neighbour up: EDM2's [1, 1] resampling filter.
        if self.resample == "down":
            x = F.avg_pool2d(x, 2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm: each pixel's channel vector to unit RMS
        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * c[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.attn_qkv is not None:
            n, ch, h, w = x.shape
            qkv = self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, h * w)
            q, k, v = normalize(qkv, dim=2).unbind(3)  # cosine attention: q, k, v pixel-normed per head
            # [n, heads, tokens, head_dim]; the default 1/sqrt(head_dim) scale is EDM2's.
            y = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
            y = self.attn_proj(y.transpose(2, 3).reshape(n, ch, h, w))
            x = mp_sum(x, y, t=self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x


class EDM2UNet(nn.Module):
    """F(x_in, c_noise, class_labels) -> [B, 3, R, R]: EDM2's U-Net for ``label_dim = num_classes + 1``.

    ``channel_mult`` gives one level per entry (every level but the first halves the image), with
    ``num_blocks`` encoder blocks (decoder: one more) per level; attention at ``attn_resolutions``.
    """

    def __init__(
        self,
        *,
        img_resolution: int,
        label_dim: int,
        model_channels: int = 192,
        channel_mult=(1, 2, 3, 4),
        channel_mult_noise: int | None = None,
        channel_mult_emb: int | None = None,
        num_blocks: int = 3,
        attn_resolutions=(16, 8),
        label_balance: float = 0.5,
        concat_balance: float = 0.5,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        arch: str = "edm2",
        img_channels: int = 3,
    ):
        super().__init__()
        if arch != "edm2":
            raise ValueError(f"EDM2UNet builds arch 'edm2', got {arch!r}")
        self.kwargs = dict(
            img_resolution=img_resolution,
            label_dim=label_dim,
            model_channels=model_channels,
            channel_mult=list(channel_mult),
            channel_mult_noise=channel_mult_noise,
            channel_mult_emb=channel_mult_emb,
            num_blocks=num_blocks,
            attn_resolutions=list(attn_resolutions),
            label_balance=label_balance,
            concat_balance=concat_balance,
            channels_per_head=channels_per_head,
            dropout=dropout,
            arch=arch,
            img_channels=img_channels,
        )
        cblock = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise else cblock[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb else max(cblock)
        self.label_dim, self.label_balance, self.concat_balance = label_dim, label_balance, concat_balance
        self.out_gain = nn.Parameter(torch.zeros([]))  # F starts at 0: D starts as c_skip x
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb)
        self.emb_label = MPConv(label_dim, cemb)
        blk = dict(channels_per_head=channels_per_head, dropout=dropout)

        self.enc = nn.ModuleDict()
        cout = img_channels + 1  # + a constant channel of ones: lets the first conv see the image border
        for level, channels in enumerate(cblock):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, (3, 3))
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, flavor="enc", resample="down", **blk)
            for i in range(num_blocks):
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_block{i}"] = Block(
                    cin, cout, cemb, flavor="enc", attention=res in attn_resolutions, **blk
                )
        self.dec = nn.ModuleDict()
        skips = [b.out_channels for b in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, cemb, flavor="dec", attention=True, **blk)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, flavor="dec", **blk)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, cemb, flavor="dec", resample="up", **blk)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                self.dec[f"{res}x{res}_block{i}"] = Block(
                    cin, cout, cemb, flavor="dec", attention=res in attn_resolutions, **blk
                )
        self.out_conv = MPConv(cout, img_channels, (3, 3))

    def condition_table(self) -> torch.Tensor:
        """[label_dim, D] float32: the class embedding of each class (last row: the null class)."""
        return self.emb_label.normalized_weight(math.sqrt(self.label_dim)).t()

    def class_embedding(self, class_labels: torch.Tensor) -> torch.Tensor:
        table = self.condition_table()
        if class_labels.is_floating_point():  # a weighting of the table's rows (condition mixing)
            if class_labels.ndim != 2 or class_labels.shape[1] != self.label_dim:
                raise ValueError(f"float class_labels must be [B, {self.label_dim}], got {tuple(class_labels.shape)}")
            return class_labels.float() @ table
        return table[class_labels.long()]

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        # The embedding is a few hundred numbers per image: float32, outside autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            emb = self.emb_noise(self.emb_fourier(c_noise))
            emb = mp_silu(mp_sum(emb, self.class_embedding(class_labels), t=self.label_balance))
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)


class UncertaintyWeight(nn.Module):
    """EDM2's u(sigma): the log-variance of the loss at noise level c_noise (MP-Fourier -> MP linear).

    Trained jointly through ``loss = lambda(sigma) / exp(u) * ||D - y||^2 + u`` (edm.edm_loss), it
    equalises the loss's contribution across noise levels; only training uses it.
    """

    def __init__(self, channels: int = 128):
        super().__init__()
        self.fourier = MPFourier(channels)
        self.linear = MPConv(channels, 1)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.linear(self.fourier(c_noise)).reshape(-1)


def build_edm2(kwargs: dict[str, Any]) -> EDM2UNet:
    return EDM2UNet(**kwargs)
