"""Backends: each turns a compiled spec into one artifact and returns it as data.

- :mod:`nasdsl.backends.pytorch` - PyTorch source (``str``) and in-memory models
- :mod:`nasdsl.backends.onnx` - an ``onnx.ModelProto``

Each op's lowering is registered in its registry entry when the module holding
it is imported; importing the package imports them all (the ensemble modules
register the lowerings of an ensemble's ``member`` and ``average`` ops, which
write the whole module or graph).

Installed as ``nasdsl.backends`` (see ``package-dir`` in pyproject.toml).
"""

from . import onnx_ensemble, pytorch_ensemble  # noqa: F401 - they register their lowerings
