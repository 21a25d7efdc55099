# Class-conditional EDM generator at 112 px on WebFace160K (~10K classes, 160K images).
# Standalone: `torchrun --nproc_per_node=8 -m scoremix_plugin train-generator THIS_FILE`; the pipeline
# sets rec and output itself. Costs: see recipes/README.md (estimates).
import os

from easydict import EasyDict as edict

config = edict()
# EDM2-S (Karras et al. 2024) at 112 px, as ScoreMix: 288M parameters with ~10K classes, 625 GFLOP per
# forward (torch.utils.flop_counter; UNet2DModel "gpu-112": 95 GFLOP). Throughput estimates: recipes/README.md.
# The UNet2DModel recipe is still one line away: preset = "gpu-112", lr = 1e-4, adam_betas = (0.9, 0.999),
# loss_weighting = "edm", posthoc_ema = None, P_mean = -1.2, P_std = 1.2.
config.preset = "edm2-s"
config.resolution = 112
config.batch_size = 128  # per GPU
# EDM2's optimiser: Adam (0.9, 0.99), lr_ref / sqrt(max(t / t_ref, 1)). EDM2-S used lr_ref 0.010 at batch 2048;
# 0.010 * sqrt(128 / 2048) = 0.0025 here (square-root batch scaling: an assumption, not a measurement).
# t_ref at 7% of the run, as EDM2's 35k of 512k batches at 64 px; warm-up 1% (EDM2: 10 of 1074 Mimg).
config.lr = 0.0025
config.adam_betas = (0.9, 0.99)
config.lr_decay_ref = 10_500
config.lr_warmup = 1500
config.total_steps = 150_000  # 19.2M images seen, ~120 passes over 160K images
config.loss_weighting = "uncertainty"  # EDM2's learned u(sigma)
config.P_mean, config.P_std = -0.8, 1.6  # EDM2's pixel-space (ImageNet-64) noise distribution
config.label_dropout = 0.1  # null class for classifier-free guidance at sampling
config.ema_sigma_rel = 0.10  # the `ema` of generator.pt: a power-function EMA (EDM2)
config.posthoc_ema = [0.05, 0.10]  # EDM2's two stored profiles; `scoremix ema --sigma-rel S` picks any other
config.posthoc_every = 5000  # 30 snapshots x 2 profiles x 0.58 GB (float16): ~35 GB of disk
config.posthoc_dtype = "float16"
config.bf16 = True
config.checkpoint_every = 5000
config.snapshot_every = 50_000
config.sample_every = 10_000
config.sample_steps = 32
config.num_workers = 8
config.cache_images = False  # 160K x 112 x 112 x 3 = 6 GB: over the 1 GiB cache limit

# Data and output (the pipeline sets both itself).
config.rec = os.environ.get("WEBFACE160K_REC", "/data/webface160k")
config.output = "runs/webface160k/generator"
