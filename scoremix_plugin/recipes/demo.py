"""The CPU demo: `scoremix demo --out DIR` (`make demo`), this file inside the installed package.

Toy identities -> baseline recogniser -> the shipped 40-identity generator -> far pairs -> ScoreMix
identities -> dataset report (quality gate) -> recogniser on real + synthetic -> verification of both ->
alignment -> DIR/report.md.

The generator is sampled, not trained: `pretrained:toy40` was trained once, to identity quality, on exactly
this toy data (scoremix_plugin/pretrained/toy40.json says how, on what, for how long, and what it reaches).
A 2-core CPU cannot train one that good inside a demo's budget; `scoremix demo --full` (demo_full.py) trains
the generator here instead. Measured runs and their timings: docs/results.md, "The demo".
"""

from easydict import EasyDict as edict

config = edict(
    name="ScoreMix CPU demo",
    seed=0,
    device=None,  # cuda when available, else cpu
    # seed=0: the data the shipped generator was trained on (checked against its fingerprint); recipe.seed
    # varies selection, generation noise and (through experiments/demo_seeds.py) the recogniser.
    data=edict(toy=edict(identities=40, images_per_identity=16, test_identities=20, pairs=300, seed=0), rec=None),
    recogniser="demo/recogniser.py",
    generator="pretrained:toy40",
    centres=edict(batch_size=64),
    # Far in the recogniser's embedding space (the paper's best strategy); 40 pairs of 40 classes need each
    # class in up to 2 pairs.
    selection=edict(strategy="far", space="embedding", num_identities=40, max_uses=2, k=2, weights=None),
    # DPM-Solver++(2M) at 24 steps: as good as Heun-32 on THIS generator (toy40) at 72 instead of 189 network
    # inputs per mixed image; Heun-8 (the demo's former 45) lost 17.5 points of classes and 47.5 of far mixes
    # recognised (docs/results.md, "Sampling cost"). The library's default is 32 steps because the 200-class
    # toy200 needs them; 40 classes do not. CFG w = 2.5 (autoguidance lost to it: "Generator arms").
    generation=edict(
        images_per_identity=10,
        solver="dpm2m",
        steps=24,
        guidance="cfg",
        guidance_scale=2.5,
        mix_window=None,
        shard_size=1000,
        batch_size=16,
        bf16=True,
    ),
    scoremix=edict(ratio=None, aug_real=None, aug_synthetic=None, same_steps=True),
    # The gate is on: with the shipped generator the synthetic identities are identities, and a failing gate
    # means something broke. demo_full.py turns it off (a CPU-budget generator may not pass).
    quality_gate=True,
    # The gate's threshold: the cosine where real impostor pairs reach FAR 1e-3. The demo's small recogniser
    # recognises only about half of its own real identities at 1e-4 (experiments/results/pretrained/), where
    # no synthetic set could show much; at 1e-3 it recognises 90 % of them.
    dataset_report=edict(far=1e-3, min_share=0.5),
    verification=edict(targets=["toy_lfw", "toy_cfp_fp"], batch_size=64),
    report=edict(grid_pairs=6, grid_images=6),
)
