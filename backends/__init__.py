"""Backends: each turns a compiled spec into one artifact and returns it as data.

- :mod:`nasdsl.backends.pytorch` - PyTorch source (``str``) and in-memory models
- :mod:`nasdsl.backends.onnx` - an ``onnx.ModelProto``

Each op's lowering is registered in its registry entry when the module holding
it is imported; importing the package imports them all (the ensemble modules
register the lowerings of an ensemble's ``member`` and ``average`` ops, which
write the whole module or graph).

Installed as ``nasdsl.backends`` (see ``package-dir`` in pyproject.toml). Imported under another
name (``import backends`` from the repository's root), its modules would be a second copy that
registers the lowerings again with classes of its own, and the first copy's checks
(``isinstance(found, GraphLowering)``) would fail: that is refused.
"""

if __name__ != "nasdsl.backends":
    raise ImportError(
        f"import the backends as nasdsl.backends, not as {__name__!r} (their lowerings are registered once)"
    )

from . import onnx_ensemble, pytorch_ensemble  # noqa: F401, E402 - they register their lowerings
