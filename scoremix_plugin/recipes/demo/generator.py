# The generator `scoremix demo --full` trains here (the pipeline fills in rec and output); the plain demo samples
# pretrained:toy40, the same network and optimiser trained to 3,000 steps (pretrained/toy40.py). Arm (b) of
# experiments/generator_arms.py, which beat the former tiny UNet2DModel at equal CPU compute (docs/results.md,
# "Generator arms": 1,200 steps, nearest-centre top-1 of its samples 0.79 vs 0.69, intra-class cosine 0.64 vs
# 0.58, in 0.89x the CPU time). The pipeline samples its post-hoc EMA at sigma_rel 0.10 (demo_full.py).
from easydict import EasyDict as edict

config = edict()
config.preset = "edm2-cpu"  # EDM2 magnitude-preserving U-Net at 32 px (32, 32, 64, 128), ~3.0M parameters
config.resolution = 32
config.batch_size = 32
# EDM2's optimiser on the demo's budget: the MP layers keep weights at unit norm, so the rate is relative
# (hence 1e-2, EDM2's own); 1/sqrt decay after lr_decay_ref steps.
config.lr = 1e-2
config.lr_warmup = 100
config.lr_decay_ref = 1000
config.loss_weighting = "uncertainty"  # EDM2's learned u(sigma)
config.total_steps = 1200  # ~0.9x the former tiny-cpu step cost (~300 s at its ~3.7 steps/s, 2 cores, bf16)
config.duration = 320  # seconds: a cap, so `scoremix demo --full` keeps the demo's budget on a slow machine
config.label_dropout = 0.1  # null class for classifier-free guidance (w = 2.5 at sampling)
config.ema_sigma_rel = 0.10  # generator.pt's EMA: a power-function EMA (EDM2)
config.posthoc_ema = [0.05, 0.10]  # post-hoc EMA snapshots (`scoremix ema --sigma-rel S` rebuilds any length)
config.posthoc_every = 50
config.bf16 = True  # on GPUs and AVX-512 CPUs; an AVX2-only CPU runs float32 (bf16 ~18x slower there)
config.checkpoint_every = 500
config.sample_every = None  # one grid at the end
config.sample_steps = 8
config.num_workers = 0
config.cache_images = True
