# The shipped 40-identity generator (scoremix_plugin/pretrained/toy40.*): the demo's EDM2 generator
# (recipes/demo/generator.py, arm b of the generator arms) trained past the demo's CPU budget, to identity
# quality. Its data: `scoremix toy-data --identities 40 --images-per-identity 16 --test-identities 20
# --pairs 300 --seed 0`, the demo's own. Retrain from scratch (resumable):
#   python experiments/pretrained.py train toy40   (then `measure` and `ship`: see that script)
from easydict import EasyDict as edict

config = edict()
config.preset = "edm2-cpu"  # EDM2 magnitude-preserving U-Net at 32 px (32, 32, 64, 128), ~3.0M parameters
config.resolution = 32
config.batch_size = 32
config.lr = 1e-2  # EDM2's relative rate; 1/sqrt decay after lr_decay_ref steps (independent of total_steps)
config.lr_warmup = 100
config.lr_decay_ref = 1000
config.loss_weighting = "uncertainty"
config.total_steps = 4000  # 200 epochs of 640 images; the shipped file is the post-hoc EMA at the step it records
config.duration = None
config.label_dropout = 0.1  # null class for classifier-free guidance
config.ema_sigma_rel = 0.10
config.posthoc_ema = [0.05, 0.10]
config.posthoc_every = 100
config.bf16 = True  # GPUs / AVX-512 CPUs; float32 on an AVX2-only CPU
config.checkpoint_every = 100
config.sample_every = None
config.sample_steps = 8
config.num_workers = 0
config.cache_images = True
config.seed = 0
