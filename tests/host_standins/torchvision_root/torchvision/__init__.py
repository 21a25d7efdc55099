"""Test-only stand-in for the few torchvision names arcface_torch's dataset.py imports (see ../../README.md)."""

from . import datasets, transforms  # noqa: F401

__version__ = "0.0+scoremix.standin"
