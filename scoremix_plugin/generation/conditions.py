"""The generator's learnt class conditions as a centres file (space "condition").

These are the rows of the class-embedding table the denoiser is conditioned on; selecting pairs far
apart in this space, or comparing it with a recogniser's centres (``synthesis/align.py``), asks how the
generator itself arranges the identities.
"""

from __future__ import annotations

import os

import numpy as np

from scoremix_plugin.centres import Centres, save_centres


def export_conditions(ckpt: str | os.PathLike, out: str | os.PathLike, *, ema: bool = True) -> Centres:
    """Write the class-embedding table of ``ckpt`` (the EMA weights unless ``ema=False``) to ``out``."""
    from scoremix_plugin.generation.checkpoint import load_generator

    denoiser, _ = load_generator(ckpt, ema=ema)
    c = denoiser.num_classes
    table = denoiser.net.condition_table().detach().float().cpu().numpy()[:c]  # row c is the null class
    return save_centres(out, np.arange(c), table, space="condition")
