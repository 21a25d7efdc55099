"""arcface_torch integration: the mxnet shim, the ScoreMix training data, augmentation, the launcher, merge.

Nothing is imported here: ``mxnet_compat`` is installed only by the launcher, and the torch-based
modules (``loader``, ``dataset``) load when used.
"""
