# arcface_torch job config: WebFace160K + 0.2M ScoreMix images, IResNet-50 ArcFace, 8 GPUs.
# Copy to ARCFACE_ROOT/configs/webface160k_scoremix_r50.py, set the paths and the two counts from
# `scoremix rec info /data/webface160k` and the manifest (the launcher refuses a mismatch and names the
# value to set), then:
#   cd ARCFACE_ROOT && torchrun --nproc_per_node=8 -m scoremix_plugin arcface-train \
#       --arcface-root . configs/webface160k_scoremix_r50
from easydict import EasyDict as edict

config = edict()
config.margin_list = (1.0, 0.5, 0.0)
config.network = "r50"
config.resume = False
config.output = "work_dirs/webface160k_scoremix_r50"  # relative to the host folder under arcface-train
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 2000
config.dali = False
config.num_workers = 8

config.rec = "/data/webface160k"
config.num_classes = 10000 + 4000  # make_subset.py --identities 10000; 4,000 ScoreMix identities
config.num_image = 160000 + 200000  # --images-per-identity 16; 4,000 x 50 synthetic images
config.num_epoch = 40
config.warmup_epoch = 2
config.val_targets = ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"]

config.dataset = "scoremix"
config.scoremix = edict(
    manifest="/data/scoremix/webface160k/generate/manifest.json",
    ratio=None,
    aug_real=None,
    aug_synthetic=None,
)
