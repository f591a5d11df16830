"""Safe identifiers for generated Python: every name a backend writes comes from here.

A spec's names reach generated code in two ways:

- as **attribute names** of ``nn.Module`` subclasses (a layer ``self.conv``, a
  branch key of an ``nn.ModuleDict``, a child of ``nn.Sequential(OrderedDict(...))``,
  an output head): these are the ``state_dict`` keys, so they are kept exactly
  and refused (:func:`check_attribute`) when they would hide what the module
  classes or the generated model need (``forward``, ``train``, ``values``,
  ``append``, ``loss``, a switch kept as ``self.<flag>``);
- as **identifiers** of a scope (a class name, a constructor argument, a local
  variable of ``forward``): these are renamed where they would shadow a
  builtin, an import, a generated class or an earlier name, by a
  :class:`Namespace`, as ``torch.fx``'s namespace does. A renamed identifier
  keeps the spec's name with a numeric suffix (``torch`` -> ``torch_1``, ``_`` ->
  ``_1``: never a name with two leading underscores, which a class body mangles).

Names that are neither identifiers nor allowed (a keyword, ``__dunder``) never
get this far: the parser refuses them.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import os
import re
from collections.abc import Iterable

from nasdsl.errors import CodegenError, Location

#: Names every generated file imports or defines at module level besides its classes.
IMPORTED = frozenset({"torch", "nn", "F", "math", "NamedTuple", "OrderedDict", "_xavier_caffe_", "__all__"})
#: The locals and parameters of the methods every generated file writes (forward, loss,
#: reset_parameters, the merge helpers): a class may not take these names either.
METHOD_LOCALS = frozenset(
    {"self", "x", "in_channels", "outputs", "target", "total", "m", "results", "branch", "result"}
)
#: Python's builtins and keywords: never shadowed by a generated identifier.
BUILTINS = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)

#: The public attributes of an ``nn.Module`` instance (torch 2.14); a child may not hide
#: ``train``, ``to`` or ``forward``. Kept here so that writing source needs no torch import;
#: tests/test_pytorch.py checks them against torch.
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)
#: What ``nn.Sequential`` and ``nn.ModuleDict`` add (a child or key with such a name cannot be registered).
SEQUENTIAL_ATTRIBUTES = frozenset({"append", "extend", "insert", "pop"})
MODULE_DICT_ATTRIBUTES = frozenset({"clear", "items", "keys", "pop", "update", "values"})
#: Attributes the generated model class sets or defines itself.
OWN_ATTRIBUTES = frozenset({"loss", "loss_weights", "reset_parameters", "input_mean", "input_std"})
#: Every attribute a layer's name may not take, in any of the containers the backend writes.
TAKEN_ATTRIBUTES = MODULE_ATTRIBUTES | SEQUENTIAL_ATTRIBUTES | MODULE_DICT_ATTRIBUTES | OWN_ATTRIBUTES
#: What the model's constructor arguments may not be called. A switch (a variable that turns a
#: training head on) is also kept as ``self.<argument>``, so an argument named ``eval``, ``train``
#: or ``forward`` would hide nn.Module's method (``model.eval()`` would call a bool): such a
#: variable's argument is renamed (``train`` -> ``train_1``), and the attribute follows it.
MODEL_ARGUMENTS_RESERVED = frozenset({"self"}) | TAKEN_ATTRIBUTES

_NOT_IDENTIFIER = re.compile(r"[^0-9A-Za-z_]")


class Namespace:
    """The identifiers of one scope. ``claim`` takes a name exactly if it is free;
    ``create`` returns a free identifier made from the wanted one (the wanted
    name itself when it is free). Names of an enclosing scope given as ``outer``
    are taken too, so an inner name never shadows an outer one."""

    def __init__(self, reserved: Iterable[str] = (), outer: Namespace | None = None):
        self._taken: set[str] = set(reserved)
        self._outer = outer

    def taken(self, name: str) -> bool:
        return name in self._taken or (self._outer is not None and self._outer.taken(name))

    def claim(self, name: str) -> bool:
        """Take ``name`` as it is; False (and nothing taken) when it is not free."""
        if self.taken(name) or not name.isidentifier() or keyword.iskeyword(name):
            return False
        self._taken.add(name)
        return True

    def create(self, wanted: str) -> str:
        """A free identifier: ``wanted`` if free, else ``wanted_1``, ``wanted_2``, ... (``_1`` for
        ``_``: a name that starts with two underscores is mangled inside a class body)."""
        base = _NOT_IDENTIFIER.sub("_", wanted) or "_"
        if base[0].isdigit():
            base = "_" + base
        if not base.startswith("__") and self.claim(base):
            return base
        stem = "_" + base.lstrip("_") if base.startswith("_") else base
        sep = "" if stem == "_" else "_"
        i = 1
        while not self.claim(f"{stem}{sep}{i}"):
            i += 1
        return f"{stem}{sep}{i}"


def check_attribute(name: str, what: str, location: Location | None, path: str | None, extra=frozenset()) -> None:
    """Refuse a spec name that would become an attribute hiding what the module classes
    or the generated model use (see the module docstring); ``extra`` names more (switches)."""
    if name in TAKEN_ATTRIBUTES or name in extra or name.startswith("_"):
        raise CodegenError(
            f"{what} '{name}' clashes with a name the generated PyTorch module uses (an attribute or "
            "method of nn.Module, nn.Sequential or nn.ModuleDict, or of the model); rename it",
            location=location,
            path=path,
        )


#: The public top-level modules that ``import torch`` loads from files (torch 2.14.1 on Python 3.11;
#: tests/test_pytorch_writer2.py measures them in a fresh interpreter). A script's folder comes
#: first on ``sys.path``: a generated file named after one of them and run from its folder
#: (``python typing.py``) is what torch imports under that name, and so imports itself.
TORCH_LOADS = frozenset(
    """argparse array ast asyncio base64 binascii bisect bz2 calendar cmath collections concurrent
    contextlib contextvars copy copyreg csv ctypes dataclasses datetime difflib dis email encodings
    enum fcntl fnmatch functools gettext glob grp gzip hashlib heapq http importlib inspect
    ipaddress json keyword linecache locale logging lzma math mmap multiprocessing numbers numpy
    opcode operator pathlib pickle pickletools pkgutil platform pprint queue quopri random re
    reprlib select selectors shutil signal socket ssl string struct subprocess sysconfig tarfile
    tempfile textwrap threading timeit token tokenize torch torchgen tqdm traceback types typing
    typing_extensions unicodedata unittest urllib uuid warnings weakref zipfile zlib""".split()
)


def shadowed_module(filename: str, source: str) -> str | None:
    """Why Python source written as ``filename`` would import itself when run from its folder:
    its module name (``torch`` for ``torch.py``) is a module the source imports, or one that
    importing torch loads (:data:`TORCH_LOADS`); None where it is neither (or not a ``.py``
    file, which no import finds)."""
    stem, ext = os.path.splitext(os.path.basename(filename))
    if ext != ".py":
        return None
    imported = set()
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in stmt.names}
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            imported.add(stmt.module.split(".")[0])
    if stem in imported:
        return "a module the file imports"
    if stem in TORCH_LOADS:
        return "a module that importing torch loads"
    return None


__all__ = [
    "BUILTINS",
    "IMPORTED",
    "METHOD_LOCALS",
    "MODEL_ARGUMENTS_RESERVED",
    "MODULE_ATTRIBUTES",
    "MODULE_DICT_ATTRIBUTES",
    "Namespace",
    "OWN_ATTRIBUTES",
    "SEQUENTIAL_ATTRIBUTES",
    "TAKEN_ATTRIBUTES",
    "TORCH_LOADS",
    "check_attribute",
    "shadowed_module",
]
