"""nasdsl: a neural-architecture description compiler.

A network is a declarative YAML spec; nasdsl parses it into a graph IR, checks
it, infers shapes, and hands it to backends that write readable PyTorch source
or an ONNX graph. See README.md and docs/.
"""

import importlib.abc as _abc
import importlib.util as _util
import os as _os
import sys as _sys

__version__ = "0.1.0"


class _CheckoutBackends(_abc.MetaPathFinder):
    """Finds ``nasdsl.backends`` in the repository's ``backends/`` folder where nasdsl is
    imported from a checkout (the working folder, ``PYTHONPATH``, an editable install). An
    installed nasdsl has ``nasdsl/backends/`` inside (pyproject.toml maps the folder there),
    and this finder is not added. It only says where the package is: importing nasdsl imports
    no backend (checking a spec needs neither torch nor onnx)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 - the finder protocol
        if fullname != "nasdsl.backends":
            return None
        init = _os.path.join(self.folder, "__init__.py")
        return _util.spec_from_file_location(fullname, init, submodule_search_locations=[self.folder])


def _backends_of_a_checkout() -> None:
    here = _os.path.dirname(_os.path.abspath(__file__))
    folder = _os.path.join(_os.path.dirname(here), "backends")
    if _os.path.isdir(_os.path.join(here, "backends")) or not _os.path.isfile(_os.path.join(folder, "__init__.py")):
        return
    if not any(isinstance(f, _CheckoutBackends) for f in _sys.meta_path):
        _sys.meta_path.append(_CheckoutBackends(folder))


_backends_of_a_checkout()

from nasdsl.api import Compiled, build_model, compile_spec, load_spec  # noqa: E402
from nasdsl.errors import NasdslError  # noqa: E402
from nasdsl.importer import import_model  # noqa: E402
from nasdsl.transfer import transfer_weights  # noqa: E402

__all__ = ["Compiled", "NasdslError", "build_model", "compile_spec", "import_model", "load_spec", "transfer_weights"]
