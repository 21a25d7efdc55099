"""Small denoisers shared by the sampler tests: an untrained micro U-Net and a call-counting wrapper."""

from __future__ import annotations

import torch

from scoremix_plugin.generation.edm import EDMPrecond
from scoremix_plugin.generation.network import build_network, network_kwargs


def micro_denoiser(num_classes: int = 5) -> EDMPrecond:
    """The ``test-micro`` U-Net at 16 px, seeded, in eval mode."""
    torch.manual_seed(0)
    return EDMPrecond(
        build_network(network_kwargs("test-micro", num_classes)), num_classes=num_classes, resolution=16
    ).eval()


class Counting(torch.nn.Module):
    """Counts the forwards through a denoiser, the batch size of each, and the kind of labels it got."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.batch_sizes, self.label_kinds = inner, 0, [], set()
        self.num_classes, self.resolution = inner.num_classes, inner.resolution

    def forward(self, x, sigma, labels):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        self.label_kinds.add("weights" if labels.is_floating_point() else "labels")
        return self.inner(x, sigma, labels)
