"""`scoremix demo --full`: the demo with its generator trained here, from scratch, instead of the shipped one.

The generator config is demo/generator.py (EDM2 edm2-cpu, 1,200 steps capped at 320 s so the demo keeps its
15-minute budget on 2 cores; about 36 CPU minutes to reach those steps uncapped on an AVX2 core). On such a
budget its identities are usually not yet identities (docs/results.md, "Generator arms"), so the quality gate
reports instead of stopping the run.
"""

from pathlib import Path

from easydict import EasyDict as edict

from scoremix_plugin.config import read_config_file

config = edict(read_config_file(Path(__file__).with_name("demo.py")))
config.name = "ScoreMix CPU demo (generator trained here)"
config.generator = "demo/generator.py"
config.generator_sigma_rel = 0.10  # sample its post-hoc EMA of this length (arm b of the generator arms)
config.quality_gate = False
