"""Helpers for tests that compare against torchvision's models."""

from __future__ import annotations

import torch


def randomise_bn_stats(model: torch.nn.Module, seed: int = 1) -> None:
    """Fresh BatchNorm has mean 0 / var 1; random stats make eval-mode comparisons meaningful.
    Every BatchNorm gets them, of any rank (1-D, 2-D and a video model's 3-D)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Make every tensor count in a comparison: random BatchNorm statistics, and random
    affine parameters for the norms (BatchNorm starts at 1 and 0, LayerNorm too) and for
    ConvNeXt's layer scale (which starts at 1e-6 and would hide its block's branch)."""
    randomise_bn_stats(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            module = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            norm = isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm))
            if norm and name.endswith(".weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif norm and name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
