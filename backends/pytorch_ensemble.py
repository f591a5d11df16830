"""PyTorch backend for ensemble graphs (``nasdsl/ensemble_ir.py``): one module holding the members.

:func:`generate_ensemble` (reached through :func:`backends.pytorch.generate`)
writes each distinct member graph's classes once, with the PyTorch backend
itself, then one ensemble class whose attributes are the members (named as
the spec names them, so that the state_dict keys are the IR's:
``googlenet1.inception4a.branch2.1.conv.weight``) and whose ``forward``
averages their outputs as the graph's ``average`` node says.

Members whose graphs generate the same classes share them: seven GoogLeNets
that differ only in their weights are seven instances of one ``GoogLeNet``
class. When two distinct member graphs write different classes under one name
(two ``GoogLeNet`` models, one wider), the later one is renamed
(``GoogLeNetWide``, ``Inception2``) wherever its module uses it: a generated
module's top-level names are never shadowed inside it (``names.Namespace``),
so every use of the name that is not an attribute is the class.
"""

from __future__ import annotations

import ast
import io
import os
import tokenize
from dataclasses import dataclass

import networkx as nx

from nasdsl import __version__, ir
from nasdsl.ensemble_ir import members
from nasdsl.errors import CodegenError
from nasdsl.ops import lowering

from . import pytorch
from .names import BUILTINS, IMPORTED, Namespace, check_attribute
from .pyformat import Call, docstring, layout, literal, safe_text, wrap
from .pytorch_ops import TorchLowering

#: the ensemble graph's ops and what they become here; anything else is refused
ENSEMBLE_OPS = ("input", "member", "average")


@dataclass
class _Module:
    """A generated member module, split into its imports and its top-level definitions."""

    imports: list[str]
    defs: dict[str, str]  # name -> source text of the class or function
    model_class: str
    returns_tensor: bool  # whether the model class's forward always returns a tensor


