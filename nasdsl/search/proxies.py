"""Zero-cost proxies: scores of an untrained network, from one batch, that rank architectures.

Both run on the generated PyTorch model as its spec initialises it, in
inference mode (no dropout, no training-only heads, BatchNorm with its initial
statistics), on the CPU:

* :func:`synflow`: SynFlow, from Tanaka, Kunin, Yamins and Ganguli, "Pruning
  neural networks without any data by iteratively conserving synaptic flow"
  (NeurIPS 2020), used as an architecture score by Abdelfattah et al., "Zero-Cost
  Proxies for Lightweight NAS" (ICLR 2021). Every parameter and buffer is
  replaced by its absolute value, the network runs in double precision on one
  input of ones, R is the sum of its main output, and the score is the sum, over
  the weights of every convolution and linear layer, of ``weight * dR/dweight``
  (the synaptic saliencies). It uses no data: only the batch's shape. For a chain
  of linear layers without biases the score is the number of layers times R.
* :func:`naswot`: NASWOT, from Mellor, Turner, Storkey and Crowley, "Neural
  Architecture Search without Training" (ICML 2021). Each input of the batch
  gets a binary code, whether each unit entering a rectifier (ReLU, ReLU6,
  SiLU, Hardswish, GELU) is positive; ``K[i, j]`` counts the units on which
  inputs ``i`` and ``j`` agree, and the score is ``log |det K|``: higher when the
  network tells the inputs apart. The paper feeds a batch of real images; a
  search without data feeds the batch :func:`batch` draws.
"""

from __future__ import annotations

import math

#: the modules whose input NASWOT codes (rectifiers and the units with their kink at 0; sigmoid gates are
#: left out)
RECTIFIERS = ("ReLU", "ReLU6", "SiLU", "Hardswish", "GELU", "LeakyReLU", "PReLU", "ELU")


def batch(shape: tuple[int, ...], size: int, seed: int):
    """``size`` inputs of ``shape`` drawn from a standard normal distribution, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn((size, *shape), generator=g)


def synflow(model, inputs) -> float:
    """SynFlow of ``model`` (see the module docstring); ``inputs`` gives the input's shape.
    The model's parameters are changed: score a model built for it."""
    import torch
    from torch import nn

    model = model.double().eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64)
    _main(model(ones)).sum().backward()
    total = 0.0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.grad is not None:
            total += float((module.weight.detach() * module.weight.grad).sum())
    return total


def naswot(model, inputs) -> float:
    """NASWOT of ``model`` on ``inputs`` (see the module docstring)."""
    import torch

    model = model.float().eval()
    n = inputs.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)
    hooks = []

    def count(module, args) -> None:
        codes = (args[0].detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    for module in model.modules():
        if type(module).__name__ in RECTIFIERS:
            hooks.append(module.register_forward_pre_hook(count))
    if not hooks:
        raise ValueError(f"naswot: the model has no rectifier ({', '.join(RECTIFIERS)}) to take codes from")
    try:
        with torch.no_grad():
            model(inputs.float())
    finally:
        for h in hooks:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -math.inf


def _main(out):
    """The model's main output: the tensor, or the first of its outputs."""
    return out if not isinstance(out, (tuple, list)) else out[0]


__all__ = ["RECTIFIERS", "batch", "naswot", "synflow"]
