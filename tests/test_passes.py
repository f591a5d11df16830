"""Each pass on small graphs: what it changes, what it keeps, and that it leaves its input alone.

End-to-end checks of the same passes (every spec, against ONNX Runtime and torchvision) live in
test_onnx.py and test_pytorch.py; here each rule of a pass has its own small spec.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import nasdsl
from nasdsl import ir
from nasdsl.passes.check import drop_unused, unused
from nasdsl.passes.derive import FoldNorm, derive_weights
from nasdsl.passes.exposure import expose
from nasdsl.passes.fold import drop_identities, fold_norms
from nasdsl.passes.inplace import mark_inplace
from nasdsl.passes.phases import inference_graph, training_graph
from nasdsl.weights import initial_weights


def graph(tmp_path: Path, body: str, head: str = "") -> nx.DiGraph:
    """A spec with input [3, 8, 8]; ``head`` holds variables/templates, ``body`` the model and outputs."""
    text = "name: Net\ninput: {shape: [3, 8, 8]}\n" + textwrap.dedent(head) + textwrap.dedent(body)
    path = tmp_path / "net.yaml"
    path.write_text(text)
    return nasdsl.compile_spec(path).graph


def exposed(g: nx.DiGraph) -> tuple[str, ...]:
    before = ir.info(g)
    out = ir.info(expose(g)).exposed
    assert ir.info(g).exposed is None and ir.info(g) == before  # the input is left alone
    return out


# -- expose ----------------------------------------------------------------------------------

CLASSIFIER = """\
model:
  conv: {op: conv2d, out: 4, kernel: 3}
  act: relu
  pool: global_avg_pool
  flat: flatten
  drop: {op: dropout, p: rate}
  fc: {op: linear, out: classes}
"""


def test_sizes_only_the_output_sees_and_rates_are_exposed(tmp_path):
    g = graph(tmp_path, CLASSIFIER, "variables: {classes: 10, rate: 0.5}\n")
    assert exposed(g) == ("classes", "rate")


def test_a_width_read_by_a_layer_with_weights_is_folded(tmp_path):
    body = CLASSIFIER.replace("out: 4", "out: width")
    assert exposed(graph(tmp_path, body, "variables: {classes: 10, rate: 0.5, width: 4}\n")) == ("classes", "rate")


def test_a_kernel_is_exposed_unless_its_size_reaches_a_linear_layer(tmp_path):
    head = "variables: {classes: 10, rate: 0.5, k: 3}\n"
    assert exposed(graph(tmp_path, CLASSIFIER.replace("kernel: 3", "kernel: k"), head)) == ("classes", "rate", "k")
    without_pool = CLASSIFIER.replace("kernel: 3", "kernel: k").replace("  pool: global_avg_pool\n", "")
    assert exposed(graph(tmp_path, without_pool, head)) == ("classes", "rate")


def test_a_value_the_class_cannot_write_is_folded(tmp_path):
    body = CLASSIFIER.replace("p: rate", 'p: "rate / 2"')
    assert exposed(graph(tmp_path, body, "variables: {classes: 10, rate: 0.5}\n")) == ("classes",)


def test_variables_of_the_input_or_of_other_variables_are_folded(tmp_path):
    text = "name: Net\ninput: {shape: [3, side, side]}\n"
    text += "variables: {side: 8, classes: 10, rate: 0.5, twice: 'classes * 2'}\n"
    path = tmp_path / "net.yaml"
    path.write_text(text + CLASSIFIER.replace("out: classes", "out: twice"))
    g = nasdsl.compile_spec(path).graph
    assert exposed(g) == ("rate", "twice")


def test_template_arguments_carry_a_variable_into_the_class(tmp_path):
    head = """\
    variables: {classes: 10, rate: 0.5}
    templates:
      Head:
        params: [n, {p: 0.1}]
        body: [global_avg_pool, flatten, {op: dropout, p: p}, {op: linear, out: n}]
      Halved:
        params: [n, p]
        body: [global_avg_pool, flatten, {op: dropout, p: "p / 2"}, {op: linear, out: n}]
    """
    ok = "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  head: {use: Head, args: [classes, rate]}\n"
    assert exposed(graph(tmp_path, ok, head)) == ("classes", "rate")
    folded = ok.replace("use: Head", "use: Halved")
    assert exposed(graph(tmp_path, folded, head)) == ("classes",)  # the class writes p / 2 as a number


SWITCH_HEAD = "variables: {extra: false}\n"


@pytest.mark.parametrize("value", ["true", "false"])
def test_a_switch_of_a_block_that_keeps_the_shape_is_exposed(tmp_path, value):
    body = "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  bn: {op: batch_norm, when: extra}\n  act: relu\n"
    g = graph(tmp_path, body, f"variables: {{extra: {value}}}\n")
    assert exposed(g) == ("extra",)
    if value == "false":  # the block is expanded all the same, out of the main graph
        assert "bn" not in g and "bn" in ir.info(g).dormant.graph
        assert ir.info(g).model.children[1].dormant


NESTED_SWITCHES = {
    # torchvision's VGG with and without BatchNorm: the switch is on an item of a list
    "list item": "model:\n  features:\n    - {op: conv2d, out: 4, kernel: 1}\n    - {op: batch_norm, when: extra}\n"
    "    - relu\n",
    "merge branch": "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  sum:\n    add:\n      - identity\n"
    "      - [{op: conv2d, out: 4, kernel: 1}, {op: batch_norm, when: extra}]\n",
    # RegNetX from the RegNetY spec: the variable itself, not a parameter of the template
    "template body": "templates:\n  T:\n    body:\n      conv: {op: conv2d, out: 4, kernel: 1}\n"
    "      bn: {op: batch_norm, when: extra}\nmodel:\n  t: T\n",
}


@pytest.mark.parametrize("value", ["true", "false"])
@pytest.mark.parametrize("where", NESTED_SWITCHES)
def test_a_switch_below_the_top_level_entries_is_folded(tmp_path, where, value):
    """The class writes a list or a merge as one module expression, with no statement to guard:
    the switch takes its spec value, and the class builds exactly the graph's layers."""
    from nasdsl import build_model

    g = graph(tmp_path, NESTED_SWITCHES[where], f"variables: {{extra: {value}}}\n")
    assert exposed(g) == ()
    net = nasdsl.compile_spec(tmp_path / "net.yaml")
    model = build_model(net)
    norms = [m for m in model.modules() if type(m).__name__ == "BatchNorm2d"]
    assert len(norms) == (1 if value == "true" else 0)
    assert sum(p.numel() for p in model.parameters()) == net.summary()["totals"]["params"]


