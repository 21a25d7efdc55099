"""The recogniser backbones, by their documented import name; they live in ``scoremix_plugin/backbones.py``.

That module sits below verification (scoring a ``.pt`` model must not import the trainers).
"""

from scoremix_plugin.backbones import BACKBONES, IBasicBlock, IResNet, get_backbone, load_backbone

__all__ = ["BACKBONES", "IBasicBlock", "IResNet", "get_backbone", "load_backbone"]
