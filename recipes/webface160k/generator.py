# Class-conditional EDM generator at 112 px on WebFace160K (~10K classes, 160K images).
# Standalone: `torchrun --nproc_per_node=8 -m scoremix_plugin train-generator THIS_FILE`; the pipeline
# sets rec and output itself. Costs: see recipes/README.md (estimates).
import os

from easydict import EasyDict as edict

config = edict()
config.preset = "gpu-112"
config.resolution = 112
config.batch_size = 128
config.lr = 1e-4
config.lr_warmup = 5000
config.total_steps = 150_000  # 19.2M images seen, ~120 passes over 160K images
config.label_dropout = 0.1
config.ema_decay = 0.9999
config.ema_warmup = True
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