@pytest.mark.parametrize("value", ["true", "false"])
def test_a_switch_that_changes_what_a_layer_reads_is_folded(tmp_path, value):
    body = "model:\n  wide: {op: conv2d, out: 6, kernel: 1, when: extra}\n  conv: {op: conv2d, out: 4, kernel: 1}\n"
    assert exposed(graph(tmp_path, body, f"variables: {{extra: {value}}}\n")) == ()


def test_switches_of_references_and_of_fixed_outputs_are_folded(tmp_path):
    ref = "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  b: relu\n  r: {ref: a, when: extra}\n"
    assert exposed(graph(tmp_path, ref, SWITCH_HEAD)) == ()
    outputs = "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  b: relu\noutputs:\n  main: {from: b}\n"
    plain = outputs + "  side: {from: a, when: extra}\n"
    assert exposed(graph(tmp_path, plain, SWITCH_HEAD)) == ()
    headed = outputs + "  side: {from: a, when: extra, head: [global_avg_pool, flatten, {op: linear, out: 2}]}\n"
    assert exposed(graph(tmp_path, headed, SWITCH_HEAD)) == ("extra",)
    first = "model:\n  a: {op: conv2d, out: 4, kernel: 1}\noutputs:\n  main: {from: a, when: extra}\n  b: {from: a}\n"
    assert exposed(graph(tmp_path, first, "variables: {extra: true}\n")) == ()


def test_an_output_without_a_head_is_switched_with_the_entry_it_reads(tmp_path):
    """Inception-v3's AuxLogits: a model entry and the output that reads it, both `when: extra`:
    the output exists exactly when the class builds the entry, so `extra` is an argument."""
    body = (
        "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n"
        "  aux: {op: global_avg_pool, when: extra, phase: train}\n"
        "  b: {op: relu, from: a}\noutputs:\n  main: {from: b}\n  aux: {from: aux, when: extra, training_only: true}\n"
    )
    assert exposed(graph(tmp_path, body, SWITCH_HEAD)) == ("extra",)
    # the entry always there: the switch would only hide an output the forward computes anyway
    always = body.replace("aux: {op: global_avg_pool, when: extra, phase: train}", "aux: {op: global_avg_pool}")
    assert exposed(graph(tmp_path, always, SWITCH_HEAD)) == ()


