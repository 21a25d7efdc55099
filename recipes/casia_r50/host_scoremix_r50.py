# arcface_torch job config: CASIA-WebFace + ScoreMix shards, IResNet-50 ArcFace, 8 GPUs.
# Copy to ARCFACE_ROOT/configs/casia_scoremix_r50.py, set the two paths, then:
#   cd ARCFACE_ROOT && torchrun --nproc_per_node=8 -m scoremix_plugin arcface-train \
#       --arcface-root . configs/casia_scoremix_r50
# The host reads the keys it knows and ignores `dataset` / `scoremix`; the launcher reads those and hands
# the host a loader over real + synthetic images. num_classes / num_image are checked against the
# manifest before training starts (a mismatch names the key and the value to set).
from easydict import EasyDict as edict

config = edict()
config.margin_list = (1.0, 0.5, 0.0)
config.network = "r50"
config.resume = False
config.output = "work_dirs/casia_scoremix_r50"  # relative to the host folder under arcface-train
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128  # per GPU: 1,024 in all on 8 GPUs
config.lr = 0.1
config.verbose = 2000
config.dali = False  # the scoremix loader replaces the host's; DALI is not used
config.num_workers = 8

config.rec = "/data/faces_webface_112x112"  # the REAL folder: its lfw/cfp_fp/agedb_30 .bin files are used
config.num_classes = 10572 + 4000  # real + synthetic identities (the manifest's num_classes)
config.num_image = 490623 + 200000  # real + synthetic images (real.num_image + num_synthetic_images)
config.num_epoch = 20
config.warmup_epoch = 1
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]

config.dataset = "scoremix"
config.scoremix = edict(
    manifest="/data/scoremix/casia_r50/generate/manifest.json",
    ratio=None,  # every real and synthetic image once per epoch
    aug_real=None,  # host behaviour: flip + normalise only
    aug_synthetic=None,
)
