"""Face verification on ``.bin`` pair sets: safe file handling, the arcface_torch protocol, model evaluation.

Submodules are imported explicitly (``binfile``, ``protocol``, ``evaluate``, ``report``, ``cli``) so that
importing the package loads nothing heavy.
"""