def test_a_switch_whose_part_does_not_build_is_folded_and_says_why(tmp_path):
    body = "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  big: {op: max_pool, kernel: 20, when: extra}\n"
    g = graph(tmp_path, body, SWITCH_HEAD)
    assert exposed(g) == ()
    assert "expected a kernel no larger than the input 8x8, got 20x20" in ir.info(g).dormant.errors["extra"]
    broken = (
        "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  r: {op: relu, when: extra}\n  y: {ref: nowhere, when: extra}\n"
    )
    g = graph(tmp_path, broken, SWITCH_HEAD)
    assert exposed(g) == () and "no node named 'nowhere'" in ir.info(g).dormant.errors["extra"]


def test_a_switch_read_from_inside_is_folded(tmp_path):
    body = """\
    model:
      a: {op: conv2d, out: 4, kernel: 1}
      pair:
        when: extra
        use: Pair
      back: {ref: pair.first}
    """
    head = "variables: {extra: true}\ntemplates:\n  Pair:\n    body: {first: relu, second: sigmoid}\n"
    assert exposed(graph(tmp_path, body, head)) == ()


def test_a_loss_weight_variable_is_folded(tmp_path):
    body = (
        "model:\n  a: {op: conv2d, out: 4, kernel: 1}\noutputs:\n  main: {from: a}\n  side: {from: a, loss_weight: w}\n"
    )
    assert exposed(graph(tmp_path, body, "variables: {w: 0.5}\n")) == ()


def test_reserved_names_are_never_exposed(tmp_path):
    g = graph(tmp_path, CLASSIFIER, "variables: {classes: 10, rate: 0.5}\n")
    assert ir.info(expose(g, reserved={"rate"})).exposed == ("classes",)


# -- mark_inplace --------------------------------------------------------------------------------


def inplace(g: nx.DiGraph, exposed_switches: tuple[str, ...] = ()) -> dict[str, bool]:
    h = g.copy()
    ir.update_info(h, exposed=exposed_switches)
    marked = mark_inplace(h)
    assert all(d.inplace is None for _, d in ir.nodes(h))
    return {n: d.inplace for n, d in ir.nodes(marked) if d.inplace is not None}


def test_an_activation_after_a_fresh_tensor_runs_in_place(tmp_path):
    g = graph(tmp_path, "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  act: relu\n  out: sigmoid\n")
    assert inplace(g) == {"act": True}


def test_not_in_place_on_the_input_a_shared_value_or_an_output(tmp_path):
    assert inplace(graph(tmp_path, "model:\n  act: relu\n  c: {op: conv2d, out: 2, kernel: 1}\n")) == {"act": False}
    shared = "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  act: relu\n  back: {ref: conv}\n  s: sigmoid\n"
    assert inplace(graph(tmp_path, shared)) == {"act": False}
    tapped = (
        "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  act: relu\noutputs:\n  y: {from: act}\n  c: {from: conv}\n"
    )
    assert inplace(graph(tmp_path, tapped)) == {"act": False}


def test_through_aliases_to_a_fresh_tensor(tmp_path):
    body = "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  drop: {op: dropout, p: 0.1}\n  act: relu\n"
    assert inplace(graph(tmp_path, body)) == {"act": True}
    body = "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  same: identity\n  act: relu\n  back: {ref: conv}\n"
    assert inplace(graph(tmp_path, body)) == {"act": False}


def test_an_exposed_switch_in_between_keeps_the_activation_out_of_place(tmp_path):
    body = "model:\n  conv: {op: conv2d, out: 4, kernel: 1}\n  bn: {op: batch_norm, when: extra}\n  act: relu\n"
    g = graph(tmp_path, body, SWITCH_HEAD)
    assert inplace(g, ("extra",)) == {"act": False}  # the BatchNorm may come in between
    assert inplace(g, ()) == {"act": True}  # folded off: the ReLU reads the convolution alone
    g = graph(tmp_path, body, "variables: {extra: true}\n")
    assert inplace(g, ("extra",)) == {"act": True}  # may be off: then it reads the convolution, alone too


