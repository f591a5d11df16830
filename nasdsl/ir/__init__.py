"""The graph IR: a ``networkx.DiGraph`` of typed, immutable records (``docs/ir.md``).

The builder (:mod:`nasdsl.build`) makes it, passes (:mod:`nasdsl.passes`)
transform it, and backends read nothing else. In short:

Nodes
    Keyed by qualified name (``inception4a.branch2.1.conv``; the input node is
    named after the spec's input); each holds a :class:`Node` (read it with
    :func:`node`): its ``op``, ``attrs``, output ``type`` (a :class:`TensorType`
    of any rank) and symbolic shape ``sym``, and where it comes from.

Edges
    ``src -> dst`` with ``index``, ``src``'s position among ``dst``'s inputs;
    read inputs with :func:`inputs`.

The graph
    :func:`info` gives its :class:`GraphInfo`: name, input, outputs (the main one
    first), variables, the block tree (:class:`Block`), templates, init rules,
    the dormant part (:class:`Dormant`) and what the passes established.

Records are frozen dataclasses whose mappings are :class:`FrozenDict`: a pass
makes a copy of the graph (:func:`copy`) and stores new records in it, through
:mod:`nasdsl.ir.rewrite` where it removes, renames or adds nodes (the block tree
follows; :func:`nasdsl.ir.tree.check_tree` checks the two agree). Sizes a
generated class computes from its arguments are :class:`Sym` expressions.
"""

from nasdsl.ir.graph import (
    add_node,
    all_outputs,
    as_graph,
    consumers,
    copy,
    graph_of,
    has_node,
    info,
    input_shapes,
    input_types,
    inputs,
    live,
    node,
    nodes,
    order,
    output_names,
    retarget_outputs,
    roots,
    set_info,
    set_node,
    update_info,
    update_node,
    walk,
)
from nasdsl.ir.records import (
    KEY,
    Arg,
    Block,
    Dormant,
    GraphInfo,
    InitRule,
    Node,
    Output,
    Param,
    Repeat,
    Template,
    When,
)
from nasdsl.ir.sym import Sym, SymbolicError
from nasdsl.ir.types import AXES, EMPTY, FrozenDict, TensorType, default_axes, frozen

__all__ = [
    "AXES",
    "EMPTY",
    "KEY",
    "Arg",
    "Block",
    "Dormant",
    "FrozenDict",
    "GraphInfo",
    "InitRule",
    "Node",
    "Output",
    "Param",
    "Repeat",
    "Sym",
    "SymbolicError",
    "Template",
    "TensorType",
    "When",
    "add_node",
    "all_outputs",
    "as_graph",
    "consumers",
    "copy",
    "default_axes",
    "frozen",
    "graph_of",
    "has_node",
    "info",
    "input_shapes",
    "input_types",
    "inputs",
    "live",
    "node",
    "nodes",
    "order",
    "output_names",
    "retarget_outputs",
    "roots",
    "set_info",
    "set_node",
    "update_info",
    "update_node",
    "walk",
]
