"""Class-conditional EDM diffusion: preconditioning and loss (edm), U-Net (network), training (train),
the ScoreMix sampler (sampler), checkpoint loading (checkpoint) and the CLI (cli).

Nothing is imported here: torch and diffusers load only when a submodule is used.
"""
