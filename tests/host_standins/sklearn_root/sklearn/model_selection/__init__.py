"""Stand-in (see ../../../README.md)."""

from .._unused import Unavailable


class KFold(Unavailable):
    pass
