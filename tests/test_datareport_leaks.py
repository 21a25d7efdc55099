"""Leak checks and the quality gate: planted leaks are found, a clean set has none at the stated FAR."""

from __future__ import annotations

import numpy as np
import pytest

from scoremix_plugin.datareport import leaks as L
from scoremix_plugin.datareport import metrics as M

D = 128


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _identities(rng, centres, per, spread):
    """``per`` unit embeddings around each centre (angle set by ``spread``), labels 0..len-1."""
    emb = _unit(np.repeat(centres, per, 0) + spread * rng.normal(size=(len(centres) * per, D)) / np.sqrt(D))
    return emb, np.repeat(np.arange(len(centres)), per)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    real_mu = _unit(rng.normal(size=(60, D)))
    real, real_lab = _identities(rng, real_mu, 6, 0.6)  # 360 images: 63,900 impostor pairs >= 1 / 1e-4
    # Few comparisons (60 x 20 + 25 x 20 + 25 x 60): at FAR 1e-4 even image pairs would pass by chance
    # ~0.3 times in all, and identity means spread less than image pairs.
    ev_mu = _unit(rng.normal(size=(10, D)))
    ev, _ = _identities(rng, ev_mu, 2, 0.6)
    syn_mu = _unit(rng.normal(size=(25, D)))  # clean: people nobody has seen
    syn, syn_lab = _identities(rng, syn_mu, 5, 0.6)
    sources = np.stack([np.arange(25), np.arange(25) + 30], 1)  # distinct real classes per identity
    return dict(rng=rng, real=real, real_lab=real_lab, ev=ev, syn=syn, syn_lab=syn_lab, sources=sources)


def _check(w, syn, syn_lab):
    thr = M.threshold_at_far(M.pair_scores(w["real"], M.impostor_pairs(w["real_lab"], 10**6)), 1e-4)
    assert not thr.too_few_pairs
    ru, rc = M.identity_means(w["real"], w["real_lab"])
    su, sc = M.identity_means(syn, syn_lab)
    tl, ex = L.training_leaks(su, sc, w["sources"][: len(su)], ru, rc, thr.cosine)
    el = L.evaluation_leaks(su, sc, {"toy_lfw": w["ev"]}, thr.cosine)
    ol = L.evaluation_leaks(ru, rc, {"toy_lfw": w["ev"]}, thr.cosine, "real_evaluation")
    return thr, tl, el, ol, ex


def test_clean_set_has_no_leak_at_the_stated_far(world):
    thr, tl, el, ol, ex = _check(world, world["syn"], world["syn_lab"])
    assert tl == [] and el == [] and ol == []
    # not vacuous: the threshold sits inside the real impostor tail, and genuine pairs are far above it
    assert 0.2 < thr.cosine < 0.6
    assert ex["nearest_real_cos"].max() < thr.cosine


def test_planted_leaks_are_found_and_told_apart(world):
    rng, syn, lab = world["rng"], world["syn"].copy(), world["syn_lab"].copy()
    per = 5
    # identity 3: made of an evaluation image's neighbours; 7: a near-copy of its own source class;
    # 11: a near-copy of a real class it was NOT made from.
    ev_img = world["ev"][17]
    syn[lab == 3] = _unit(ev_img + 0.3 * rng.normal(size=(per, D)) / np.sqrt(D))
    real_of = lambda c: world["real"][world["real_lab"] == c]  # noqa: E731
    src = int(world["sources"][7, 1])
    syn[lab == 7] = _unit(real_of(src)[:per] + 0.2 * rng.normal(size=(per, D)) / np.sqrt(D))
    syn[lab == 11] = _unit(real_of(50)[:per] + 0.2 * rng.normal(size=(per, D)) / np.sqrt(D))
    thr, tl, el, ol, ex = _check(world, syn, lab)
    assert [(lk.label, lk.kind, lk.match) for lk in tl] == [
        (7, "training_source", f"class {src}"),
        (11, "training_other", "class 50"),
    ]
    assert [(lk.label, lk.match) for lk in el] == [(3, "toy_lfw:17")] and el[0].cosine > thr.cosine
    assert ol == []
    assert ex["nearest_other"][11] == 50 and ex["nearest_real"][7] == src


def test_quality_gate_verdict(world):
    thr = M.threshold_at_far(M.pair_scores(world["real"], M.impostor_pairs(world["real_lab"], 10**6)), 1e-4)
    good = L.quality_gate(world["syn"], world["syn_lab"], thr, real_emb=world["real"], real_labels=world["real_lab"])
    assert good.passed and good.share == 1.0 and good.real_share == 1.0 and good.conclusive and good.advice == ()
    # "identities" whose own images agree no better than strangers: the gate fails and says what to change
    rng = np.random.default_rng(1)
    noise = _unit(rng.normal(size=(125, D)))
    bad = L.quality_gate(
        noise,
        world["syn_lab"],
        thr,
        manifest={"generator": {"step": 1200}, "sampler": {"guidance": "none", "guidance_scale": 1.0, "steps": 8}},
    )
    assert not bad.passed and bad.recognised == 0 and bad.identities == 25
    text = bad.text()
    assert "FAIL" in text and "step 1200" in text and "--guidance cfg" in text and "--steps, now 8" in text
    # Relative to the real identities: 13 of 25 recognised passes when real identities are recognised at 100 %
    # x 0.5, fails against an absolute 0.6.
    half = world["syn"].copy()
    half[world["syn_lab"] >= 13] = noise[world["syn_lab"] >= 13]
    rel = L.quality_gate(half, world["syn_lab"], thr, real_emb=world["real"], real_labels=world["real_lab"])
    assert rel.recognised == 13 and rel.passed
    assert not L.quality_gate(half, world["syn_lab"], thr, min_share=0.6).passed
    # A recogniser that recognises no real identity cannot judge: said so.
    weak = L.quality_gate(half, world["syn_lab"], thr, real_emb=noise, real_labels=world["syn_lab"])
    assert weak.real_share == 0.0 and not weak.conclusive and "inconclusive" in weak.text()
