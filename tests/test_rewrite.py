"""The rewrite API (nasdsl/ir/rewrite.py): each edit on small graphs, the tree and the nodes in
agreement after it (nasdsl/ir/tree.py's check, the verifier's), templates inlined with their
expressions translated, and the argument never changed."""

from __future__ import annotations

import copy
import dataclasses

import networkx as nx
import pytest
import torch

import nasdsl
from nasdsl import ir
from nasdsl.backends.pytorch import generate_source, model_class
from nasdsl.errors import GraphError
from nasdsl.ir.rewrite import RewriteError, Rewriter
from nasdsl.ir.sym import Sym
from nasdsl.ir.tree import check_tree, map_roots
from nasdsl.passes.pipeline import verify_graph
from nasdsl.passes.symbolic import infer_symbols

#: a template used twice, one use nested in another template's body, an unnamed sequence, a merge,
#: and a block switched off (its node in the dormant graph, reading the main graph's stem)
NET = """\
name: Net
input: {shape: [3, 8, 8]}
variables: {extra: false}
templates:
  Unit:
    params: [width]
    body:
      conv: {op: conv2d, out: "2 * width", kernel: 3, padding: 1, bias: false}
      bn: batch_norm
      act: relu
  Pair:
    params: [c]
    body:
      first: {use: Unit, args: {width: "c + 1"}}
      second: {use: Unit, args: [c]}
model:
  stem: [{op: conv2d, out: 4, kernel: 1}, {op: dropout, p: 0.5}, {op: conv2d, out: 4, kernel: 1}, dropout]
  gate: {op: relu, when: extra}
  pair: {use: Pair, args: [3]}
  mix: {concat: {a: {op: conv2d, out: 2, kernel: 1}, b: {op: conv2d, out: 3, kernel: 1}}}
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> nasdsl.Compiled:
    path = tmp_path_factory.mktemp("rewrite") / "net.yaml"
    path.write_text(NET)
    return nasdsl.compile_spec(path)


def snapshot(g: nx.DiGraph) -> object:
    """Everything a pass could change, deeply copied: the edges, the records and their mappings,
    the graph's record with its tree, the dormant part's nodes, edges and outputs."""
    info = ir.info(g)
    dormant = info.dormant
    parts = (nx.to_dict_of_dicts(g), dict(ir.nodes(g)), dataclasses.replace(info, dormant=None))
    return copy.deepcopy((*parts, nx.to_dict_of_dicts(dormant.graph), dict(ir.nodes(dormant.graph)), dormant.outputs))


def block(g: nx.DiGraph, path: str, kind: str | None = None) -> ir.Block:
    return next(b for root in ir.roots(g) for b in ir.walk(root) if b.path == path and kind in (None, b.kind))


def test_bypass_leaves_a_skip_that_keeps_the_indices_and_retargets_readers(net):
    before = snapshot(net.graph)
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    assert rw.bypass("stem.1")
    g = rw.finish()
    assert snapshot(net.graph) == before  # the argument is never changed
    assert "stem.1" not in g and ir.inputs(g, "stem.2") == ["stem.0"]
    stem = block(g, "stem")
    assert [(c.name, c.kind, c.inputs, c.output) for c in stem.children] == [
        ("0", "op", ("x",), "stem.0"),
        ("1", "skip", ("stem.0",), "stem.0"),
        ("2", "op", ("stem.0",), "stem.2"),
        ("3", "op", ("stem.2",), "stem.3"),
    ]
    check_tree(g)
    verify_graph(g)
    # the writer keeps the index (state_dict names) of what follows the skip
    keys = model_class(g)().state_dict()
    assert "stem.2.weight" in keys and "stem.0.weight" in keys


def test_bypassing_a_node_whose_reader_reads_its_input_already_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: T\ninput: {shape: [3, 4, 4]}\nmodel:\n  c: {op: conv2d, out: 2, kernel: 1}\n"
                    "  both: {concat: [identity, {op: dropout, p: 0.1}]}\n")  # fmt: skip
    g = nasdsl.compile_spec(path).graph
    rw = Rewriter.on_copy(g, infer_symbols)
    assert rw.bypass("both.0")  # the first may go: the concat then reads c through its edge
    assert not rw.bypass("both.1")  # a graph holds one edge between c and the concat
    check_tree(rw.finish())


def test_bypassing_the_last_node_of_a_block_retargets_every_block_and_output_it_ended(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    rw.bypass("pair.second.act")
    g = rw.finish()
    assert ir.info(g).outputs[0].node == "mix" and ir.inputs(g, "mix.a") == ["pair.second.bn"]
    for path in ("pair", "pair.second"):  # (pair.second now differs from the other Unit: inlined)
        assert block(g, path).output == "pair.second.bn"
    assert block(g, "mix", "merge").inputs == ("pair.second.bn",)
    check_tree(g)


def test_replace_keeps_the_name_or_renames_and_the_tree_follows(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    data = ir.node(rw.g, "mix.a")
    rw.replace("mix.a", dataclasses.replace(data, attrs=data.attrs.replace(bias=False)))
    new = rw.replace("stem.2", dataclasses.replace(ir.node(rw.g, "stem.2"), op="relu", attrs=ir.EMPTY, given=(),
                                                   exprs=ir.EMPTY), rename="stem.act")  # fmt: skip
    g = rw.finish()
    assert new == "stem.act" and "stem.2" not in g and ir.inputs(g, "stem.3") == ["stem.act"]
    assert not ir.node(g, "mix.a").attrs["bias"]
    act = block(g, "stem.act")
    assert (act.kind, act.name, act.op, act.output) == ("op", "act", "relu", "stem.act")
    assert block(g, "stem.3").inputs == ("stem.act",)
    check_tree(g)


def test_a_switched_off_block_reading_a_removed_node_reads_what_replaces_it(net):
    dormant = ir.info(net.graph).dormant.graph
    assert ir.inputs(dormant, "gate") == ["stem.3"] and ir.node(dormant, "stem.3").op == "external"
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    rw.bypass("stem.3")
    g = rw.finish()
    dormant = ir.info(g).dormant.graph
    assert ir.inputs(dormant, "gate") == ["stem.2"] and "stem.3" not in dormant
    assert block(g, "gate").inputs == ("stem.2",) and block(g, "pair", "use").inputs == ("stem.2",)
    check_tree(g)
    assert ir.inputs(ir.info(net.graph).dormant.graph, "gate") == ["stem.3"]  # the argument's stays


#: ``c`` reads ``a`` by ``from:``; ``b`` between them
NAMED = """\
name: Named
input: {shape: [3, 8, 8]}
model:
  a: {op: conv2d, out: 4, kernel: 1}
  b: relu
  c: {op: conv2d, out: 4, kernel: 1, from: a}