def _split(source: str, model_class: str) -> _Module:
    lines = source.splitlines()
    tree = ast.parse(source)
    imports: list[str] = []
    defs: dict[str, str] = {}
    returns_tensor = True
    for stmt in tree.body:
        start = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
        text = "\n".join(lines[start - 1 : stmt.end_lineno])
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            imports.append(text)
        elif isinstance(stmt, (ast.ClassDef, ast.FunctionDef)):
            defs[stmt.name] = text
            if stmt.name == model_class:
                forward = next((f for f in stmt.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
                returns_tensor = forward is not None and ast.unparse(forward.returns) == "torch.Tensor"
    return _Module(imports, defs, model_class, returns_tensor)


def _rename(source: str, names: dict[str, str]) -> str:
    """``source`` with every name token of ``names`` that is not an attribute (``.name``) renamed."""
    edits: list[tuple[int, int, int, str]] = []
    previous = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in names and not (previous is not None and previous.string == "."):
            edits.append((tok.start[0], tok.start[1], tok.end[1], names[tok.string]))
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            previous = tok
    lines = source.splitlines(keepends=True)
    for row, start, end, new in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + new + line[end:]
    return "".join(lines)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _fresh(base: str, suffix: str, taken: set[str]) -> str:
    """A class name not in ``taken``: ``base + suffix``, else ``base2``, ``base3``, ..."""
    if suffix and base + suffix not in taken and (base + suffix).isidentifier():
        return base + suffix
    i = 2
    while f"{base}{i}" in taken:
        i += 1
    return f"{base}{i}"


def _merge(modules: list[tuple[str, str, str]]) -> tuple[list[str], dict[str, str], list[_Module]]:
    """Merge member modules ``(first member's name, source, model class)`` in order: the
    imports, the definitions (each distinct one once, clashing names renamed), and each
    module as merged (its model class under its final name)."""
    merged: dict[str, str] = {}
    imports: list[str] = []
    out: list[_Module] = []
    for member, source, model_class in modules:
        module = _split(source, model_class)
        taken = set(merged) | set(module.defs) | IMPORTED | BUILTINS
        for _ in range(len(module.defs) + 1):
            clashes = [n for n, text in module.defs.items() if n in merged and merged[n] != text]
            if not clashes:
                break
            renames: dict[str, str] = {}
            for n in clashes:
                renames[n] = _fresh(n, _camel(member) if n == module.model_class else "", taken)
                taken.add(renames[n])
            source = _rename(source, renames)
            model_class = renames.get(model_class, model_class)
            module = _split(source, model_class)
        else:  # pragma: no cover - each round renames at least one name for good
            raise CodegenError(f"cannot give the classes of member {member} names of their own")
        for stmt in module.imports:
            if stmt not in imports:
                imports.append(stmt)
        for n, text in module.defs.items():
            merged.setdefault(n, text)
        out.append(module)
    return imports, merged, out


def _ordered_imports(imports: list[str]) -> list[str]:
    """The standard library's imports (plain ones first, each kind sorted), a blank line, torch's."""
    torch_lines = [s for s in imports if s.split()[1].split(".")[0] == "torch"]
    std = [s for s in imports if s not in torch_lines]
    std = sorted(s for s in std if s.startswith("import ")) + sorted(s for s in std if s.startswith("from "))
    order = ["import torch", "import torch.nn.functional as F", "from torch import nn"]
    torch_lines = sorted(torch_lines, key=lambda s: (order.index(s) if s in order else len(order), s))
    return [*std, *([""] if std else []), *torch_lines]


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["N", *map(str, shape)]) + ")"


def _check_graph(g: nx.DiGraph) -> None:
    for node, data in ir.nodes(g):
        if data.op not in ENSEMBLE_OPS:
            raise CodegenError(
                f"the PyTorch backend cannot lower op '{data.op}' in an ensemble (node {node})",
                location=data.loc,
                path=data.keypath,
            )


def generate_ensemble(
    g: nx.DiGraph, *, source_name: str | None = None, verify: bool | str | None = None
) -> pytorch.Generated:
    """The PyTorch module of an ensemble graph (see the module docstring)."""
    _check_graph(g)
    found = members(g)
    average = next(n for n, d in ir.nodes(g) if d.op == "average")
    attrs = ir.node(g, average).attrs
    order = ir.inputs(g, average)
    if order != [m.name for m in found]:
        raise CodegenError(f"the average of ensemble {ir.info(g).name} does not read its members in order")
    # one generated module per distinct member graph (by the hash of its overridden spec)
    generated: dict[str, tuple[str, pytorch.Generated]] = {}
    for m in found:
        check_attribute(m.name, "member", m.loc, m.keypath)
        key = ir.info(m.graph).sha256
        if key not in generated:
            generated[key] = (m.name, pytorch.generate(m.graph, verify=verify))
    keys = list(generated)
    imports, defs, modules = _merge([(name, gen.source, gen.model_class) for name, gen in generated.values()])
    # modules with the same classes after merging are one
    class_of = {m.name: modules[keys.index(ir.info(m.graph).sha256)] for m in found}

    taken = set(defs) | IMPORTED | BUILTINS
    name = Namespace(taken).create(ir.info(g).name)
    local = Namespace(taken | {name, "self", "x", "stacked"})
    variables = {m.name: local.create(m.name) for m in found}
    out_shape = ir.node(g, average).shape
    n = len(found)

    classes = sorted({class_of[m.name].model_class for m in found})
    how = "probabilities" if attrs["of"] == "probabilities" else "logits"
    weighted = max(attrs["weights"]) - min(attrs["weights"]) > 1e-12
    summary = safe_text(ir.info(g).doc) or f"The {name} ensemble"
    paragraphs = [
        f"An ensemble of {n} member{'s' * (n > 1)} ({', '.join(m.name for m in found)}; class "
        f"{', '.join(classes)}). It returns the {'weighted ' if weighted else ''}mean of the members' "
        f"{how}{' (a softmax of each output)' if how == 'probabilities' and any(attrs['softmax']) else ''}.",
    ]
    input_doc = safe_text(ir.info(g).input_doc or "")
    c_h_w = ", ".join(map(str, ir.node(g, ir.info(g).input).shape))
    paragraphs.append(f"Input: a batch of shape (N, {c_h_w}){', ' + input_doc if input_doc else ''}.")
    head = [f"class {name}(nn.Module):"] + _docstring(summary, paragraphs)
    init = ["    def __init__(self) -> None:", "        super().__init__()"]
    for m in found:
        init.append(f"        self.{m.name} = {class_of[m.name].model_class}()")
    if weighted:
        weights = Call("torch.tensor", (Call("", tuple(literal(float(w)) for w in attrs["weights"]), "[", "]"),))
        init += layout('self.register_buffer("member_weights", ', weights, 2, suffix=", persistent=False)")
        if "member_weights" in {m.name for m in found}:
            raise CodegenError("a member is named 'member_weights', which the ensemble's class uses; rename it")
    forward = [
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        *(f"        {line}" if line else "" for line in _forward_doc(how, weighted)),
    ]
    note = _shape(out_shape)
    together = all(attrs["softmax"])  # one softmax over the stacked outputs
    for m, soft in zip(found, attrs["softmax"], strict=True):
        v = variables[m.name]
        call = f"self.{m.name}(x)"
        if not class_of[m.name].returns_tensor:
            forward.append(f"        {v} = {call}  # its training outputs in training mode")
            main = f"{v} if isinstance({v}, torch.Tensor) else {v}[0]"
            one = f"        {v} = {main}"
            forward += [one] if len(one) <= 88 else [f"        {v} = (", f"            {main}", "        )"]
            call = v
        if soft and not together:
            call = f"{call}.softmax(dim=1)"
        if call != v:
            forward += layout(f"{v} = ", call, 2, comment=note)
    stacked = Call("torch.stack", (Call("", tuple(variables[m.name] for m in found), "[", "]"),))
    forward += layout("stacked = ", stacked, 2, comment=f"(members, {note[1:]}")
    if weighted:
        view = ", ".join(["-1", *["1"] * (len(out_shape) + 1)])
        if together:
            forward += layout("stacked = ", "stacked.softmax(dim=2)", 2, comment=f"(members, {note[1:]}")
        forward += layout("return ", f"(stacked * self.member_weights.view({view})).sum(dim=0)", 2, comment=note)
    else:
        forward += layout("return ", f"stacked{'.softmax(dim=2)' if together else ''}.mean(dim=0)", 2, comment=note)
    ensemble_class = "\n".join([*head, "", *init, "", *forward])

    all_names = sorted({*(n for n in defs if not n.startswith("_")), name}, key=_isort_style)
    public = layout("__all__ = ", Call("", tuple(f'"{x}"' for x in all_names), "[", "]"), 0)
    shown = safe_text(os.path.basename(source_name or ir.info(g).file)) or "a spec"
    header = [f"# Generated by nasdsl {__version__} from {shown} (spec sha256 {ir.info(g).sha256[:16]})."]
    header += [
        "# " + line for line in wrap(f"It depends on torch alone. Members: {', '.join(m.name for m in found)}.", 86)
    ]
    parts = [
        "\n".join(header + docstring(ir.info(g).doc or "", 0, f"The {name} ensemble")),
        "\n".join(_ordered_imports(imports)),
        "\n".join(public),
        *defs.values(),
        ensemble_class,
    ]
    source = parts[0] + "\n\n" + parts[1] + "\n\n" + parts[2] + "\n\n\n" + "\n\n\n".join(parts[3:]) + "\n"
    return pytorch.Generated(source, name)


def _isort_style(name: str) -> tuple[int, str]:
    """``__all__``'s order as ruff's RUF022 wants it: constants, classes, the rest."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def _docstring(summary: str, paragraphs: list[str]) -> list[str]:
    text = summary if summary.endswith(".") else summary + "."
    lines = wrap(text, 88 - 4 - 3)
    out = [f'    """{lines[0]}', *(f"    {x}" for x in lines[1:])]
    for p in paragraphs:
        out += ["", *(f"    {x}" for x in wrap(p, 88 - 4))]
    return [*out, '    """']


def _forward_doc(how: str, weighted: bool) -> list[str]:
    text = (
        f"The {'weighted ' if weighted else ''}mean of the members' {how}; each member runs as it is "
        "(call eval() first to predict)."
    )
    lines = wrap(text, 88 - 8 - 3)
    return [f'"""{lines[0]}', *lines[1:], '"""'] if len(lines) > 1 else [f'"""{lines[0]}"""']


lowering("pytorch", "member", "average")(TorchLowering(module_writer=generate_ensemble))

__all__ = ["generate_ensemble"]
