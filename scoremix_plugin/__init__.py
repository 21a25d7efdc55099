"""scoremix: ScoreMix synthetic identities for InsightFace's arcface_torch.

Importing the package does nothing beyond defining names: every stage lives in its own
sub-package (``recordio``, ``verification``, ``recognition``, ``generation``, ``synthesis``,
``integration``) and is imported only when used.
"""

__version__ = "0.1.0"
