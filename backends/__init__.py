"""Backends: each turns a compiled spec into one artifact and returns it as data.

- :mod:`nasdsl.backends.pytorch` - PyTorch source (``str``) and in-memory models
- :mod:`nasdsl.backends.onnx` - an ``onnx.ModelProto``

Installed as ``nasdsl.backends`` (see ``package-dir`` in pyproject.toml).
"""
