"""The ScoreMix sampler: EDM's deterministic Heun (Algorithm 1, no churn), Euler, or DPM-Solver++(2M) over a
composed denoiser.

ScoreMix mixes denoiser OUTPUTS of K source classes (arXiv 2506.10226):
``D_mix(x; sigma) = sum_k w_k D(x; sigma, c_k)`` with convex weights (sum 1), which equals mixing
the scores because score = (D - x) / sigma^2. Guidance then extrapolates away from a reference:
``D_w = D_ref + w (D_mix - D_ref)``, where D_ref is the null class (classifier-free guidance) or the
same mix under a weaker "guide" network (autoguidance, Karras et al. 2024).

All conditions of one solver stage (B*K class inputs, plus B null inputs for CFG) go through ONE
batched forward per network, as DiT does for CFG: K-way mixing costs one bigger batch, not K calls.

``mix_space="condition"`` is AugGen's alternative (Rahimi et al. 2025): ONE forward per image on the
interpolated class embedding ``sum_k w_k c_k`` (label weights through the network's class table; AugGen
used w = 0.7, 0.7, not convex) instead of K forwards whose outputs are mixed. Network inputs per image
and solver stage (``network_evaluations``):

=========== ======================= ==========================
guidance    mix_space="score"       mix_space="condition"
=========== ======================= ==========================
none        K                       1
cfg         K + 1 (null class)      2
autoguidance K main + K guide       1 main + 1 guide
=========== ======================= ==========================

Solvers (network evaluations per image = stages x inputs per stage):

- ``heun``: EDM's 2nd-order Heun, 2N - 1 stages for N steps (the last step, to sigma = 0, is Euler's);
- ``euler``: 1st order, N stages;
- ``dpm2m``: DPM-Solver++(2M) (Lu et al. 2022, multistep, data prediction) written in EDM's parameterisation
  (x = y + sigma n, lambda = -log sigma): 2nd order from ONE evaluation per step, reusing the previous
  step's denoiser output; N stages. Its first step and the last (to sigma = 0) are 1st order.

``guidance_interval=(sigma_lo, sigma_hi)`` applies guidance only where sigma_lo < sigma <= sigma_hi
(Kynkaanniemi et al. 2024): elsewhere the reference (null class or guide) is not evaluated at all, so the
count drops. ``mix_window`` likewise: outside it one class is evaluated instead of K. ``stage_sigmas`` lists
where the network runs; ``network_evaluations`` counts from it, so the count and the sampler cannot disagree.

Every image's initial noise comes from its own torch.Generator (``image_generator``), so an image can
be regenerated alone and does not depend on which batch it was drawn in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from scoremix_plugin.generation.edm import RHO, SIGMA_MAX, SIGMA_MIN, sigma_steps
from scoremix_plugin.generation.settings import GUIDANCE, MIX_SPACES, SOLVERS

__all__ = ["GUIDANCE", "MIX_SPACES", "SOLVERS", "image_generator", "network_evaluations", "sample", "stage_sigmas"]


def image_generator(seed: int, identity: int, index: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from a stable hash of (global seed, identity, image index).

    sha256 rather than Python's hash(): the latter is salted per process, the former is the same
    on every machine and run, which is what makes a redone shard byte-identical. Noise is drawn on the
    generator's device: CPU generators (the default) give the same noise whatever device samples.
    """
    from scoremix_plugin.io_utils import stable_seed

    gen = torch.Generator(device=device)
    gen.manual_seed(stable_seed("scoremix-noise", int(seed), int(identity), int(index)))
    return gen


def _device_of(net) -> torch.device:
    try:
        return next(net.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _check_weights(weights: torch.Tensor, allow_nonconvex: bool) -> None:
    w = weights.detach().double().cpu()
    if not torch.isfinite(w).all():
        raise ValueError("mixing weights must be finite")
    if allow_nonconvex:
        return
    sums = w.sum(1)
    bad = (w < 0).any(1) | ((sums - 1).abs() > 1e-5)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"mixing weights must be convex (each >= 0, each row summing to 1 within 1e-5); row {row} is "
            f"{w[row].tolist()} (sum {float(sums[row]):.6f}). Non-convex mixes wash out (sum < 1) or blow out "
            "(sum > 1) the images; pass allow_nonconvex=True to sample them anyway"
        )


