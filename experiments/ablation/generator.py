# The ablation's generator (experiments/ablation.py fills in rec and output): the demo's, trained longer.
from easydict import EasyDict as edict

config = edict()
config.preset = "tiny-cpu"  # UNet2DModel (32, 64, 64, 128), ~3.2M parameters
config.resolution = 32
config.batch_size = 32
config.lr = 1e-3  # beat 2e-4 within this budget on CPU
config.lr_warmup = 100
config.total_steps = 2500  # ~2x the demo: samples should show their identity clearly
config.duration = 1200  # seconds: a cap on a slow or shared machine
config.label_dropout = 0.1  # null class for classifier-free guidance (w = 2.5 at sampling)
config.ema_decay = 0.999
config.ema_warmup = True  # short runs: decay min(0.999, (1+n)/(10+n)) forgets the initial weights
config.bf16 = True  # 1.47x faster on CPU
config.checkpoint_every = 500
config.sample_every = None  # one grid at the end
config.sample_steps = 8
config.num_workers = 0
config.cache_images = True
