"""EDM preconditioning, loss and schedule (golden numbers) and the ScoreMix sampler (analytic cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from denoisers import Counting, micro_denoiser

from scoremix_plugin.generation.edm import (
    EDMPrecond,
    edm_loss,
    precond_coefficients,
    sample_training_sigma,
    sigma_steps,
)
from scoremix_plugin.generation.sampler import image_generator, network_evaluations, sample

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# EDM formulas.


def test_precond_coefficients_golden():
    c_skip, c_out, c_in, c_noise = precond_coefficients(torch.tensor([0.5, 0.002, 80.0], dtype=torch.float64))
    # sigma = sigma_data = 0.5: c_skip = 1/2, c_out = 0.25/sqrt(0.5), c_in = 1/sqrt(0.5), c_noise = ln(0.5)/4
    assert c_skip[0].item() == pytest.approx(0.5)
    assert c_out[0].item() == pytest.approx(0.35355339059327373)
    assert c_in[0].item() == pytest.approx(1.4142135623730951)
    assert c_noise[0].item() == pytest.approx(-0.17328679513998632)
    # the extremes: almost pure skip at 0.002, almost pure network output (c_out -> sigma_data) at 80
    assert c_skip[1].item() == pytest.approx(0.25 / (0.002**2 + 0.25))
    assert c_out[2].item() == pytest.approx(80 * 0.5 / math.sqrt(6400.25))
    assert c_noise[2].item() == pytest.approx(math.log(80) / 4)


class _LinearNet(torch.nn.Module):
    """F(x_in, c_noise, c) = a x_in + b c_noise + E[c] (per channel): small enough to redo in numpy."""

    def __init__(self, num_classes: int):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.a = torch.nn.Parameter(torch.tensor(0.7))
        self.b = torch.nn.Parameter(torch.tensor(-0.3))
        self.E = torch.nn.Parameter(torch.randn(num_classes + 1, 3, generator=g, dtype=torch.float32))

    def forward(self, x_in, c_noise, labels):
        return self.a * x_in + self.b * c_noise.reshape(-1, 1, 1, 1) + self.E[labels][:, :, None, None]


def test_edm_loss_golden_against_numpy():
    torch.manual_seed(0)
    net = _LinearNet(4)
    D = EDMPrecond(net, num_classes=4, resolution=4)
    y = torch.rand(5, 3, 4, 4) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3, 4])  # 4 = the null class
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 60.0])
    noise = torch.randn(5, 3, 4, 4)
    got = edm_loss(D, y, labels, sigma, noise).detach().numpy()

    Y, N, S = y.numpy().astype(np.float64), noise.numpy().astype(np.float64), sigma.numpy().astype(np.float64)
    E = net.E.detach().numpy().astype(np.float64)
    expected = []
    for i in range(5):
        s, sd = S[i], 0.5
        x = Y[i] + s * N[i]
        c_skip, c_out, c_in, c_noise = (
            sd**2 / (s**2 + sd**2),
            s * sd / np.sqrt(s**2 + sd**2),
            1 / np.sqrt(s**2 + sd**2),
            np.log(s) / 4,
        )
        F = 0.7 * c_in * x + -0.3 * c_noise + E[labels[i].item()][:, None, None]
        Dx = c_skip * x + c_out * F
        lam = (s**2 + sd**2) / (s * sd) ** 2
        expected.append(np.mean(lam * (Dx - Y[i]) ** 2))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_sigma_schedule_and_training_distribution():
    t = sigma_steps(4)
    rho = 7
    mid = (80 ** (1 / rho) + (1 / 3) * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    np.testing.assert_allclose(t.numpy(), [80.0, mid, t[2].item(), 0.002, 0.0], rtol=1e-12)
    assert (t[:-1] > t[1:]).all()
    s = sample_training_sigma(20000, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.03)


# The sampler on a case with an exact answer.


class GaussianDenoiser:
    """Exact denoiser of data ~ N(mu_c, s0^2 I): D(x; sigma, c) = (s0^2 x + sigma^2 mu_c) / (s0^2 + sigma^2)."""

    def __init__(self, mus, s0=0.2, resolution=8):
        self.mus, self.s0 = torch.tensor(mus, dtype=torch.float32), s0
        self.num_classes, self.resolution = len(mus), resolution
        self.calls, self.batch_sizes = 0, []

    def __call__(self, x, sigma, labels):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        mu = self.mus[labels.clamp(max=self.num_classes - 1)].reshape(-1, 1, 1, 1)
        s2 = sigma.reshape(-1, 1, 1, 1).double() ** 2
        return ((self.s0**2 * x.double() + s2 * mu) / (self.s0**2 + s2)).float()


def _gens(n, seed=0, identity=0):
    return [image_generator(seed, identity, i) for i in range(n)]


def test_heun_matches_the_exact_ode_solution_and_beats_euler():
    den = GaussianDenoiser([0.3, -0.4])
    B = 32
    classes, weights = torch.zeros(B, 1, dtype=torch.long), torch.ones(B, 1)
    noise = torch.stack([torch.randn(3, 8, 8, generator=g) for g in _gens(B)]).double()
    # Exact probability-flow ODE endpoint for a Gaussian: x(0) = mu + (x_T - mu) s0 / sqrt(s0^2 + sigma_max^2).
    exact = 0.3 + (80 * noise - 0.3) * 0.2 / math.sqrt(0.04 + 6400)
    heun = sample(den, classes, weights, generators=_gens(B), num_steps=32).double()
    euler = sample(den, classes, weights, generators=_gens(B), num_steps=32, solver="euler").double()
    inside = exact.abs() < 1  # the sampler clamps to [-1, 1]
    err_heun, err_euler = ((heun - exact)[inside].abs().max().item(), (euler - exact)[inside].abs().max().item())
    assert err_heun < 0.03
    assert err_euler > 3 * err_heun
    assert heun.mean().item() == pytest.approx(0.3, abs=0.01)
    assert heun.std().item() == pytest.approx(0.2, rel=0.03)
    # 2N - 1 network evaluations for Heun, N for Euler.
    den.calls = 0
    sample(den, classes, weights, generators=_gens(B), num_steps=10)
    assert den.calls == 19 == network_evaluations(10, "heun", 1)


def test_mix_of_gaussians_is_the_gaussian_of_the_mixed_mean():
    # D_mix = sum_k w_k D_k is the exact denoiser of N(sum_k w_k mu_k, s0^2): the mix lands there.
    mixed = sample(
        GaussianDenoiser([0.3, -0.4]),
        torch.tensor([[0, 1]] * 8),
        torch.tensor([[0.25, 0.75]] * 8),
        generators=_gens(8),
        num_steps=16,
    )
    direct = sample(
        GaussianDenoiser([0.25 * 0.3 + 0.75 * -0.4]),
        torch.zeros(8, 1, dtype=torch.long),
        torch.ones(8, 1),
        generators=_gens(8),
        num_steps=16,
    )
    torch.testing.assert_close(mixed, direct, atol=1e-5, rtol=0)


# The sampler with a real (untrained) U-Net.


@pytest.fixture(scope="module")
def micro():
    return micro_denoiser()


def test_one_hot_weights_give_the_single_class_sample(micro):
    single = sample(micro, torch.tensor([[2], [4]]), torch.ones(2, 1), generators=_gens(2), num_steps=4)
    onehot = sample(
        micro, torch.tensor([[2, 0], [1, 4]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), generators=_gens(2), num_steps=4
    )
    torch.testing.assert_close(onehot, single, atol=1e-4, rtol=0)


@pytest.mark.parametrize("guidance", ["none", "cfg", "autoguidance"])
def test_k_way_mix_is_one_batched_forward_per_stage(micro, guidance):
    main, guide = Counting(micro), Counting(micro)
    B, K, N = 2, 3, 4
    sample(
        main,
        torch.tensor([[0, 1, 2], [3, 4, 0]]),
        torch.full((B, K), 1 / 3),
        generators=_gens(B),
        num_steps=N,
        guidance=guidance,
        guidance_scale=2.0,
        guide=guide if guidance == "autoguidance" else None,
    )
    assert main.calls == 2 * N - 1
    assert set(main.batch_sizes) == {B * K + (B if guidance == "cfg" else 0)}
    assert guide.calls == (2 * N - 1 if guidance == "autoguidance" else 0)


def test_an_image_does_not_depend_on_its_batch(micro):
    classes, weights = torch.tensor([[0, 1], [2, 3], [4, 0]]), torch.tensor([[0.5, 0.5], [0.3, 0.7], [0.9, 0.1]])
    gens = [image_generator(7, ident, 5) for ident in (10, 11, 12)]
    batch = sample(micro, classes, weights, generators=gens, num_steps=4, guidance="cfg", guidance_scale=2.5)
    alone = sample(
        micro,
        classes[1:2],
        weights[1:2],
        generators=[image_generator(7, 11, 5)],
        num_steps=4,
        guidance="cfg",
        guidance_scale=2.5,
    )
    torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)
    assert (batch[0] - batch[1]).abs().max() > 0.1  # different seeds, different images
    # the seed is a stable function of (seed, identity, index)
    a, b = image_generator(7, 11, 5), image_generator(7, 11, 6)
    assert a.initial_seed() == image_generator(7, 11, 5).initial_seed() != b.initial_seed()


def test_non_convex_weights_are_rejected_unless_allowed(micro):
    classes = torch.tensor([[0, 1]])
    for bad in ([0.7, 0.7], [1.5, -0.5]):
        with pytest.raises(ValueError, match="convex"):
            sample(micro, classes, torch.tensor([bad]), generators=_gens(1), num_steps=2)
    out = sample(micro, classes, torch.tensor([[0.7, 0.7]]), generators=_gens(1), num_steps=2, allow_nonconvex=True)
    assert out.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="class labels"):
        sample(micro, torch.tensor([[0, 5]]), torch.tensor([[0.5, 0.5]]), generators=_gens(1), num_steps=2)


def test_mix_window_outside_uses_the_base_column():
    den = GaussianDenoiser([0.3, -0.4])
    classes, weights = torch.tensor([[1, 0]] * 16), torch.tensor([[0.5, 0.5]] * 16)
    gens = lambda: _gens(16)  # noqa: E731 - generators advance as they draw: fresh ones per call
    kw = dict(num_steps=32)
    # a window no sigma falls in: the whole trajectory uses column 0 (class 1, mean -0.4)
    base = sample(den, classes, weights, mix_window=(1e3, 1e4), outside_window=0, generators=gens(), **kw)
    single = sample(den, classes[:, :1], torch.ones(16, 1), generators=gens(), **kw)
    torch.testing.assert_close(base, single)
    # a window over everything: the mix (mean -0.05)
    full = sample(den, classes, weights, mix_window=(0, 100), outside_window=0, generators=gens(), **kw)
    mix = sample(den, classes, weights, generators=gens(), **kw)
    torch.testing.assert_close(full, mix)
    # the more of the trajectory mixes, the closer the images get to the mix
    means = [
        sample(den, classes, weights, mix_window=(0, hi), outside_window=0, generators=gens(), **kw).mean().item()
        for hi in (0.01, 0.1, 1.0)
    ]
    assert single.mean().item() < means[0] < means[1] < means[2] < mix.mean().item()


def test_bf16_autocast_only_where_the_cpu_has_kernels_for_it(monkeypatch):
    from scoremix_plugin.generation.edm import autocast_dtype

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with pytest.warns(UserWarning, match="no AVX-512"):
        assert autocast_dtype(torch.bfloat16, "cpu") is None
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert autocast_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    assert autocast_dtype(None, "cpu") is None
    assert autocast_dtype(torch.bfloat16, "cuda:0") is torch.bfloat16  # GPUs keep what was asked


# Fewer evaluations: DPM-Solver++(2M) and guidance in a limited interval.


def _order_errors(solver, steps=(16, 32, 64, 128)):
    den = GaussianDenoiser([0.3, -0.4])
    B = 32
    classes, weights = torch.zeros(B, 1, dtype=torch.long), torch.ones(B, 1)
    noise = torch.stack([torch.randn(3, 8, 8, generator=g) for g in _gens(B)]).double()
    exact = 0.3 + (80 * noise - 0.3) * 0.2 / math.sqrt(0.04 + 6400)
    inside = exact.abs() < 1
    return [
        (sample(den, classes, weights, generators=_gens(B), num_steps=n, solver=solver).double() - exact)[inside]
        .abs()
        .max()
        .item()
        for n in steps
    ]


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2), ("dpm2m", 2)])
def test_solver_converges_at_its_order_on_the_exact_ode(solver, order):
    errs = _order_errors(solver)
    measured = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    # doubling the steps divides the error by 2^order (measured: euler 0.97-0.99, heun 2.07-2.22, dpm2m 2.06-2.18)
    assert all(order - 0.15 < m < order + 0.3 for m in measured), measured


def test_dpm2m_is_one_evaluation_per_step_and_beats_heun_at_equal_evaluations():
    den = GaussianDenoiser([0.3, -0.4])
    classes, weights = torch.zeros(4, 1, dtype=torch.long), torch.ones(4, 1)
    sample(den, classes, weights, generators=_gens(4), num_steps=12, solver="dpm2m")
    assert den.calls == 12 == network_evaluations(12, "dpm2m", 1)
    (dpm_32,), (heun_16,) = _order_errors("dpm2m", (32,)), _order_errors("heun", (16,))  # 32 vs 31 evaluations
    assert dpm_32 < 0.5 * heun_16


@pytest.mark.parametrize("solver", ["heun", "euler", "dpm2m"])
@pytest.mark.parametrize("guidance", ["cfg", "autoguidance"])
def test_guidance_interval_skips_the_reference_outside_and_is_counted(micro, solver, guidance):
    from scoremix_plugin.generation.sampler import stage_sigmas

    main, guide = Counting(micro), Counting(micro)
    B, K, N, interval = 2, 2, 6, (0.28, 2.9)
    kw = dict(
        num_steps=N,
        solver=solver,
        guidance=guidance,
        guidance_scale=2.0,
        guide=guide if guidance == "autoguidance" else None,
    )
    sample(
        main,
        torch.tensor([[0, 1], [2, 3]]),
        torch.full((B, K), 0.5),
        generators=_gens(B),
        guidance_interval=interval,
        **kw,
    )
    sigmas = stage_sigmas(N, solver)
    inside = sum(interval[0] < t <= interval[1] for t in sigmas)
    assert 0 < inside < len(sigmas)
    inputs = main.batch_sizes + guide.batch_sizes  # every network input, main and guide
    assert sum(inputs) / B == network_evaluations(N, solver, K, guidance, 2.0, guidance_interval=interval)
    ref = 1 if guidance == "cfg" else K
    assert sum(inputs) / B == len(sigmas) * K + inside * ref
    assert network_evaluations(N, solver, K, guidance, 2.0) == len(sigmas) * (K + ref)  # no interval: everywhere


@pytest.mark.parametrize("solver", ["heun", "dpm2m"])
def test_mix_window_evaluates_one_class_outside_and_is_counted(micro, solver):
    from scoremix_plugin.generation.sampler import stage_sigmas

    main = Counting(micro)
    B, K, N, window = 2, 2, 6, (0.5, 10.0)
    sample(
        main,
        torch.tensor([[0, 1], [2, 3]]),
        torch.full((B, K), 0.5),
        generators=_gens(B),
        num_steps=N,
        solver=solver,
        guidance="cfg",
        guidance_scale=2.0,
        mix_window=window,
    )
    sigmas = stage_sigmas(N, solver)
    inside = sum(window[0] <= t <= window[1] for t in sigmas)
    assert 0 < inside < len(sigmas)
    counted = network_evaluations(N, solver, K, "cfg", 2.0, mix_window=window)
    assert sum(main.batch_sizes) / B == counted == inside * (K + 1) + (len(sigmas) - inside) * 2


def test_guidance_interval_everywhere_equals_plain_guidance_and_nowhere_equals_none(micro):
    c, w = torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.5]])
    kw = dict(num_steps=4, solver="dpm2m", guidance="cfg", guidance_scale=2.5)
    plain = sample(micro, c, w, generators=_gens(1), **kw)
    torch.testing.assert_close(sample(micro, c, w, generators=_gens(1), guidance_interval=(0, 1e9), **kw), plain)
    unguided = sample(micro, c, w, generators=_gens(1), num_steps=4, solver="dpm2m")
    torch.testing.assert_close(sample(micro, c, w, generators=_gens(1), guidance_interval=(1e8, 1e9), **kw), unguided)
    for bad in ((1.0, 0.5), (-1, 2), (float("nan"), 1.0), "x"):
        with pytest.raises(ValueError, match="guidance_interval"):
            sample(micro, c, w, generators=_gens(1), guidance_interval=bad, **kw)


@pytest.mark.parametrize("solver", ["heun", "euler", "dpm2m"])
def test_an_image_is_reproducible_alone_with_every_solver(micro, solver):
    classes, weights = torch.tensor([[0, 1], [2, 3], [4, 0]]), torch.tensor([[0.5, 0.5], [0.3, 0.7], [0.9, 0.1]])
    kw = dict(num_steps=5, solver=solver, guidance="cfg", guidance_scale=2.5, guidance_interval=(0.2, 5.0))
    batch = sample(micro, classes, weights, generators=[image_generator(7, i, 5) for i in (10, 11, 12)], **kw)
    alone = sample(micro, classes[1:2], weights[1:2], generators=[image_generator(7, 11, 5)], **kw)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)
