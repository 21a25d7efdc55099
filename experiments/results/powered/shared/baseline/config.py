# Written by `scoremix pipeline` (stage baseline) from /work/main/experiments/ablation/recogniser.py.
from easydict import EasyDict as edict

config = edict()
config.network = 'r18_cpu'
config.embedding_size = 128
config.margin_list = (1.0, 0.5, 0.0)
config.batch_size = 64
config.optimizer = 'sgd'
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 0.0005
config.num_epoch = 30
config.warmup_epoch = 1
config.fp16 = False
config.sample_rate = 1.0
config.num_workers = 0
config.verbose = 1000000000
config.frequent = 10
config.seed = 2048
config.image_degrade = 32
config.rec = '/work/main/experiments/runs/powered/shared/data'
config.num_classes = 200
config.num_image = 3200
config.output = '/work/main/experiments/runs/powered/shared/baseline'
config.val_targets = []
config.dataset = 'rec'
