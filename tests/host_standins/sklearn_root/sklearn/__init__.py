"""Test-only stand-in for scikit-learn when it is absent: names the host imports, unusable (see ../../README.md)."""

__version__ = "0.0+scoremix.standin"
