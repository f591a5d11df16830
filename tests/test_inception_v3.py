"""specs/inception_v3.yaml against torchvision's Inception-v3 with `transform_input=True`,
the setting of its pretrained weights: the spec's variable `transform_input` writes
torchvision's per-channel map x * (std / 0.5) + (mean - 0.5) / 0.5 as the input's
mean and std, so the generated model takes ImageNet-normalised images as torchvision's
does. (tests/test_families.py compares the default, transform_input=False.)"""

from __future__ import annotations

import torch
import torchvision

import nasdsl
from nasdsl import build_model, ir
from nasdsl.backends.pytorch import model_class

from paths import SPECS
from reference_models import randomise

SPEC = SPECS / "inception_v3.yaml"


def reference(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, init_weights=False, transform_input=True, **kw)
    randomise(model)
    return model


def image(size: int, batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))


def close(expected: torch.Tensor, got: torch.Tensor) -> bool:
    """Within 1e-5 of the largest output, as tests/test_families.py compares."""
    return got.shape == expected.shape and (expected - got).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_transform_input_is_the_inputs_mean_and_std():
    on = nasdsl.compile_spec(SPEC, {"transform_input": True}).graph
    attrs = ir.node(on, ir.info(on).input).attrs
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(attrs["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(attrs["std"]).view(1, 3, 1, 1)
    with torch.device("meta"):
        ref = torchvision.models.inception_v3(weights=None, init_weights=False, transform_input=True)
    assert torch.allclose((x - mean) / std, ref._transform_input(x), rtol=0, atol=1e-6)
    # torchvision's default (transform_input=False) uses the input as it is: no normalisation at all
    off = nasdsl.compile_spec(SPEC).graph
    assert ir.node(off, ir.info(off).input).attrs["mean"] is None
    assert ir.node(off, ir.info(off).input).attrs["std"] is None


def test_eval_outputs_match_torchvision_with_transform_input():
    ref = reference().eval()
    model = build_model(SPEC, weights=ref.state_dict(), transform_input=True).eval()
    assert list(model.state_dict()) == list(ref.state_dict())
    x = image(299, 1)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert close(expected, got)


def training(model: torch.nn.Module) -> torch.nn.Module:
    """Training mode (the auxiliary head runs) with BatchNorm on its running statistics: a
    batch's own statistics over a 1x1 map of two samples would magnify rounding differences."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model


def test_training_outputs_match_torchvision_with_transform_input():
    """In training both return the logits and the auxiliary head's, read from Mixed_6e (the
    head needs Mixed_6e at 17x17: 299x299 inputs)."""
    ref = training(reference(dropout=0.0))
    model = training(build_model(SPEC, weights=ref.state_dict(), transform_input=True, dropout=0.0))
    x = image(299, 1)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert close(expected.logits, got.logits) and close(expected.aux_logits, got.AuxLogits)


def test_without_the_auxiliary_head_the_names_are_torchvisions():
    net = nasdsl.compile_spec(SPEC, {"aux_logits": False, "transform_input": True})
    with torch.device("meta"):
        names = list(torchvision.models.inception_v3(weights=None, init_weights=False, aux_logits=False).state_dict())
        model = model_class(net.graph)()
    assert list(model.state_dict()) == names
    assert not any(name.startswith("AuxLogits.") for name in names)


def test_one_class_takes_aux_logits_as_torchvision_does():
    """The class the default spec writes takes aux_logits, as torchvision's Inception3 does: off,
    it builds no auxiliary head (torchvision's names), and in training returns the logits alone;
    on, it returns both. Compared with torchvision's model built each way, same weights."""
    cls = model_class(nasdsl.compile_spec(SPEC).graph)
    x = image(299, 1)
    for aux in (False, True):
        ref = training(reference(aux_logits=aux, dropout=0.0))
        ref.transform_input = False  # the spec's default: the input as it is
        model = training(cls(aux_logits=aux, dropout=0.0))
        model.load_state_dict(ref.state_dict(), strict=True)
        assert list(model.state_dict()) == list(ref.state_dict())
        with torch.no_grad():
            expected, got = ref(x), model(x)
        if aux:
            assert close(expected.logits, got.logits) and close(expected.aux_logits, got.AuxLogits)
        else:  # both return the logits alone in training without the head
            assert isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and close(expected, got)