"""


def test_the_block_a_from_names_follows_a_rename_and_outlives_a_bypass(tmp_path):
    """``Block.sources`` names the block a ``from:`` names, by path: renamed with it; where that
    block is bypassed (its node gone) the reader reads its input and still names it; a name
    that is no block of the tree is refused by the tree's check."""
    path = tmp_path / "named.yaml"
    path.write_text(NAMED)
    g = nasdsl.compile_spec(path).graph
    assert (block(g, "c").inputs, block(g, "c").sources) == (("a",), ("a",))
    rw = Rewriter.on_copy(g, infer_symbols)
    rw.replace("a", ir.node(rw.g, "a"), rename="first")
    renamed = rw.finish()
    assert (block(renamed, "c").inputs, block(renamed, "c").sources) == (("first",), ("first",))
    check_tree(renamed)
    rw = Rewriter.on_copy(g, infer_symbols)
    assert rw.bypass("a")
    bypassed = rw.finish()
    assert block(bypassed, "a").kind == "skip"
    assert (block(bypassed, "c").inputs, block(bypassed, "c").sources) == (("x",), ("a",))
    check_tree(bypassed)
    broken = ir.copy(g)
    map_roots(broken, lambda b: dataclasses.replace(b, sources=("nowhere",)) if b.path == "c" else b)
    with pytest.raises(GraphError, match=r"block c \(op\) names \('nowhere',\) for its inputs \('a',\)"):
        check_tree(broken)


