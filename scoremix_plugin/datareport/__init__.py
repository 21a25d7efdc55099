"""Dataset report and leak checks: verification statistics of a face set (real or synthetic), per-identity
consistency, training / evaluation leaks at one FAR threshold, the quality gate, and dropping leaked
identities from a generation run. ``report.py`` is the entry point; ``metrics.py`` the numbers."""
