"""Dataset-report metrics against closed forms: EER / FNMR@FMR of two Gaussians, d' and FDR by hand, pairs."""

from __future__ import annotations

import functools
from statistics import NormalDist

import numpy as np
import pytest

from scoremix_plugin.datareport import metrics as M

PHI = NormalDist()


@functools.lru_cache(maxsize=2)
def _standard_quantiles(n: int) -> np.ndarray:
    return np.array([PHI.inv_cdf((k + 0.5) / n) for k in range(n)])


def _gaussian_quantiles(mu: float, sigma: float, n: int) -> np.ndarray:
    """n scores that follow N(mu, sigma^2) exactly in distribution (mid-point quantiles, no sampling noise)."""
    return mu + sigma * _standard_quantiles(n)


@pytest.mark.parametrize("mu_g,mu_i,s", [(0.6, 0.0, 0.15), (0.4, 0.1, 0.12), (0.3, 0.05, 0.2)])
def test_eer_and_fnmr_at_fmr_match_two_gaussians(mu_g, mu_i, s):
    n = 1_000_000  # the FMR 1e-4 threshold rests on the top 100 impostor scores
    g, i = _gaussian_quantiles(mu_g, s, n), _gaussian_quantiles(mu_i, s, n)
    d = (mu_g - mu_i) / s
    eer, thr = M.equal_error_rate(g, i)
    assert eer == pytest.approx(PHI.cdf(-d / 2), abs=1e-3)
    assert thr == pytest.approx((mu_g + mu_i) / 2, abs=1e-3)
    for fmr in (1e-2, 1e-3, 1e-4):
        r = M.fnmr_at_fmr(g, i, fmr)
        t = mu_i + s * PHI.inv_cdf(1 - fmr)
        assert r.threshold == pytest.approx(t, abs=2e-3)
        assert r.fnmr == pytest.approx(PHI.cdf((t - mu_g) / s), abs=1e-3)
        assert r.achieved_fmr <= fmr and not r.too_few_pairs


def test_eer_unequal_spreads_and_sampled_scores():
    # Unequal spreads: the crossing t solves Phi((t - mu_g)/s_g) = 1 - Phi((t - mu_i)/s_i); EER = that value.
    mu_g, s_g, mu_i, s_i = 0.5, 0.2, 0.0, 0.1
    t = (mu_g * s_i + mu_i * s_g) / (s_g + s_i)  # (t - mu_i)/s_i = (mu_g - t)/s_g
    g, i = _gaussian_quantiles(mu_g, s_g, 200_000), _gaussian_quantiles(mu_i, s_i, 200_000)
    assert M.equal_error_rate(g, i)[0] == pytest.approx(PHI.cdf((t - mu_g) / s_g), abs=1e-3)
    # Random draws (seeded): the same within sampling error.
    rng = np.random.default_rng(0)
    eer, _ = M.equal_error_rate(rng.normal(0.6, 0.15, 10**6), rng.normal(0.0, 0.15, 10**6))
    assert eer == pytest.approx(PHI.cdf(-2.0), abs=1e-3)


def test_d_prime_and_fdr_on_fixed_arrays():
    g = np.array([0.9, 0.7, 0.8, 0.6])  # mean 0.75, population var 0.0125
    i = np.array([0.1, -0.1, 0.0, 0.2, -0.2])  # mean 0.0, population var 0.02
    d, fdr = M.separation(g, i)
    assert d == pytest.approx(0.75 / np.sqrt((0.0125 + 0.02) / 2), abs=1e-9)
    assert fdr == pytest.approx(0.75**2 / (0.0125 + 0.02), abs=1e-9)
    st = M.score_stats(g, i, fmrs=(0.2,))
    assert (st.genuine_pairs, st.impostor_pairs) == (4, 5)
    assert st.d_prime == pytest.approx(d, abs=1e-12) and st.fdr == pytest.approx(fdr, abs=1e-12)
    # FMR 0.2 of 5 impostors: the 2nd largest (0.1) is the threshold; accepting > 0.1 lets 1 of 5 through.
    f = st.fnmr_at_fmr[0]
    assert f.threshold == pytest.approx(0.1) and f.achieved_fmr == pytest.approx(0.2) and f.fnmr == 0.0
    # Fewer impostors than 1/FMR: the largest impostor stands in, flagged.
    th = M.threshold_at_far(i, 1e-4)
    assert th.cosine == pytest.approx(0.2) and th.too_few_pairs and th.achieved_far == 0.0


def test_pairs_all_and_sampled():
    labels = np.array([3, 3, 1, 3, 1, 2])
    gp = M.genuine_pairs(labels, cap=100)
    got = sorted(tuple(sorted(p)) for p in zip(gp.a.tolist(), gp.b.tolist()))
    assert got == [(0, 1), (0, 3), (1, 3), (2, 4)] and gp.total == 4 and not gp.sampled
    ip = M.impostor_pairs(labels, cap=100)
    assert ip.total == 15 - 4 == len(ip.a) and np.all(labels[ip.a] != labels[ip.b])
    assert len({tuple(sorted(p)) for p in zip(ip.a.tolist(), ip.b.tolist())}) == 11  # each pair once
    lopsided = np.r_[np.zeros(200_000, int), 1, 2]  # one identity holds nearly every image
    lp = M.impostor_pairs(lopsided, cap=10**6)
    assert lp.total == 2 * 200_000 + 1 == len(lp.a) and not lp.sampled
    big = np.repeat(np.arange(300), 5)  # 3000 genuine, ~1.1M impostor pairs
    gs, is_ = M.genuine_pairs(big, cap=1000, seed=1), M.impostor_pairs(big, cap=10**5, seed=1)
    assert gs.sampled and gs.total == 3000 and len(gs.a) == 1000
    assert np.all(big[gs.a] == big[gs.b]) and np.all(gs.a != gs.b)
    assert is_.sampled and len(is_.a) == 10**5 and np.all(big[is_.a] != big[is_.b])
    again = M.impostor_pairs(big, cap=10**5, seed=1)
    assert np.array_equal(again.a, is_.a) and np.array_equal(again.b, is_.b)  # seeded


def test_topk_similar_matches_bruteforce():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(37, 8)).astype(np.float32)
    b = rng.normal(size=(53, 8)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    idx, val, cnt = M.topk_similar(a, b, 3, threshold=0.5, rows=10, cols=7)  # many small blocks
    sim = a @ b.T
    assert np.array_equal(idx, np.argsort(-sim, axis=1)[:, :3])
    assert np.allclose(val, -np.sort(-sim, axis=1)[:, :3], atol=1e-6)
    assert np.array_equal(cnt, (sim > 0.5).sum(1))
    idx, _, _ = M.topk_similar(a, a, 1, exclude_self=True, rows=10, cols=7)
    s = a @ a.T
    np.fill_diagonal(s, -np.inf)
    assert np.array_equal(idx[:, 0], np.argmax(s, axis=1))
