"""nasdsl: a neural-architecture description compiler.

A network is a declarative YAML spec; nasdsl parses it into a graph IR, checks
it, infers shapes, and hands it to backends that write readable PyTorch source
or an ONNX graph. See README.md and docs/.
"""

from nasdsl.api import Compiled, build_model, compile_spec, load_spec
from nasdsl.errors import NasdslError
from nasdsl.importer import import_model
from nasdsl.transfer import transfer_weights

__all__ = ["Compiled", "NasdslError", "build_model", "compile_spec", "import_model", "load_spec", "transfer_weights"]
__version__ = "0.1.0"