def test_a_residual_sum_adds_into_a_fresh_first_input(tmp_path):
    residual = "model:\n  res:\n    add:\n"
    residual += "      main: [{op: conv2d, out: 3, kernel: 1}, batch_norm]\n      skip: identity\n"
    assert inplace(graph(tmp_path, residual)) == {"res": True}
    # the first input is the block's input (read by the other branch too), or a ReLU's output
    # (its backward reads it), or read again later: the sum makes a new tensor
    for body in (
        "model:\n  res:\n    add:\n      skip: identity\n      main: {op: conv2d, out: 3, kernel: 1}\n",
        "model:\n  res:\n    add:\n      main: [{op: conv2d, out: 3, kernel: 1}, sigmoid]\n      skip: identity\n",
        "model:\n  c: {op: conv2d, out: 3, kernel: 1}\n  res: {add: [identity, identity]}\n",
    ):
        assert inplace(graph(tmp_path, body)) == {"res": False}, body
    tapped = residual + "outputs:\n  y: {from: res}\n  z: {from: res.main}\n"
    assert inplace(graph(tmp_path, tapped)) == {"res": False}
    three = "model:\n  res:\n    add: [{op: conv2d, out: 3, kernel: 1}, identity, identity]\n"
    assert inplace(graph(tmp_path, three)) == {"res": False}  # two inputs only


