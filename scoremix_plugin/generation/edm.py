"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

In the paper's notation: a raw network F is wrapped into the denoiser
``D(x; sigma, c) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma), c)`` (Table 1,
"Network and preconditioning"), trained with ``ln sigma ~ N(P_mean, P_std^2)`` and the loss weight
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`` (Eq. 8 with Table 1's choices),
and sampled on the time steps of Eq. 5.
"""

from __future__ import annotations

import torch
from torch import nn

SIGMA_DATA = 0.5  # std of the training images in [-1, 1] as EDM assumes
P_MEAN, P_STD = -1.2, 1.2  # ln(sigma) ~ N(P_mean, P_std^2) during training
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # sampling schedule (Eq. 5)


def precond_coefficients(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) at each sigma (Table 1, EDM column)."""
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1 / (sigma**2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """lambda(sigma): makes the effective target of F unit-variance at every noise level."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def autocast_dtype(dtype: torch.dtype | None, device: str | torch.device) -> torch.dtype | None:
    """``dtype`` where autocast in it pays off on ``device``, else None (float32), with a warning.

    A CPU without AVX-512 (e.g. AVX2 only) has no bfloat16 kernels: oneDNN emulates them, and a
    measured conv block ran 18x SLOWER under bf16 autocast than in float32 on such a CPU, which would
    leave a time-capped training run (the demo's generator) with a few dozen steps instead of 1,200.
    """
    if dtype is None:
        return None
    dev = torch.device(device)
    if dev.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        cap = torch.backends.cpu.get_cpu_capability()
        if not cap.startswith("AVX512"):
            import warnings

            warnings.warn(
                f"{dtype} autocast requested on a CPU with {cap} (no AVX-512): running float32, "
                "which is many times faster there",
                stacklevel=2,
            )
            return None
    return dtype


class EDMPrecond(nn.Module):
    """D(x; sigma, class_labels) around a raw network ``net(x_in, c_noise, class_labels) -> F``.

    ``num_classes`` counts the real classes; index ``num_classes`` is the null class (label dropout,
    classifier-free guidance). ``amp_dtype`` (e.g. torch.bfloat16) runs F under autocast while the
    preconditioning and the output stay float32, so the sampler's arithmetic is float32 either way.
    """

    def __init__(self, net: nn.Module, *, num_classes: int, resolution: int, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.sigma_data = float(sigma_data)
        self.amp_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        x = x.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = precond_coefficients(sigma, self.sigma_data)
        view = (-1, 1, 1, 1)
        x_in = c_in.reshape(view) * x
        if self.amp_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.amp_dtype):
                F_x = self.net(x_in, c_noise, class_labels)
        else:
            F_x = self.net(x_in, c_noise, class_labels)
        return c_skip.reshape(view) * x + c_out.reshape(view) * F_x.float()


def sample_training_sigma(
    batch: int, *, generator: torch.Generator | None = None, device=None, P_mean: float = P_MEAN, P_std: float = P_STD
) -> torch.Tensor:
    """ln(sigma) ~ N(P_mean, P_std^2): concentrates training where the loss can still be reduced."""
    rnd = torch.randn(batch, generator=generator, device=device)
    return (rnd * P_std + P_mean).exp()


def edm_loss(
    denoiser: nn.Module,
    y: torch.Tensor,
    class_labels: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    sigma_data: float = SIGMA_DATA,
    logvar: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image loss lambda(sigma) * mean ||D(y + sigma n; sigma, c) - y||^2 with given sigma [B], n ~ N(0, I).

    Sigma and noise come from the caller so the loss is a pure function (golden tests, exact resume).
    The mean over pixels (not the paper's sum) keeps the numbers readable; Adam does not care.
    ``logvar`` [B] (EDM2's learned u(sigma), Eq. 21): the loss becomes ``that / exp(u) + u``, the mean over
    pixels of EDM2's per-pixel ``lambda / exp(u) (D - y)^2 + u``; u learns the loss's log-variance per noise
    level and so equalises the noise levels' contributions.
    """
    view = (-1, 1, 1, 1)
    D = denoiser(y + sigma.reshape(view) * noise, sigma, class_labels)
    per_pixel = loss_weight(sigma, sigma_data).reshape(view) * (D - y) ** 2
    per_image = per_pixel.flatten(1).mean(1)
    if logvar is not None:
        logvar = logvar.float().reshape(-1)
        per_image = per_image / logvar.exp() + logvar
    return per_image


def sigma_steps(
    num_steps: int, *, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO, device=None
) -> torch.Tensor:
    """Eq. 5: sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, i < N, then sigma_N = 0.

    Returns N + 1 float64 values (float64 so the last small steps are exact before the cast).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    frac = i / max(num_steps - 1, 1)
    t = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64, device=device)])
