# The powered design's generator (experiments/powered.py): the demo's EDM2 generator (arm b of
# experiments/generator_arms.py, which won at equal CPU compute), trained 10,000 steps on 5x the data.
# Amended before any run of the design (2026-12-02): it was the ablation's tiny UNet2DModel.
from easydict import EasyDict as edict

config = edict()
config.preset = "edm2-cpu"  # EDM2 magnitude-preserving U-Net at 32 px, ~3.0M parameters
config.resolution = 32
config.batch_size = 32
config.lr = 1e-2  # EDM2's rate (relative: MP layers keep weights at unit norm), 1/sqrt decay after lr_decay_ref
config.lr_warmup = 100
config.lr_decay_ref = 1000
config.loss_weighting = "uncertainty"
config.total_steps = 10000  # 200 classes x 16 images: ~100 epochs, as the earlier 2,200 steps were on 640 images
config.duration = None  # no cap: the design fixes the steps (resumable every checkpoint_every steps)
config.label_dropout = 0.1  # null class for classifier-free guidance (w = 2.5 at sampling)
config.ema_sigma_rel = 0.10  # generator.pt's EMA, which every arm samples (post-hoc EMA 0.10 as in arm b)
config.posthoc_ema = [0.05, 0.10]
config.posthoc_every = 500
config.bf16 = True  # GPUs / AVX-512 CPUs only; float32 elsewhere
config.checkpoint_every = 500
config.sample_every = None  # one grid at the end
config.sample_steps = 8
config.num_workers = 0
config.cache_images = True
