# IResNet-50 + ArcFace on CASIA-WebFace: the BASELINE recogniser (real images only).
# A complete arcface_torch job config: train it with `scoremix train` or copy it to ARCFACE_ROOT/configs/
# (`scoremix arcface-train`, or the host's own train_v2.py). The pipeline (pipeline.py here) reads the
# hyperparameters and fills in rec / num_classes / num_image / output / val_targets itself.
import os

from easydict import EasyDict as edict

config = edict()
config.network = "r50"  # the host's IResNet-50 (the paper's "IR50")
config.embedding_size = 512
config.margin_list = (1.0, 0.5, 0.0)  # ArcFace, s = 64
config.batch_size = 128  # per GPU, the host's default
config.optimizer = "sgd"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4
config.num_epoch = 20  # ~76K steps over CASIA alone at batch 128
config.warmup_epoch = 1
config.fp16 = True
config.sample_rate = 1.0
config.num_workers = 8  # JPEG decoding: one core does ~7,400 images/s with cv2
config.verbose = 2000  # verification every N steps (the pipeline scores at the end instead)
config.frequent = 100
config.seed = 2048
# 112-px generator: no down-and-up resize (image_degrade stays None).

# Data (check the counts with `scoremix rec info $CASIA_REC`; a mismatch bends the LR schedule).
config.rec = os.environ.get("CASIA_REC", "/data/faces_webface_112x112")
config.num_classes = 10572
config.num_image = 490623
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]
config.output = "runs/casia_r50/baseline"
