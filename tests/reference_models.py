"""Helpers for tests that compare against torchvision's models."""

from __future__ import annotations

import torch


def randomise_bn_stats(model: torch.nn.Module, seed: int = 1) -> None:
    """Fresh BatchNorm has mean 0 / var 1; random stats make eval-mode comparisons meaningful."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
