"""CASIA-WebFace + ScoreMix with IResNet-50 ArcFace, end to end on one GPU.

    CASIA_REC=/data/faces_webface_112x112 scoremix pipeline recipes/casia_r50/pipeline.py --out runs/casia_r50

CASIA_REC is the InsightFace release of CASIA-WebFace (train.rec / train.idx / property and
lfw.bin, cfp_fp.bin, agedb_30.bin beside them). Stages, outputs and skip-when-complete are those
of `scoremix pipeline` (scoremix_plugin/pipeline/). Cost (ESTIMATES, see recipes/README.md):
about 180 A100-hours (~60 H100-hours) on one GPU with the EDM2-S generator (~30 with "gpu-112"), most of
it the generator and generation.
"""

import os

from easydict import EasyDict as edict

config = edict(
    name="CASIA-WebFace + ScoreMix, IResNet-50 ArcFace",
    seed=0,
    device="cuda",
    data=edict(rec=os.environ.get("CASIA_REC", "/data/faces_webface_112x112")),
    recogniser="recogniser.py",
    generator="generator.py",
    centres=edict(batch_size=512),
    # The paper's best strategy: pairs far apart in the baseline recogniser's embedding space, each
    # real class in at most one pair. 4,000 new identities x 50 images = 0.2M synthetic images.
    selection=edict(strategy="far", space="embedding", num_identities=4000, max_uses=1, k=2, weights=None),
    # Classifier-free guidance, which beat autoguidance
    # at toy scale (docs/results.md, "Generator arms"). The paper's autoguidance is two lines away:
    # guidance="autoguidance" here and, beside generator=, guide=edict(kind="smaller", preset="edm2-xs",
    # fraction=0.25) (the generator stage then trains the XS guide) or edict(kind="snapshot", fraction=0.25).
    generation=edict(
        images_per_identity=50,
        solver="dpm2m",  # DPM-Solver++(2M)-32: Heun-32's identities at 96 instead of 189 inputs per 2-way mixed
        steps=32,  # image on both toy generators (docs/results.md, "Sampling cost"; 24 held at 40 classes, not
        # at 200: more classes may need more steps, so check at 112 px against heun-32 on a few hundred pairs)
        guidance="cfg",
        guidance_scale=2.0,
        mix_window=None,
        shard_size=500,
        batch_size=256,
        bf16=True,
    ),
    # same_steps=False: the ScoreMix run trains the same number of epochs over the larger set (more steps),
    # as real + synthetic comparisons usually do; True gives the stricter equal-steps comparison.
    scoremix=edict(ratio=None, aug_real=None, aug_synthetic=None, same_steps=False),
    merge=edict(name="casia_scoremix_r50", config_overrides={"network": "r50", "num_epoch": 20, "warmup_epoch": 1}),
    verification=edict(targets=["lfw", "cfp_fp", "agedb_30"], batch_size=256),
    report=edict(grid_pairs=8, grid_images=8),
)
