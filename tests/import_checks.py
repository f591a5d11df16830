"""What the importer tests of functional layers share: an import checked against its source, the
model mapping of its spec, and a module holding tensors whose forward a test writes."""

from __future__ import annotations

import re

import pytest
import yaml
from torch import nn

from nasdsl.backends.verify import verify_import
from nasdsl.importer import ImportFailure, import_model


def checked(source, shape=None):
    """The import of ``source`` with its tensors, run against the source (the module in eval,
    or ONNX Runtime's run of the file): what ``--check`` runs."""
    result = import_model(source, input_shape=shape, weights=True)
    verification = verify_import(result.compiled.graph, result.weights, result.reference or source)
    assert verification.ok and max(c.max_rel for c in verification.checks) <= 1e-5, verification
    return result


def model_of(result) -> dict:
    return yaml.safe_load(result.text)["model"]


def holding(forward, **tensors) -> nn.Module:
    """A module ``block`` holding ``tensors`` (a ``buf_`` name is a buffer, a module is a child)
    computing ``forward(self, x)``, inside a model that feeds it a convolution of the input."""

    class Held(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, value in tensors.items():
                if isinstance(value, nn.Module):
                    setattr(self, name, value)
                elif name.startswith("buf_"):
                    self.register_buffer(name[4:], value)
                else:
                    setattr(self, name, nn.Parameter(value))

        def forward(self, x):
            return forward(self, x)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.block = Held()

        def forward(self, x):
            return self.block(self.conv(x))

    return Model()


def assert_refused_at_the_forward(forward, tensors: dict, said: str, here: str) -> None:
    """Importing :func:`holding`'s model fails at the line of ``here`` (the test file) where
    ``forward`` calls the function or method, and the message says ``said``."""
    with pytest.raises(ImportFailure) as e:
        import_model(holding(forward, **tensors), input_shape=(3, 4, 4))
    message = e.value.format()
    assert re.match(rf"{re.escape(here)}:\d+:1: error: block\.\w+: (function|method) ", message), message
    assert said in message, message