@torch.no_grad()
def sample(
    denoiser,
    classes: torch.Tensor,
    weights: torch.Tensor,
    *,
    generators: Sequence[torch.Generator],
    num_steps: int = 32,
    solver: str = "heun",
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    guidance: str = "none",
    guidance_scale: float = 1.0,
    guide=None,
    mix_window: tuple[float, float] | None = None,
    outside_window: int = 0,
    allow_nonconvex: bool = False,
    mix_space: str = "score",
    guidance_interval: tuple[float, float] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample B images, image b from the mix of classes[b, :] with weights[b, :]; float32 [B,3,R,R] in [-1,1].

    ``mix_window=(sigma_lo, sigma_hi)``: mixing applies where sigma_lo <= sigma <= sigma_hi; elsewhere only the
    class in column ``outside_window`` (default 0, the pair's first class) is evaluated: K - 1 fewer inputs.
    ``guidance``: "none"; "cfg" (reference = null class, one null input per image whatever K);
    "autoguidance" (reference = the same mix under ``guide``). ``guidance_scale`` is w (1 = no guidance).
    ``mix_space``: "score" mixes denoiser outputs (ScoreMix; weights must be convex unless
    ``allow_nonconvex``); "condition" feeds the weighted class embeddings to one forward (AugGen; any finite
    weights, since they scale an embedding, not an image). The network must then take label weights
    ``[B, num_classes + 1]`` as ``class_labels`` (generation/network.py does).
    ``guidance_interval=(sigma_lo, sigma_hi)``: guide only where sigma_lo < sigma <= sigma_hi (None: everywhere).
    """
    # 1. Check the request.
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
    if mix_space not in MIX_SPACES:
        raise ValueError(f"mix_space must be one of {MIX_SPACES}, got {mix_space!r}")
    classes = torch.as_tensor(classes)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if classes.ndim != 2 or weights.shape != classes.shape:
        raise ValueError(
            f"classes and weights must both be [B, K]; got {tuple(classes.shape)} and {tuple(weights.shape)}"
        )
    if classes.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"classes must be an integer tensor, got {classes.dtype}")
    B, K = classes.shape
    if len(generators) != B:
        raise ValueError(f"need one generator per image: {B} images, {len(generators)} generators")
    num_classes, R = int(denoiser.num_classes), int(denoiser.resolution)
    if (classes < 0).any() or (classes >= num_classes).any():
        raise ValueError(
            f"class labels must be in [0, {num_classes}) (the null class {num_classes} is not a "
            f"source class); got {classes.min().item()}..{classes.max().item()}"
        )
    _check_weights(weights, allow_nonconvex or mix_space == "condition")
    if guidance == "autoguidance":
        if guide is None:
            raise ValueError("guidance='autoguidance' needs guide= (a weaker denoiser of the same classes)")
        if int(guide.num_classes) != num_classes or int(guide.resolution) != R:
            raise ValueError(
                f"guide has {guide.num_classes} classes at {guide.resolution} px; the main denoiser "
                f"{num_classes} at {R} px"
            )
    if mix_window is not None:
        lo, hi = (float(v) for v in mix_window)
        if not 0 <= lo <= hi:
            raise ValueError(f"mix_window must be (sigma_lo, sigma_hi) with 0 <= lo <= hi, got {mix_window}")
    if isinstance(outside_window, bool) or not isinstance(outside_window, int) or not 0 <= outside_window < K:
        raise ValueError(f"outside_window must be a column index in [0, {K}), got {outside_window!r}")
    g_lo, g_hi = check_guidance_interval(guidance_interval)
    if not math.isfinite(float(guidance_scale)):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}")
    # w = 1 gives D_ref + (D_mix - D_ref) = D_mix: skip the reference's evaluations.
    guided_any = guidance != "none" and float(guidance_scale) != 1.0

    device = _device_of(denoiser)
    classes, weights = classes.to(device=device, dtype=torch.int64), weights.to(device)

    # 2. The composed denoiser at one noise level: one batched forward per network.
    def composed(x: torch.Tensor, t: float) -> torch.Tensor:
        in_window = mix_window is None or lo <= t <= hi
        guided = guided_any and g_lo < t <= g_hi
        if in_window:
            cls, w = classes, weights
        else:
            cls, w = classes[:, outside_window : outside_window + 1], torch.ones(B, 1, device=device)
        k = cls.shape[1]
        if mix_space == "condition":
            return conditioned(x, t, cls, w)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * B, *x.shape[1:])
        labels = cls.t().reshape(-1)  # condition-major: rows [k*B:(k+1)*B] are column k
        if guided and guidance == "cfg":
            x_rep = torch.cat([x_rep, x])
            labels = torch.cat([labels, torch.full((B,), num_classes, device=device, dtype=torch.int64)])
        sigma = torch.full((labels.shape[0],), t, device=device, dtype=torch.float32)
        out = denoiser(x_rep, sigma, labels).float()
        w_view = w.t().reshape(k, B, 1, 1, 1)
        D_mix = (w_view * out[: k * B].reshape(k, *x.shape)).sum(0)
        if not guided:
            return D_mix
        if guidance == "cfg":
            D_ref = out[k * B :]
        else:
            ref = guide(x_rep, sigma, labels).float()
            D_ref = (w_view * ref.reshape(k, *x.shape)).sum(0)
        return D_ref + float(guidance_scale) * (D_mix - D_ref)

    def conditioned(x: torch.Tensor, t: float, cls: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """AugGen: one input per image whose label weights are sum_k w_k onehot(c_k)."""
        guided = guided_any and g_lo < t <= g_hi
        soft = torch.zeros(B, num_classes + 1, device=device).scatter_add_(1, cls, w.float())
        x_in, labels = x, soft
        if guided and guidance == "cfg":
            null = torch.zeros_like(soft)
            null[:, num_classes] = 1
            x_in, labels = torch.cat([x, x]), torch.cat([soft, null])
        sigma = torch.full((x_in.shape[0],), t, device=device, dtype=torch.float32)
        out = denoiser(x_in, sigma, labels).float()
        D_mix = out[:B]
        if not guided:
            return D_mix
        D_ref = out[B:] if guidance == "cfg" else guide(x, sigma, soft).float()
        return D_ref + float(guidance_scale) * (D_mix - D_ref)

    # 3. Initial noise, image by image from its own generator, then the solver.
    t_steps = sigma_steps(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    noise = torch.stack([torch.randn(3, R, R, generator=g, device=g.device).to(device) for g in generators])
    x_next = noise * float(t_steps[0])
    steps = list(zip(t_steps[:-1].tolist(), t_steps[1:].tolist()))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{solver}-{num_steps}", leave=False)
    D_prev, h_prev = None, None  # dpm2m's history: the previous step's denoiser output and its log-sigma step
    for t_cur, t_next in steps:
        x_cur = x_next
        D_cur = composed(x_cur, t_cur)
        if solver == "dpm2m":
            if t_next == 0:  # lambda = -log sigma is infinite at 0: the last step is 1st order, x = D
                x_next = D_cur
                continue
            h = math.log(t_cur / t_next)  # lambda_next - lambda_cur > 0
            D_eff = D_cur
            if D_prev is not None:  # 2nd order: extrapolate D linearly in lambda from the last two outputs
                r = h_prev / h
                D_eff = (1 + 1 / (2 * r)) * D_cur - (1 / (2 * r)) * D_prev
            # Exact integration of the data-prediction ODE with D held at D_eff over the step.
            x_next = (t_next / t_cur) * x_cur + (1 - t_next / t_cur) * D_eff
            D_prev, h_prev = D_cur, h
            continue
        d_cur = (x_cur - D_cur) / t_cur  # dx/dsigma = (x - D) / sigma
        x_next = x_cur + (t_next - t_cur) * d_cur  # Euler step
        if solver == "heun" and t_next > 0:  # 2nd-order correction (trapezoid), skipped at sigma = 0
            d_prime = (x_next - composed(x_next, t_next)) / t_next
            x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.clamp(-1, 1)


def check_guidance_interval(interval: tuple[float, float] | None) -> tuple[float, float]:
    """(lo, hi) with guidance where lo < sigma <= hi; None = everywhere."""
    if interval is None:
        return -1.0, math.inf
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be (sigma_lo, sigma_hi), got {interval!r}") from None
    if not (math.isfinite(lo) and 0 <= lo < hi) or math.isnan(hi):
        raise ValueError(f"guidance_interval must be (sigma_lo, sigma_hi) with 0 <= lo < hi, got {interval!r}")
    return lo, hi


def stage_sigmas(
    num_steps: int, solver: str, *, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> list[float]:
    """The noise levels at which ``sample`` runs the network, in order (one entry per solver stage)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    t = sigma_steps(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).tolist()
    out = []
    for t_cur, t_next in zip(t[:-1], t[1:]):
        out.append(t_cur)
        if solver == "heun" and t_next > 0:
            out.append(t_next)
    return out


def network_evaluations(
    num_steps: int,
    solver: str,
    num_conditions: int,
    guidance: str = "none",
    guidance_scale: float = 1.0,
    mix_space: str = "score",
    guidance_interval: tuple[float, float] | None = None,
    *,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    mix_window: tuple[float, float] | None = None,
) -> int:
    """Network inputs per image (counting each condition and the guide's), stage by stage as ``sample`` runs."""
    lo, hi = check_guidance_interval(guidance_interval)
    guided = guidance != "none" and float(guidance_scale) != 1.0

    def per_stage(t: float) -> int:
        k = num_conditions if mix_window is None or mix_window[0] <= t <= mix_window[1] else 1
        inputs = k if mix_space == "score" else 1  # condition mixing: one input whatever K
        reference = 1 if guidance == "cfg" else inputs  # CFG: one null input; autoguidance: the guide's inputs
        return inputs + (reference if guided and lo < t <= hi else 0)

    return sum(per_stage(t) for t in stage_sigmas(num_steps, solver, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho))
