"""Backends: each turns a compiled spec into one artifact and returns it as data.

- :mod:`nasdsl.backends.pytorch` - PyTorch source (``str``) and in-memory models
- :mod:`nasdsl.backends.onnx` - an ``onnx.ModelProto``

Each op's lowering is registered in its registry entry when the module holding
it is imported. Importing the package registers the PyTorch ones (and
``pytorch_ensemble``'s, for an ensemble's ``member`` and ``average`` ops, which
write the whole module); importing :mod:`~nasdsl.backends.onnx` registers the
ONNX ones, ``onnx_ensemble``'s included. So writing PyTorch source never
imports onnx (half a second of a ``nasdsl check``).

Installed as ``nasdsl.backends`` (see ``package-dir`` in pyproject.toml). Imported under another
name (``import backends`` from the repository's root), its modules would be a second copy that
registers the lowerings again with classes of its own, and the first copy's checks
(``isinstance(found, GraphLowering)``) would fail: that is refused.
"""

if __name__ != "nasdsl.backends":
    raise ImportError(
        f"import the backends as nasdsl.backends, not as {__name__!r} (their lowerings are registered once)"
    )

from . import pytorch_ensemble  # noqa: F401, E402 - it registers its lowerings
