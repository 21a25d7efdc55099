# Class-conditional EDM generator at 112 px on CASIA-WebFace (10,572 classes), one GPU.
# Standalone: `torchrun --nproc_per_node=8 -m scoremix_plugin train-generator THIS_FILE`; the pipeline
# sets rec and output itself. Costs: see recipes/README.md (estimates).
import os

from easydict import EasyDict as edict

config = edict()
config.preset = "gpu-112"  # UNet2DModel (128, 128, 256, 256, 512), attention at 14 and 7 px
config.resolution = 112
config.batch_size = 128  # per GPU
config.lr = 1e-4  # Adam
config.lr_warmup = 5000
config.total_steps = 200_000  # 25.6M images seen, ~52 passes over CASIA
config.label_dropout = 0.1  # null class for classifier-free guidance at sampling
config.ema_decay = 0.9999
config.ema_warmup = True
config.bf16 = True
config.checkpoint_every = 5000
config.snapshot_every = 50_000  # earlier snapshots are the weaker guides autoguidance needs
config.sample_every = 10_000
config.sample_steps = 32
config.num_workers = 8
config.cache_images = False  # 490K images at 112 px do not fit the 1 GiB cache

# Data and output (the pipeline sets both itself).
config.rec = os.environ.get("CASIA_REC", "/data/faces_webface_112x112")
config.output = "runs/casia_r50/generator"