def test_the_generated_sum_into_its_first_input_trains(tmp_path):
    """``bn.add_(x)`` in the generated file: the same values as torch's out-of-place sum, and
    autograd accepts it (BatchNorm's backward does not read its output)."""
    import torch

    from nasdsl.backends.pytorch import generate_source, load_source

    text = "name: Net\ninput: {shape: [3, 5, 5]}\ntemplates:\n  Res:\n    body:\n      add:\n"
    text += "        main: [{op: conv2d, out: 3, kernel: 1}, batch_norm]\n        skip: identity\n"
    text += "model:\n  res: {use: Res}\n"
    (tmp_path / "net.yaml").write_text(text)
    source = generate_source(nasdsl.compile_spec(tmp_path / "net.yaml").graph)
    assert "return main.add_(skip)" in source
    model = load_source(source).Net().train()
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = model(x)
    assert torch.allclose(out, model.res.main(x) + x, atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and model.res.main[0].weight.grad is not None


# -- phases, identities, dead nodes, BatchNorm ------------------------------------------------

PHASES = """\
model:
  conv: {op: conv2d, out: 4, kernel: 1}
  drop: {op: dropout, p: 0.5}
  train_only: {op: relu, phase: train}
  prob: {op: softmax, phase: eval}
outputs:
  y: {from: prob}
  aux: {from: conv, head: [global_avg_pool, flatten, {op: linear, out: 2}], training_only: true}
"""


def test_inference_and_training_views(tmp_path):
    g = graph(tmp_path, PHASES)
    inf = inference_graph(g)
    assert set(inf) == {"x", "conv", "prob"} and ir.inputs(inf, "prob") == ["conv"]
    assert [o.name for o in ir.info(inf).outputs] == ["y"]
    kept = inference_graph(g, keep_aux=True, keep_dropout=True)
    assert {"drop", "aux.2", "train_only"} <= set(kept)  # the training parts stay with the heads
    train = training_graph(g)
    assert "prob" not in train and ir.info(train).outputs[0].node == "train_only"
    assert set(g) >= {"drop", "train_only", "prob", "aux.2"}  # the input is left alone


def test_drop_identities_and_unused(tmp_path):
    body = "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  i: identity\n  dead: sigmoid\n  back: {ref: i}\n  b: relu\n"
    g = graph(tmp_path, body)
    assert unused(g) == ["dead"]
    lean = drop_unused(drop_identities(g))
    assert set(lean) == {"x", "a", "b"} and ir.inputs(lean, "b") == ["a"]
    assert "i" in g and "dead" in g
    # a concat of one value twice keeps the identity that gives it its second edge
    twice = graph(tmp_path, "model:\n  a: relu\n  cat: {concat: [{ref: a}, {ref: a}]}\n")
    assert len(ir.inputs(drop_identities(twice), "cat")) == 2


def test_drop_unused_removes_a_dead_merge_that_reads_a_kept_value(tmp_path):
    """A merge no output reads goes, and its ``{ref: ...}`` branch with it: the value it read
    stays for the entry that reads it. (It was an internal error: "the merge is gone but not all
    of its branches", so the ONNX export of such a spec failed.)"""
    body = (
        "model:\n  a: {op: conv2d, out: 4, kernel: 1}\n  bn: batch_norm\n"
        "  act: {add: [{ref: bn}, identity]}\n  tail: {op: conv2d, out: 5, kernel: 1, from: bn}\n"
    )
    g = graph(tmp_path, body)
    assert unused(g) == ["act.1", "act"]  # the identity branch and the sum
    lean = drop_unused(g)
    assert set(lean) == {"x", "a", "bn", "tail"} and ir.inputs(lean, "tail") == ["bn"]
    tree = ir.info(lean).model
    assert [c.kind for c in tree.children] == ["op", "op", "skip", "op"]


def test_fold_norms_on_a_small_graph(tmp_path):
    body = """\
    model:
      conv: {op: conv2d, out: 4, kernel: 1, bias: false}
      bn: batch_norm
      tap: relu
      conv2: {op: conv2d, out: 4, kernel: 1}
      bn2: batch_norm
    outputs:
      y: {from: bn2}
      side: {from: conv2}
    """
    g = graph(tmp_path, body)
    rng = np.random.default_rng(0)
    weights = {k: (rng.random(v.shape) + 0.5).astype(v.dtype) for k, v in initial_weights(g).items()}
    folded = fold_norms(g)
    assert "bn" not in folded and "bn2" in folded  # conv2 is an output itself: bn2 stays
    assert ir.node(folded, "conv").attrs["bias"] and not ir.node(g, "conv").attrs["bias"]
    assert ir.info(folded).derivation == (FoldNorm("conv", "bn", 1e-5),) and ir.info(g).derivation == ()
    new = derive_weights(ir.info(folded).derivation, weights)
    scale = weights["bn.weight"] / np.sqrt(weights["bn.running_var"].astype(np.float64) + 1e-5)
    np.testing.assert_allclose(new["conv.weight"], weights["conv.weight"] * scale.reshape(-1, 1, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(new["conv.bias"], weights["bn.bias"] - weights["bn.running_mean"] * scale, rtol=1e-6)
    assert "bn.weight" not in new and "bn.weight" in weights


def test_shapes_of_the_dormant_part_come_from_the_main_graph(tmp_path):
    body = "model:\n  conv: {op: conv2d, out: 4, kernel: 3}\n  more: {op: conv2d, out: 5, kernel: 3, when: extra}\n"
    g = graph(tmp_path, body, SWITCH_HEAD)
    d = ir.info(g).dormant.graph
    assert ir.node(d, "conv").op == "external" and ir.node(d, "conv").shape == (4, 6, 6)
    assert ir.node(d, "more").shape == (5, 4, 4) and ir.node(d, "more").when == ("extra",)
    assert ir.info(g).dormant.errors == {}


def test_a_chain_of_uses_longer_than_pythons_recursion_limit(tmp_path):
    """Each use reads the one before it; a view of the last from the model reads all of them (the
    symbolic shapes, nasdsl.passes.symbolic). 800 uses in a row compiled with a RecursionError
    once; they compile, write their PyTorch source and export, with the channel counts the model
    class passes along."""
    import sys

    from nasdsl.backends.onnx import export_onnx
    from nasdsl.backends.pytorch import generate_source

    uses = 800
    assert 2 * uses > sys.getrecursionlimit()
    blocks = "\n".join(f"    - {{use: Block, args: [{4 + k % 3}]}}" for k in range(uses))
    spec = tmp_path / "chain.yaml"
    spec.write_text(
        "name: Chain\ninput: {shape: [3, 4, 4]}\ntemplates:\n  Block:\n    params: [c]\n"
        "    body: [{op: conv2d, out: c, kernel: 1}, relu]\n"
        f"model:\n  blocks:\n{blocks}\n  pool: global_avg_pool\n  flat: flatten\n  fc: {{op: linear, out: 2}}\n"
    )
    g = nasdsl.compile_spec(spec).graph
    assert ir.node(g, "fc").in_sym == ((4 + (uses - 1) % 3,),)
    assert "class Block(nn.Sequential)" in generate_source(g)
    model = export_onnx(g)
    assert sum(n.op_type == "Conv" for n in model.graph.node) == uses


@pytest.mark.parametrize("name", ["googlenet_bn", "efficientnet_b0", "swin_t", "inception_v3"])
def test_views_kept_through_the_passes_are_those_worked_out_afresh(name):
    """The symbolic pass keeps the views of a record a pass left alone (a table by record): after
    the ONNX preparation, the fold and the CUDA target's fusions, every node's and block's views
    are those of the same graph inferred with the table emptied."""
    from nasdsl.optimize import PREPARE, TARGETS
    from nasdsl.passes import symbolic
    from nasdsl.passes.pipeline import run_pipeline

    g = nasdsl.compile_spec(Path(__file__).parent.parent / "specs" / f"{name}.yaml").graph
    kept = run_pipeline(g, PREPARE + TARGETS["cuda"])
    symbolic._SEEN.clear()
    afresh = ir.copy(kept)
    for n in afresh:  # records the table has never seen
        record = afresh.nodes[n][ir.KEY]
        afresh.nodes[n][ir.KEY] = dataclasses.replace(record, sym=None, in_sym=None)
    symbolic.infer_symbols(afresh)
    for n, record in ir.nodes(kept):
        fresh = ir.node(afresh, n)
        assert (record.sym, record.in_sym) == (fresh.sym, fresh.in_sym), n
    assert ir.info(kept).model == ir.info(afresh).model
    assert [o.head for o in ir.info(kept).outputs] == [o.head for o in ir.info(afresh).outputs]


def test_a_record_kept_by_a_pass_is_viewed_again_when_what_it_reads_is_viewed_otherwise(tmp_path):
    """The same record (``act``, as a copy of the graph shares it) under an input whose view
    changed (``conv`` writes ``out: b`` instead of ``out: a``): its view follows, not the one kept."""
    from nasdsl.ir.sym import Sym
    from nasdsl.passes.symbolic import infer_symbols

    g = graph(tmp_path, "model:\n  conv: {op: conv2d, out: a, kernel: 3}\n  act: relu\n", "variables: {a: 4, b: 4}\n")
    assert ir.node(g, "act").sym[0] == Sym.name("a")
    other = ir.copy(g)
    conv = ir.node(other, "conv")
    other.nodes["conv"][ir.KEY] = dataclasses.replace(conv, exprs=ir.frozen({**conv.exprs, "out": Sym.name("b")}))
    assert ir.node(other, "act") is ir.node(g, "act")
    infer_symbols(other)
    assert ir.node(other, "act").sym[0] == Sym.name("b")
    assert ir.node(other, "act").in_sym[0][0] == Sym.name("b")


def test_block_evolve_is_dataclasses_replace():
    """The rewrites rebuild blocks with Block.evolve, which copies the fields without __init__:
    that is dataclasses.replace only while Block checks nothing in __post_init__."""
    assert not hasattr(ir.Block, "__post_init__")
    g = nasdsl.compile_spec(Path(__file__).parent.parent / "specs" / "googlenet.yaml").graph
    for b in ir.walk(ir.info(g).model):
        changes = {"name": b.name + "x", "children": b.children[::-1], "sym": None}
        assert b.evolve(**changes) == dataclasses.replace(b, **changes)
        assert b.evolve() == b and b.evolve() is not b
    with pytest.raises(TypeError, match="no field 'nmae'"):
        b.evolve(nmae="x")


def test_the_views_table_keeps_no_record_alive(tmp_path):
    """The symbolic pass remembers the records whose views it worked out for as long as they live:
    once a compiled graph and its derived graphs are gone, so are their entries."""
    import gc

    from nasdsl.optimize import PREPARE, TARGETS
    from nasdsl.passes import symbolic
    from nasdsl.passes.pipeline import run_pipeline

    gc.collect()
    before = len(symbolic._SEEN)
    g = graph(tmp_path, CLASSIFIER, "variables: {classes: 10, rate: 0.5}\n")
    kept = run_pipeline(g, PREPARE + TARGETS["cpu"])
    assert len(symbolic._SEEN) > before
    held = {id(r) for _, r in ir.nodes(kept)}
    assert held & set(symbolic._SEEN)
    del g, kept
    gc.collect()
    assert len(symbolic._SEEN) <= before


def test_ir_copy_is_networkx_copy():
    """ir.copy fills networkx's tables itself: the same nodes, edges, data and orders as g.copy(),
    and an edge's data is one dict seen from both of its ends, as networkx keeps it."""
    g = nasdsl.compile_spec(Path(__file__).parent.parent / "specs" / "inception_v3.yaml").graph
    h, want = ir.copy(g), g.copy()
    assert nx.utils.graphs_equal(h, want) and h.graph == want.graph
    assert list(h._node) == list(want._node)
    assert all(list(h._succ[n]) == list(want._succ[n]) and list(h._pred[n]) == list(want._pred[n]) for n in g)
    assert h._adj is h._succ
    u, v = next(iter(h.edges))
    assert h._succ[u][v] is h._pred[v][u] and h._succ[u][v] is not g._succ[u][v]
    h.add_edge("copy only a", "copy only b")  # the copy is a graph of its own
    h.nodes[u]["k"] = 1
    assert "copy only a" not in g and "k" not in g.nodes[u]
