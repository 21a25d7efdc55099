# The 200-identity generator (scoremix_plugin/pretrained/toy200.*, once shipped): toy40.py's network and optimiser
# on the powered design's data, `scoremix toy-data --identities 200 --images-per-identity 16 --test-identities 100
# --pairs 3000 --seed 0` (experiments/powered.py). Train from scratch (resumable):
#   python experiments/pretrained.py train toy200   (then `measure` and `ship`: see that script)
from pathlib import Path

from easydict import EasyDict as edict

from scoremix_plugin.config import read_config_file

config = edict(read_config_file(Path(__file__).with_name("toy40.py")))
# 120 epochs of 3,200 images: toy40 plateaued between 100 and 150 epochs (docs/results.md, "Shipped generators")
config.total_steps = 12000
config.posthoc_every = 250  # 48 snapshots of 2 profiles, as toy40's 40 (~24 MB each)
config.checkpoint_every = 250
