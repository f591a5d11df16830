"""Helpers for tests that compare against torchvision's models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
    """Make every tensor count in a comparison: random BatchNorm statistics, random affine
    parameters for the norms (BatchNorm starts at 1 and 0, LayerNorm too) and for ConvNeXt's
    layer scale (which starts at 1e-6 and would hide its block's branch), and random values for
    any other parameter that starts at zeros (ViT's head, whose zeros would make every output
    zero, its class token, a bias)."""
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
            elif p.is_floating_point() and not p.is_meta and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def holds_tensors(module: torch.nn.Module) -> bool:
    """Whether the module itself (not its children) holds a parameter or a buffer."""
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def assert_module_for_module(model: torch.nn.Module, reference: torch.nn.Module) -> tuple[int, int]:
    """Ours against torchvision's model (on the meta device or not): the state_dict's names in
    torchvision's order with its shapes and dtypes; every module holding tensors of torchvision's
    class with its ``extra_repr`` (kernel, stride, padding, groups, eps, momentum...); every
    dropout and stochastic depth rate where ours has the module (torchvision builds a block's
    stochastic depth even where the block adds no residual and never calls it; a spec switches it
    off there). Returns how many modules holding tensors and how many rates were compared."""
    import pytest

    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert [(tuple(t.shape), t.dtype) for t in ours.values()] == [(tuple(t.shape), t.dtype) for t in theirs.values()]
    modules = dict(model.named_modules())
    held = rates = 0
    for path, module in reference.named_modules():
        if holds_tensors(module):
            assert type(modules[path]).__name__ == type(module).__name__, path
            assert modules[path].extra_repr() == module.extra_repr(), path
            held += 1
        if type(module).__name__ in ("Dropout", "StochasticDepth") and path in modules:
            assert modules[path].p == pytest.approx(module.p, rel=1e-12), path
            rates += 1
    return held, rates


@contextlib.contextmanager
def without_initialisation() -> Iterator[None]:
    """torch.nn.init's functions (``kaiming_normal_``, ``uniform_``...) leave their tensor as it is
    for a while: on the meta device they have no values to fill, and going through the meta kernels
    is most of the time a model takes to build there."""
    init = torch.nn.init
    kept = {name: getattr(init, name) for name in init.__all__ if name.endswith("_")}
    try:
        for name in kept:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in kept.items():
            setattr(init, name, function)


def generated_with_weights(net, reference: torch.nn.Module) -> torch.nn.Module:
    """The PyTorch backend's model of ``net`` (a compiled spec) holding ``reference``'s tensors,
    loaded strictly, its keys in the reference's order; in eval mode."""
    from nasdsl.backends.pytorch import generate_source, load_source

    with torch.device("meta"), without_initialisation():  # every tensor is the reference's
        ours = getattr(load_source(generate_source(net.graph)), net.spec.name)()
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    return ours.eval()


#: a small MaxViT (2x2 partitions at 64x64), as torchvision's constructor and specs/maxvit_t.yaml name
#: its settings
MAXVIT_CHANNELS, MAXVIT_LAYERS = [8, 16, 16, 32], [1, 2, 1, 1]
MAXVIT_SPEC_VARIABLES = {
    **{"image_size": 64, "partition_size": 2, "head_dim": 8, "stem_channels": 8, "num_classes": 10},
    **{f"c{k + 1}": c for k, c in enumerate(MAXVIT_CHANNELS)},
    **{f"n{k + 1}": n for k, n in enumerate(MAXVIT_LAYERS)},
}


def small_maxvit(stochastic_depth_prob: float = 0.2):
    """torchvision's own MaxVit class at the settings of :data:`MAXVIT_SPEC_VARIABLES`."""
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(64, 64),
        stem_channels=8,
        partition_size=2,
        block_channels=MAXVIT_CHANNELS,
        block_layers=MAXVIT_LAYERS,
        head_dim=8,
        stochastic_depth_prob=stochastic_depth_prob,
        num_classes=10,
    )
