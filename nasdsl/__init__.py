"""nasdsl: a neural-architecture description compiler.

A network is a declarative YAML spec; nasdsl parses it into a graph IR, checks
it, infers shapes, and hands it to backends that write readable PyTorch source
or an ONNX graph. See README.md and docs/.
"""

import importlib.util as _util
import os as _os
import sys as _sys


def _backends_of_a_checkout() -> None:
    """Make the repository's ``backends/`` folder the subpackage ``nasdsl.backends`` where nasdsl
    is imported from a checkout (the working folder, ``PYTHONPATH``, an editable install's link
    tree holds it already). An installed nasdsl has ``nasdsl/backends/`` inside (pyproject.toml
    maps the folder there), and this does nothing."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    folder = _os.path.join(_os.path.dirname(here), "backends")
    init = _os.path.join(folder, "__init__.py")
    if "nasdsl.backends" in _sys.modules or _os.path.isdir(_os.path.join(here, "backends")):
        return
    if not _os.path.isfile(init):
        return
    spec = _util.spec_from_file_location("nasdsl.backends", init, submodule_search_locations=[folder])
    module = _util.module_from_spec(spec)
    _sys.modules["nasdsl.backends"] = module
    spec.loader.exec_module(module)
    globals()["backends"] = module  # what the import system sets on the parent package


_backends_of_a_checkout()

from nasdsl.api import Compiled, build_model, compile_spec, load_spec  # noqa: E402
from nasdsl.errors import NasdslError  # noqa: E402
from nasdsl.transfer import transfer_weights  # noqa: E402

__all__ = ["Compiled", "NasdslError", "build_model", "compile_spec", "load_spec", "transfer_weights"]
__version__ = "0.1.0"
