# Arm (a) of experiments/generator_arms.py: the demo's generator as it was when the arms were measured (tiny
# UNet2DModel, standard EMA, CFG), kept here so a later change to the demo does not change the arm.
from easydict import EasyDict as edict

config = edict()
config.preset = "tiny-cpu"  # UNet2DModel (32, 64, 64, 128), ~3.2M parameters
config.resolution = 32
config.batch_size = 32
config.lr = 1e-3  # beat 2e-4 within this budget on CPU
config.lr_warmup = 100
config.total_steps = 1200  # ~330 s at ~3.7 steps/s (2 unloaded cores, bf16)
config.duration = 400  # seconds: a cap, so a slower machine still keeps the demo's budget
config.label_dropout = 0.1  # null class for classifier-free guidance (w = 2.5 at sampling)
config.ema_decay = 0.999
config.ema_warmup = True  # short runs: decay min(0.999, (1+n)/(10+n)) forgets the initial weights
config.bf16 = True  # on GPUs and AVX-512 CPUs (1.47x there); an AVX2-only CPU runs float32 (bf16 ~18x slower)
config.checkpoint_every = 500
config.sample_every = None  # one grid at the end
config.sample_steps = 8
config.num_workers = 0
config.cache_images = True
