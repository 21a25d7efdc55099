# IResNet-50 + ArcFace on WebFace160K (~10K identities, 160K images): the BASELINE recogniser (real images only).
# A complete arcface_torch job config: train it with `scoremix train` or copy it to ARCFACE_ROOT/configs/
# (`scoremix arcface-train`, or the host's own train_v2.py). The pipeline (pipeline.py here) reads the
# hyperparameters and fills in rec / num_classes / num_image / output / val_targets itself.
import os

from easydict import EasyDict as edict

config = edict()
config.network = "r50"
config.embedding_size = 512
config.margin_list = (1.0, 0.5, 0.0)  # ArcFace
config.batch_size = 128
config.optimizer = "sgd"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4
config.num_epoch = 40  # a small set: more passes than CASIA's 20 (~50K steps on the real images alone)
config.warmup_epoch = 2
config.fp16 = True
config.sample_rate = 1.0
config.num_workers = 8
config.verbose = 2000  # verification every N steps (the pipeline scores at the end instead)
config.frequent = 100
config.seed = 2048

# Data (check the counts with `scoremix rec info $WEBFACE160K_REC`; a mismatch bends the LR schedule).
config.rec = os.environ.get("WEBFACE160K_REC", "/data/webface160k")
config.num_classes = 10000
config.num_image = 160000
config.val_targets = ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"]
config.output = "runs/webface160k/baseline"
