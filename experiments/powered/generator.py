# The powered design's generator (experiments/powered.py): the ablation's, trained for as many epochs on 5x the data.
from easydict import EasyDict as edict

config = edict()
config.preset = "tiny-cpu"  # UNet2DModel (32, 64, 64, 128), ~3.2M parameters
config.resolution = 32
config.batch_size = 32
config.lr = 1e-3  # beat 2e-4 within this budget on CPU
config.lr_warmup = 100
config.total_steps = 10000  # 200 classes x 16 images: ~100 epochs, as the earlier 2,200 steps were on 640 images
config.duration = 7200  # seconds: a cap on a slow or shared machine (10,000 steps ~ 1.5 h on 2 cores)
config.label_dropout = 0.1  # null class for classifier-free guidance (w = 2.5 at sampling)
config.ema_decay = 0.999
config.ema_warmup = True  # short runs: decay min(0.999, (1+n)/(10+n)) forgets the initial weights
config.bf16 = True  # 1.47x faster on CPU
config.checkpoint_every = 1000
config.sample_every = None  # one grid at the end
config.sample_steps = 8
config.num_workers = 0
config.cache_images = True