def test_a_new_name_must_be_an_entry_of_the_same_parent(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    with pytest.raises(RewriteError, match="elsewhere.split cannot be an entry of stem"):
        rw.replace("stem.2", ir.node(rw.g, "stem.2"), rename="elsewhere.split")


def test_remove_takes_dead_nodes_out_and_their_blocks_pass_their_input_on(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    with pytest.raises(RewriteError, match="node stem.2 is read by a node that stays"):
        rw.remove(["stem.2"])
    ir.update_info(rw.g, outputs=(dataclasses.replace(ir.info(rw.g).outputs[0], node="pair.second.act"),))
    rw.remove(["mix.a", "mix.b", "mix"])
    g = rw.finish()
    assert not {"mix", "mix.a", "mix.b"} & set(g)
    assert (block(g, "mix").kind, block(g, "mix").inputs) == ("skip", ("pair.second.act",))
    check_tree(g)


def test_insert_before_nodes_of_a_merge_wraps_it_and_after_a_node_adds_an_entry(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    g = rw.g
    made = dataclasses.replace(ir.node(g, "mix.a"), attrs=ir.node(g, "mix.a").attrs.replace(out=5), sym=None)
    rw.insert("mix.joint", dataclasses.replace(made, type=ir.TensorType((5, 8, 8), "CHW")), ("pair.second.act",),
              before=["mix.a", "mix.b"])  # fmt: skip
    relu = ir.Node("relu", type=ir.node(g, "mix.joint").type)
    rw.insert("mix.joint_relu", relu, ("mix.joint",), after="mix.joint")
    g = rw.finish()
    wrapper = block(g, "mix", "seq")
    assert wrapper.named and [(c.kind, c.path) for c in wrapper.children] == [
        ("op", "mix.joint"),
        ("op", "mix.joint_relu"),
        ("merge", "mix"),
    ]
    assert ir.order(g).index("mix.joint") < ir.order(g).index("mix.a")  # in the order the tree runs them
    check_tree(g)
    with pytest.raises(RewriteError, match="node stem.0 is no entry of a named sequence"):
        Rewriter.on_copy(net.graph, infer_symbols).insert("stem.extra", relu, ("stem.0",), after="stem.0")


def test_inline_translates_expressions_into_the_enclosing_class(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    rw.inline("pair.first")
    g = rw.finish()
    conv = ir.node(g, "pair.first.conv")
    # out: "2 * width" with width = c + 1 at this use: in Pair's terms
    assert conv.instance == "pair" and conv.exprs["out"] == 2 * Sym.name("c") + 2
    assert conv.sym[0] == 2 * Sym.name("c") + 2 and conv.in_sym[0][0] == Sym.name("in_channels")
    first = block(g, "pair.first")
    assert (first.kind, first.named, first.template) == ("seq", True, "Unit")
    assert "pair.first" not in ir.info(g).templates["Unit"].instances
    # the other use keeps the template, in the template's own terms
    assert ir.node(g, "pair.second.conv").exprs["out"] == 2 * Sym.name("width")
    check_tree(g)
    source = generate_source(g)
    assert "conv=nn.Conv2d(in_channels, c * 2 + 2, 3, padding=1, bias=False)," in source
    assert "        self.second = Unit(c * 2 + 2, c)\n" in source


def test_finish_inlines_only_the_uses_that_no_longer_agree(net):
    rw = Rewriter.on_copy(net.graph, infer_symbols)
    for unit in ("pair.first", "pair.second"):  # both alike: the template keeps its one class
        rw.bypass(f"{unit}.bn")
    g = rw.finish()
    assert block(g, "pair.first").kind == block(g, "pair.second").kind == "use"
    rw = Rewriter.on_copy(g, infer_symbols)
    rw.bypass("pair.second.act")  # one of them only
    g = rw.finish()
    assert block(g, "pair.first").kind == "use" and block(g, "pair.second").kind == "seq"
    check_tree(g)
    assert "pair.second.conv.weight" in model_class(g)().state_dict()


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (lambda g: g.add_node("stray", **{ir.KEY: ir.Node("relu")}), "no block of the tree holds node stray"),
        (lambda g: nx.relabel_nodes(g, {"stem.2": "gone"}, copy=False), "reads or holds node stem.2, which is not"),
        (lambda g: ir.update_node(g, "mix.a", op="relu"), "block mix.a says op conv2d, its node mix.a is a relu"),
    ],
    ids=["node-without-block", "block-without-node", "another-op"],
)
def test_the_tree_check_names_what_disagrees(net, breaks, message):
    g = ir.copy(net.graph)
    breaks(g)
    with pytest.raises(GraphError, match=message):
        check_tree(g)


def test_every_pass_through_the_api_leaves_its_argument_unchanged(net):
    from nasdsl.passes.pipeline import PASSES

    g = net.graph
    before = snapshot(g)
    for name in ("inference", "training", "drop_identities", "drop_unused", "fold_norms", "fuse_siblings",
                 "hoist_activations"):  # fmt: skip
        PASSES[name].run(g)
        assert snapshot(g) == before, name


#: an outer template whose first use holds a use that a rewrite sets apart (a BatchNorm at the
#: start of Inner folds into the stem's convolution before the first Outer only), and an entry a
#: parameter switches off, read through an identity that the inference view bypasses
NESTED = """\
name: Nested
input: {shape: [3, 8, 8]}
templates:
  Inner:
    params: [c]
    body:
      norm: batch_norm
      conv: {op: conv2d, out: c, kernel: 1}
  Outer:
    params: [c, {swap: false}]
    body:
      inner: {use: Inner, args: [c]}
      act: relu
      turn: {op: transpose, axis0: 1, axis1: 2, when: swap}
      kept: identity
      more: {op: conv2d, out: c, kernel: 1}
      sum: {add: [{ref: kept}, {ref: more}]}
model:
  stem: {op: conv2d, out: 4, kernel: 1}
  blocks:
    - {use: Outer, args: [4]}
    - {use: Outer, args: [4, true]}
    - {use: Outer, args: [4]}
"""


def test_an_outer_use_holding_a_use_set_apart_is_set_apart_too(tmp_path):
    """Inlining Inner at the first Outer makes that Outer differ from the others: it is inlined in
    turn (the index of uses is read afresh each round), and the model is written and computes as
    the unrewritten one; the uses of Outer that switch `turn` off and on keep one class."""
    from nasdsl.optimize import optimize

    path = tmp_path / "nested.yaml"
    path.write_text(NESTED)
    net = nasdsl.compile_spec(path)
    g = optimize(net, "cpu")
    assert block(g, "blocks.0.inner").kind == "seq" and block(g, "blocks.0").kind == "seq"
    assert block(g, "blocks.1").kind == block(g, "blocks.2").kind == "use"
    check_tree(g)
    torch.manual_seed(0)  # (unseeded, the draw depended on the tests before it)
    state = {k: torch.randn(v.shape) for k, v in model_class(net.graph)().state_dict().items()}
    state = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}
    reference = model_class(optimize(net, rewrites=()))().eval()
    reference.load_state_dict(state)
    model = model_class(g).from_training_state_dict(state).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = reference(x)
        # folded BatchNorm rounds otherwise: within 1e-5 of the output's largest magnitude
        torch.testing.assert_close(model(x), want, rtol=0, atol=1e-5 * float(want.abs().max()))
