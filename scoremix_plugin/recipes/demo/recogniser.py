# The demo's recogniser: an arcface_torch config (the pipeline fills in rec, num_classes, num_image,
# output and val_targets for the baseline and the ScoreMix run).
from easydict import EasyDict as edict

config = edict()
config.network = "r18_cpu"  # quarter-width IResNet-18, strided stem: ~280 images/s on 2 cores
config.embedding_size = 128
config.margin_list = (1.0, 0.5, 0.0)  # ArcFace
config.batch_size = 64
config.optimizer = "sgd"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4
config.num_epoch = 25  # 640 real images: 10 steps per epoch, 250 steps (docs/results.md, "The demo": its budget)
config.warmup_epoch = 1
config.fp16 = False
config.sample_rate = 1.0
config.num_workers = 0
config.verbose = 10**9  # the pipeline's verify stage evaluates at the end
config.frequent = 10
config.seed = 2048
# The generator works at 32 px: real images go through the same 32-px down-and-up resize, so
# "blurry = synthetic" is no shortcut for the recogniser.
config.image_degrade = 32
