"""The recogniser ("discriminator"): margin losses, the training loop, ONNX export,
class centres. Submodules import torch; this package file imports nothing."""
