"""``nasdsl draw``: the DOT text's structure for GoogLeNet and ResNet-18 (boxes, clusters, edges,
labels), the options, determinism, hostile names, the page, and the paths with and without
Graphviz's ``dot``.

The DOT text is parsed here with a few regular expressions: :mod:`nasdsl.draw` writes one
statement a line, so a line that matches none of them is itself a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser

import networkx as nx
import pytest

import nasdsl
from nasdsl import draw, ir
from nasdsl.commands import draw as command
from nasdsl.summary import summarize

from paths import ROOT, SPECS

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")

#: GoogLeNet's model entries up to the classifier, in order (the spec may end them with a softmax)
MAIN_PATH = [
    *("conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2", "inception3a", "inception3b", "maxpool3"),
    *("inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4", "inception5a"),
    *("inception5b", "avgpool", "dropout", "flatten", "fc"),
]

STACK = """\
nasdsl: 1
name: Stack
input: {name: x, shape: [8, 16, 16]}
templates:
  Block:
    params: [out]
    body:
      conv: {op: conv2d, out: out, kernel: 3, padding: 1}
      relu: relu
  Stage:
    params: [out]
    body:
      - {use: Block, args: [out]}
      - {use: Block, args: [out]}
model:
  a: {use: Block, args: [8]}
  b: {use: Block, args: [8]}
  c: {use: Block, args: [8]}
  d: {use: Block, args: [16]}
  s1: {use: Stage, args: [16]}
  s2: {use: Stage, args: [16]}
  pool: global_avg_pool
  flat: flatten
  prob: {op: softmax, phase: eval}
"""


# --------------------------------------------------------------------------- reading DOT text

_ID = r'"(?:[^"\\]|\\.)*"'
_NODE = re.compile(rf"^\s*({_ID}) \[(.*)\];$")
_EDGE = re.compile(rf"^\s*({_ID}) -> ({_ID}) \[(.*)\];$")
_RANK = re.compile(rf"^\s*\{{ rank=same; ((?:{_ID} -> )+{_ID}) \[style=invis\]; \}}$")
_OPEN = re.compile(r"^\s*subgraph (cluster_\d+) \{$")
_CLUSTER_ATTRS = re.compile(r"^\s*label=(<.*>); labeljust=l; (.*)$")
_HEADER = ("digraph nasdsl {", "  graph [", "         nodesep", "  node [", "  edge [")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _html_label(attrs: str) -> str:
    """The plain text of the first HTML-like label in ``attrs``, lines joined by newlines."""
    start = attrs.index("label=<") + len("label=")
    depth = 0
    for end, c in enumerate(attrs[start:], start):  # noqa: B007 - the end is read after the loop
        depth += {"<": 1, ">": -1}.get(c, 0)
        if depth == 0:
            break
    inner = attrs[start + 1 : end].replace("<BR/>", "\n")
    return html.unescape(re.sub(r"<[^>]*>", "", inner)).replace("\\\\", "\\")  # as dot reads it


def _attr(attrs: str, name: str) -> str | None:
    m = re.search(rf"(?:^|[ ,;]){name}=(\"(?:[^\"\\\\]|\\\\.)*\"|[^,;\]]+)", attrs)
    if m is None:
        return None
    value = m.group(1)
    return _unquote(value) if value.startswith('"') else value


@dataclass
class Cluster:
    name: str
    label: str = ""
    attrs: str = ""
    nodes: list[str] = field(default_factory=list)  # directly inside
    children: list[Cluster] = field(default_factory=list)

    def all_nodes(self) -> list[str]:
        return [*self.nodes, *(n for c in self.children for n in c.all_nodes())]

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class Dot:
    nodes: dict[str, str]  # id: attributes
    edges: list[tuple[str, str, str]]  # (tail, head, attributes)
    root: Cluster
    ranks: list[list[str]]

    def label(self, node: str) -> str:
        return _html_label(self.nodes[node])

    def edge_label(self, tail: str, head: str) -> str:
        found = [a for t, h, a in self.edges if (t, h) == (tail, head)]
        assert len(found) == 1, (tail, head, found)
        return _attr(found[0], "label").strip()

    def clusters(self) -> list[Cluster]:
        return list(self.root.walk())[1:]

    def cluster(self, label_start: str) -> Cluster:
        found = [c for c in self.clusters() if c.label.startswith(label_start)]
        assert len(found) == 1, (label_start, [c.label for c in found])
        return found[0]

    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((t, h) for t, h, _ in self.edges)
        return g


def parse(text: str) -> Dot:
    lines = text.splitlines()
    assert text.endswith("}\n") and lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    ranks: list[list[str]] = []
    stack = [Cluster("root")]
    for line in lines[:-1]:
        if line.startswith(_HEADER):
            continue
        if m := _OPEN.match(line):
            stack.append(Cluster(m.group(1)))
            stack[-2].children.append(stack[-1])
        elif line.strip() == "}":
            stack.pop()
        elif m := _CLUSTER_ATTRS.match(line):
            stack[-1].label, stack[-1].attrs = _html_label("label=" + m.group(1)), m.group(2)
        elif m := _EDGE.match(line):
            edges.append((_unquote(m.group(1)), _unquote(m.group(2)), m.group(3)))
        elif m := _RANK.match(line):
            ranks.append([_unquote(n) for n in m.group(1).split(" -> ")])
        elif m := _NODE.match(line):
            name = _unquote(m.group(1))
            assert name not in nodes, name
            nodes[name] = m.group(2)
            stack[-1].nodes.append(name)
        else:
            raise AssertionError(f"not a statement: {line!r}")
    assert len(stack) == 1, "unbalanced subgraphs"
    assert all(t in nodes and h in nodes for t, h, _ in edges), "an edge to an undeclared node"
    return Dot(nodes, edges, stack[0], ranks)


def _blocks(dot: Dot) -> list[str]:
    """The boxes that stand for blocks: everything but the input, the outputs and the stubs."""
    return [n for n in dot.nodes if n != "x" and not n.startswith(("output:", "outside:", "removed:"))]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def googlenet():
    return nasdsl.compile_spec(SPECS / "googlenet.yaml").graph


@pytest.fixture(scope="module")
def resnet18():
    return nasdsl.compile_spec(ROOT / "tests" / "specs" / "resnet18_nested.yaml").graph


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("stack") / "stack.yaml"
    path.write_text(STACK, encoding="utf-8")
    return nasdsl.compile_spec(path).graph


# --------------------------------------------------------------------------- GoogLeNet


def _top_level(g) -> list[str]:
    return [c.name for c in ir.info(g).model.children]


def test_depth_0_draws_exactly_the_top_level_entries_and_the_heads(googlenet):
    dot = parse(draw.to_dot(googlenet, depth=0))
    entries = _top_level(googlenet)
    assert entries[: len(MAIN_PATH)] == MAIN_PATH and len(entries) <= len(MAIN_PATH) + 1
    assert _blocks(dot) == [*entries, "aux1", "aux2"]
    assert dot.clusters() == []
    assert [n for n in dot.nodes if n.startswith("output:")] == ["output:logits", "output:aux1", "output:aux2"]
    assert dot.label("inception4a") == "Inception inception4a (192, 96, 208, 16, 48, 64)"
    assert dot.label("conv1") == "BasicConv2d conv1 (64, 7, 2, 3)"
    assert dot.label("maxpool1") == "max_pool maxpool1\nkernel=3 stride=2 ceil_mode=true"
    assert dot.label("fc") == "linear fc\nout=1000"
    chain = ["x", *entries, "output:logits"]
    assert nx.is_directed_acyclic_graph(dot.graph())
    for tail, head in zip(chain, chain[1:], strict=False):
        assert dot.edge_label(tail, head)  # the main path, in order
    assert dot.edge_label("x", "conv1") == "3x224x224"
    assert dot.edge_label("maxpool2", "inception3a") == "192x28x28"
    assert dot.edge_label("inception3a", "inception3b") == "256x28x28"
    assert dot.edge_label("inception4a", "aux1") == "512x14x14"
    assert dot.edge_label("inception4d", "aux2") == "528x14x14"
    assert dot.edge_label(entries[-1], "output:logits") == "1000"
    assert dot.edge_label("aux1", "output:aux1") == "1000"


def test_training_only_heads_are_dashed_grey_and_left_out_for_inference(googlenet):
    dot = parse(draw.to_dot(googlenet, depth=0))
    for n in ("aux1", "aux2", "output:aux1", "output:aux2"):
        assert "dashed" in _attr(dot.nodes[n], "style") and _attr(dot.nodes[n], "color") == "#9a9a9a"
        assert "training only" in dot.label(n)
    assert dot.label("aux1") == "InceptionAux aux1 (1000, 0.7)\ntraining only"
    dashed = {(t, h) for t, h, a in dot.edges if "style=dashed" in a}
    assert dashed == {
        ("inception4a", "aux1"),
        ("aux1", "output:aux1"),
        ("inception4d", "aux2"),
        ("aux2", "output:aux2"),
    }
    assert not any("dashed" in (_attr(a, "style") or "") for n, a in dot.nodes.items() if n in MAIN_PATH)

    inference = parse(draw.to_dot(googlenet, depth=0, inference=True))
    assert _blocks(inference) == _top_level(googlenet)
    assert "output:aux1" not in inference.nodes and not any("dashed" in a for _, _, a in inference.edges)
    full = parse(draw.to_dot(googlenet, inference=True))
    assert not any(n.startswith(("aux1", "aux2")) for n in full.nodes)


def test_full_depth_draws_every_op_in_a_cluster_per_template_use(googlenet):
    dot = parse(draw.to_dot(googlenet))
    ops = [n for n in googlenet if n != "x"]
    assert sorted(_blocks(dot)) == sorted(ops)
    uses = [b for root in ir.roots(googlenet) for b in ir.walk(root) if b.kind == "use"]
    use_clusters = [c for c in dot.clusters() if _attr(c.attrs, "color") in ("#5b84b1", "#9a9a9a")]
    assert len(use_clusters) == len(uses) == 9 * 7 + 3 + 2 * 2
    module = dot.cluster("Inception inception4a (192, 96, 208, 16, 48, 64)")
    assert sorted(module.all_nodes()) == sorted(n for n in ops if n.startswith("inception4a"))
    # Figure 2(b): branch 1 is a BasicConv2d; branches 2 to 4 are clusters of their own, side by side
    inside = [c.label.split("\n")[0] for c in module.children]
    assert inside == ["BasicConv2d branch1 (192, 1, 1, 0)", "branch2", "branch3", "branch4"]
    assert module.nodes == ["inception4a"] and dot.label("inception4a") == "concat"
    branch2 = module.children[1]
    assert [c.label for c in branch2.children] == ["BasicConv2d [0] (96, 1, 1, 0)", "BasicConv2d [1] (208, 3, 1, 1)"]
    assert branch2.all_nodes() == [f"inception4a.branch2.{i}.{op}" for i in (0, 1) for op in ("conv", "relu")]
    assert dot.label("inception4a.branch2.1.conv") == "conv2d conv\nout=208 kernel=3 padding=1"
    heads = ["inception4a.branch1.conv", "inception4a.branch2.0.conv", "inception4a.branch3.0.conv"]
    assert [*heads, "inception4a.branch4.0"] in dot.ranks
    assert dot.edge_label("maxpool3", "inception4a.branch4.0") == "480x14x14"
    assert dot.edge_label("inception4a.branch2.1.relu", "inception4a") == "208x14x14"
    assert dot.edge_label("inception4a", "aux1.avgpool") == "512x14x14"
    assert len(dot.edges) == googlenet.number_of_edges() + 3  # and one to each output
    assert nx.is_directed_acyclic_graph(dot.graph())


def test_depth_1_opens_one_level_of_template_uses(googlenet):
    dot = parse(draw.to_dot(googlenet, depth=1))
    module = dot.cluster("Inception inception4a")
    assert [c.label for c in module.children] == ["branch2", "branch3", "branch4"]
    assert module.nodes == ["inception4a.branch1", "inception4a"]
    assert dot.label("inception4a.branch1") == "BasicConv2d branch1 (192, 1, 1, 0)"
    assert module.children[2].nodes == ["inception4a.branch4.0", "inception4a.branch4.1"]
    assert dot.cluster("BasicConv2d conv1").nodes == ["conv1.conv", "conv1.relu"]
    assert dot.edge_label("inception4a.branch3.0", "inception4a.branch3.1") == "16x14x14"
    assert dot.edge_label("inception4a", "aux1.avgpool") == "512x14x14"  # aux1 opened one level too
    assert dot.edge_label("aux1.avgpool", "aux1.conv") == "512x4x4"
    assert ["inception4a.branch1", "inception4a.branch2.0", "inception4a.branch3.0", "inception4a.branch4.0"] in (
        dot.ranks
    )
    assert len(dot.nodes) < 120  # what a screen holds


def test_focus_draws_one_module_with_stubs(googlenet):
    dot = parse(draw.to_dot(googlenet, focus="inception4a"))
    assert [c.label for c in dot.root.children] == ["Inception inception4a (192, 96, 208, 16, 48, 64)"]
    assert [n for n in dot.root.nodes] == ["outside:maxpool3", "outside:inception4b", "outside:aux1"]
    assert dot.edge_label("outside:maxpool3", "inception4a.branch1.conv") == "480x14x14"
    assert dot.edge_label("inception4a", "outside:aux1") == "512x14x14"
    shallow = parse(draw.to_dot(googlenet, focus="inception4a", depth=0))
    assert len(shallow.root.children[0].all_nodes()) == 8  # 6 BasicConv2d and a max_pool box, the concat
    with pytest.raises(draw.DrawError, match="no block 'inception9z' to focus on"):
        draw.to_dot(googlenet, focus="inception9z")


def test_show_params_and_macs_match_the_summary(googlenet, resnet18):
    for g in (googlenet, resnet18):
        dot = parse(draw.to_dot(g, depth=0, show=["params", "macs"]))
        for row in summarize(g, with_aux=True)["rows"]:
            figures = f"{row['params']:,} params, {row['macs']:,} MACs"
            assert figures in dot.label(row["name"]).split("\n"), (row["name"], dot.label(row["name"]))
    dot = parse(draw.to_dot(googlenet, depth=0, show=["macs"]))
    assert dot.label("fc").split("\n")[-1] == "1,024,000 MACs"
    with pytest.raises(draw.DrawError, match="cannot show 'flops'"):
        draw.to_dot(googlenet, show=["flops"])


def test_rankdir_and_option_checks(googlenet):
    assert "rankdir=LR" in draw.to_dot(googlenet, depth=0, rankdir="LR").splitlines()[1]
    assert "rankdir=TB" in draw.to_dot(googlenet, depth=0).splitlines()[1]
    with pytest.raises(draw.DrawError, match="expected TB or LR"):
        draw.to_dot(googlenet, rankdir="BT")
    with pytest.raises(draw.DrawError, match="expected a level >= 0"):
        draw.to_dot(googlenet, depth=-1)


def test_every_node_is_in_exactly_one_top_level_unit():
    for name in ("googlenet", "resnet18", "squeezenet1_1"):
        g = nasdsl.compile_spec(SPECS / f"{name}.yaml").graph
        seen = [n for b in draw.entries(g) for n in draw.members(g, b)]
        assert sorted(seen) == sorted(n for n in g if n != ir.info(g).input), name
        parse(draw.to_dot(g, roll=True, show=["params"]))  # refs (SqueezeNet's Fire) draw no box


# --------------------------------------------------------------------------- residual family, rolling


def test_resnet18_blocks_and_the_residual_add(resnet18):
    dot = parse(draw.to_dot(resnet18, depth=0))
    assert _blocks(dot) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"] + [
        "avgpool",
        "flatten",
        "fc",
    ]
    assert dot.label("layer2") == "sequence layer2 (DownsampleBlock, BasicBlock)"
    assert dot.edge_label("layer2", "layer3") == "128x28x28"

    full = parse(draw.to_dot(resnet18))
    block = full.cluster("DownsampleBlock [0] (128, 2)")
    residual = block.children[0]
    assert residual.label == "ProjectionAdd residual (128, 2)"
    assert [c.label for c in residual.children] == ["Residual main (128, 2)", "downsample"]
    assert residual.nodes == ["layer2.0.residual"] and full.label("layer2.0.residual") == "add"
    assert full.edge_label("layer2.0.residual.main.bn2", "layer2.0.residual") == "128x28x28"
    assert full.edge_label("layer2.0.residual.downsample.1", "layer2.0.residual") == "128x28x28"
    assert full.edge_label("layer1.1.relu", "layer2.0.residual.downsample.0") == "64x56x56"
    assert ["layer2.0.residual.main.conv1", "layer2.0.residual.downsample.0"] in full.ranks
    assert sum(c.label == "IdentityAdd residual (64)" for c in full.clusters()) == 2  # layer1.0 and layer1.1


def test_roll_draws_consecutive_identical_uses_once(resnet18, stack):
    plain = parse(draw.to_dot(resnet18, depth=1))
    assert [n for n in plain.cluster("sequence layer1").nodes] == ["layer1.0", "layer1.1"]
    dot = parse(draw.to_dot(resnet18, depth=1, roll=True, show=["params"]))
    layer1 = dot.cluster("sequence layer1")
    assert layer1.nodes == ["layer1.0"]
    assert dot.label("layer1.0") == "BasicBlock [0–1] (64) × 2\n147,968 params"
    assert dot.cluster("sequence layer2").nodes == ["layer2.0", "layer2.1"]  # different templates
    assert dot.edge_label("maxpool", "layer1.0") == "64x56x56"
    assert dot.edge_label("layer1.0", "layer2.0") == "64x56x56"

    full = parse(draw.to_dot(resnet18, roll=True))
    assert not any(n.startswith("layer1.1") for n in full.nodes)
    assert full.cluster("BasicBlock [0–1] (64) × 2")
    assert full.edge_label("layer1.0.relu", "layer2.0.residual.main.conv1") == "64x56x56"
    assert nx.is_directed_acyclic_graph(full.graph())

    small = parse(draw.to_dot(stack, depth=0, roll=True))
    assert _blocks(small) == ["a", "d", "s1", "pool", "flat", "prob"]
    assert small.label("prob") == "softmax prob\ninference only"
    assert small.label("a") == "Block a–c (8) × 3"
    assert small.label("s1") == "Stage s1–s2 (16) × 2"
    nested = parse(draw.to_dot(stack, roll=True))  # runs inside runs
    assert nested.cluster("Stage s1–s2 (16) × 2").children[0].label == "Block [0–1] (16) × 2"
    assert nx.is_directed_acyclic_graph(nested.graph())
    assert len(nested.nodes) == 1 + 4 + 2 + 3 + 1  # x, a and d, one Block of s1, the head, the output


def test_roll_stops_where_an_output_reads_the_middle_of_a_run(stack):
    g = stack.copy()
    middle = ir.Output("mid", "b.relu", 1.0, False, position=1)
    ir.update_info(g, outputs=(*ir.info(g).outputs, middle))
    dot = parse(draw.to_dot(g, depth=0, roll=True))
    assert _blocks(dot) == ["a", "c", "d", "s1", "pool", "flat", "prob"]
    assert dot.label("a") == "Block a–b (8) × 2"
    assert dot.edge_label("a", "output:mid") == "8x16x16"


# --------------------------------------------------------------------------- diff


def test_diff_colours_added_removed_and_changed_entries(googlenet, tmp_path):
    text = (SPECS / "googlenet.yaml").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("  lrn1:")]
    at = lines.index("  maxpool1: {op: max_pool, kernel: 3, stride: 2, ceil_mode: true}")
    lines.insert(at + 1, "  bn1: batch_norm")
    changed = tmp_path / "changed.yaml"
    changed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    new = nasdsl.compile_spec(changed, ["inception4c.c3x3=192"]).graph

    dot = parse(draw.to_dot(new, depth=0, diff=googlenet))
    colours = {n: _attr(a, "fillcolor") for n, a in dot.nodes.items()}
    assert colours["bn1"] == "#d9f2d9" and "added" in dot.label("bn1")
    assert colours["removed:lrn1"] == "#fadada" and dot.label("removed:lrn1") == "lrn lrn1\nremoved"
    assert colours["inception4c"] == "#ffe3c2"
    assert dot.label("inception4c").endswith("\nwas Inception (128, 128, 256, 24, 64, 64)")
    assert colours["inception4d"] == "#ffe3c2" and dot.label("inception4d").endswith("\ninput was 512x14x14")
    changed_or_added = {n for n, c in colours.items() if c in ("#d9f2d9", "#ffe3c2", "#fadada")}
    assert changed_or_added == {"bn1", "removed:lrn1", "inception4c", "inception4d"}
    assert dot.edge_label("maxpool1", "removed:lrn1") == "64x56x56"
    assert dot.edge_label("removed:lrn1", "conv2") == "64x56x56"
    assert "1 added, 1 removed, 2 changed" in draw.to_dot(new, depth=0, diff=googlenet).splitlines()[1]

    opened = parse(draw.to_dot(new, depth=1, diff=googlenet))
    assert "filled" in opened.cluster("Inception inception4c").attrs
    assert _attr(opened.cluster("Inception inception4c").attrs, "fillcolor") == "#ffe3c2"
    same = parse(draw.to_dot(googlenet, depth=0, diff=googlenet))
    assert not any(_attr(a, "fillcolor") in ("#d9f2d9", "#ffe3c2", "#fadada") for a in same.nodes.values())
    with pytest.raises(draw.DrawError, match="leave out --focus"):
        draw.to_dot(new, diff=googlenet, focus="inception4a")


def test_diff_set_compares_with_the_same_file_overridden(tmp_path, capsys):
    out = tmp_path / "d.dot"
    args = _args(str(SPECS / "googlenet.yaml"), "-o", str(out), "--depth", "0", "--diff-set", "aux_logits=false")
    assert command.run(args, nasdsl.compile_spec(args.spec)) == 0
    dot = parse(out.read_text(encoding="utf-8"))
    assert [n for n, a in dot.nodes.items() if _attr(a, "fillcolor") == "#d9f2d9"] == ["aux1", "aux2"]
    assert "against googlenet.yaml --set aux_logits=false: 2 added" in out.read_text(encoding="utf-8")
    args = _args(args.spec, "-o", str(out), "--depth", "0", "--diff-set", "aux_logits=false", "--inference")
    assert command.run(args, nasdsl.compile_spec(args.spec)) == 0
    assert ": 0 added, 0 removed, 0 changed" in out.read_text(encoding="utf-8")
    with pytest.raises(draw.DrawError, match="'aux1' runs in training only; leave out --inference"):
        draw.to_dot(nasdsl.compile_spec(args.spec).graph, focus="aux1", inference=True)


# --------------------------------------------------------------------------- determinism, hostile names

DETERMINISM = """
import sys
import nasdsl
from nasdsl import draw
g = nasdsl.compile_spec(sys.argv[1]).graph
other = nasdsl.compile_spec(sys.argv[1], ["inception4a.c3x3=256"]).graph
sys.stdout.write(draw.to_dot(g, show=("params", "macs"), roll=True))
sys.stdout.write(draw.to_dot(g, depth=1, diff=other))
"""


def test_same_spec_same_bytes_whatever_the_hash_seed(googlenet):
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", DETERMINISM, str(SPECS / "googlenet.yaml")],
            capture_output=True,
            env=env,
            timeout=60,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert draw.to_dot(googlenet) == draw.to_dot(googlenet)


HOSTILE = 'evil"\\\n</script><b>&amp;\x1b[31m'


def _rename(block: ir.Block, old: str, new: str) -> ir.Block:
    def path(p: str) -> str:
        return new + p[len(old) :] if p == old or p.startswith(old + ".") else p

    return dataclasses.replace(
        block,
        name=new if block.path == old else block.name,
        path=path(block.path),
        inputs=tuple(path(p) for p in block.inputs),
        output=path(block.output),
        template=HOSTILE if block.template else block.template,
        children=tuple(_rename(c, old, new) for c in block.children),
    )


@pytest.fixture(scope="module")
def hostile(googlenet):
    """GoogLeNet with an entry, every template and the model named with quotes, a backslash, a
    newline, an escape sequence and an end-of-script tag (the spec language refuses such names;
    the drawing must not rely on that)."""
    g = nx.relabel_nodes(googlenet, {n: HOSTILE + n[5:] for n in googlenet if n.startswith("conv1")})
    ir.update_info(g, model=_rename(ir.info(googlenet).model, "conv1", HOSTILE))
    ir.update_info(g, name=HOSTILE)
    ir.update_info(
        g,
        outputs=tuple(
            dataclasses.replace(o, head=_rename(o.head, "conv1", HOSTILE) if o.head else None)
            for o in ir.info(googlenet).outputs
        ),
    )
    return g


def test_hostile_names_cannot_break_the_dot_text(hostile):
    for depth in (0, None):
        text = draw.to_dot(hostile, depth=depth)
        assert "\x1b" not in text
        for line in text.splitlines():  # markup from a name only ever inside a quoted identifier
            rest = re.sub(_ID, "", line)
            assert "</script>" not in rest and "<b>" not in rest and "evil" not in rest.replace("evil&quot;", ""), line
        dot = parse(text)  # every line one statement: nothing ended a string or a label
        name = HOSTILE.replace("\n", "\\n").replace("\x1b", "\\x1b")
        if depth == 0:
            assert dot.label(name) == f"{name} {name} (64, 7, 2, 3)"
            assert dot.edge_label("x", name) == "3x224x224"
        else:
            assert dot.cluster(f"{name} {name} (64, 7, 2, 3)").nodes == [name + ".conv", name + ".relu"]


@needs_dot
def test_hostile_names_cannot_break_the_svg_or_the_page(hostile):
    svg = draw.render(draw.to_dot(hostile, depth=0), "svg")
    root = ET.fromstring(svg)
    texts = "".join(root.itertext())
    assert 'evil"\\\\n</script><b>&amp;\\x1b[31m' in texts
    page = draw.to_html(svg, HOSTILE)
    _check_page(page)
    assert "</script>" not in page and "<b>" not in page and "\x1b" not in page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _check_page(page: str) -> None:
    """A self-contained page: one inline SVG, no scripts, nothing it could fetch."""
    parser = _Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags[:2] == ["html", "head"] and tags.count("svg") == 1 and tags.count("title") >= 1
    assert "script" not in tags and "iframe" not in tags and "img" not in tags and "link" not in tags
    for tag, attrs in parser.tags:
        assert not any(k in ("src", "href", "xlink:href") or k.startswith("on") for k in attrs), (tag, attrs)
    assert "default-src 'none'" in page and "url(" not in page and "@import" not in page


# --------------------------------------------------------------------------- the command


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    command.add_arguments(p)
    return p.parse_args(argv)


def test_run_writes_dot_through_write_atomic_and_says_so(tmp_path, capsys, googlenet):
    out = tmp_path / "g.gv"
    args = _args(str(SPECS / "googlenet.yaml"), "-o", str(out), "--depth", "0", "--show", "params,macs")
    assert command.run(args, nasdsl.compile_spec(args.spec)) == 0
    data = out.read_bytes()
    assert capsys.readouterr().out == f"wrote {out} ({len(data):,} bytes)\n"
    assert data.decode() == draw.to_dot(googlenet, depth=0, show=("params", "macs"))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".nasdsl-")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--depth", "-1"], "expected a level >= 0"),
        (["--depth", "two"], "expected a level >= 0"),
        (["--show", "flops"], "expected params, macs or params,macs"),
        (["--rankdir", "BT"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _args("spec.yaml", "-o", "x.svg", *argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_format_follows_the_extension(tmp_path):
    assert [command.output_format(f"a{ext}") for ext in (".svg", ".PNG", ".pdf", ".dot", ".gv", ".html")] == [
        "svg",
        "png",
        "pdf",
        "dot",
        "dot",
        "html",
    ]
    with pytest.raises(draw.DrawError, match=r"cannot tell the format from 'a.jpg'"):
        command.output_format("a.jpg")


def test_without_dot_dot_text_is_written_and_pictures_fail_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no dot on PATH
    spec = str(SPECS / "googlenet.yaml")
    net = nasdsl.compile_spec(spec)
    out = tmp_path / "g.dot"
    assert command.run(_args(spec, "-o", str(out)), net) == 0
    assert out.read_text(encoding="utf-8").startswith("digraph nasdsl {")
    for ext in ("svg", "png", "pdf", "html"):
        picture = tmp_path / f"g.{ext}"
        with pytest.raises(draw.DrawError) as e:
            command.run(_args(spec, "-o", str(picture)), net)
        line = e.value.format()
        assert "\n" not in line and isinstance(e.value, nasdsl.NasdslError)
        assert line == (
            f"error: {picture}: drawing {'SVG' if ext == 'html' else ext.upper()} needs Graphviz's dot program, "
            "which is not on PATH: install Graphviz's dot (apt-get install graphviz / brew install graphviz)"
        )
        assert not picture.exists()
    assert os.listdir(tmp_path) == ["g.dot"]


@needs_dot
def test_rendering_svg_png_pdf_and_html(googlenet, tmp_path, capsys):
    text = draw.to_dot(googlenet, depth=1)
    svg = draw.render(text, "svg")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "Inception" in "".join(root.itertext())
    assert draw.render(text, "png").startswith(b"\x89PNG\r\n\x1a\n")
    assert draw.render(text, "pdf").startswith(b"%PDF")
    page = draw.to_html(svg, "GoogLeNet")
    _check_page(page)
    assert "<?xml" not in page and "<!--" not in page
    spec = str(SPECS / "googlenet.yaml")
    out = tmp_path / "g.html"
    assert command.run(_args(spec, "-o", str(out), "--depth", "0"), nasdsl.compile_spec(spec)) == 0
    _check_page(out.read_text(encoding="utf-8"))
    with pytest.raises(draw.DrawError, match="Graphviz's dot failed"):
        draw.render("digraph { a -> }", "svg")


def test_pictures_too_big_for_dot_are_refused(googlenet, monkeypatch):
    monkeypatch.setattr(draw, "MAX_ITEMS", 100)
    text = draw.to_dot(googlenet)
    items = len(googlenet) + googlenet.number_of_edges() + 2 * 3  # and a box and an edge per output
    assert text.count(" [label=") == items
    with pytest.raises(draw.DrawError, match=rf"the picture has {items} boxes and edges, more than .* \(100\)"):
        draw.render(text, "svg")


@needs_dot
def test_dot_sets_the_inception_branches_side_by_side_in_order(googlenet):
    plain = subprocess.run(
        ["dot", "-Tplain"], input=draw.to_dot(googlenet).encode(), capture_output=True, check=True, timeout=60
    ).stdout.decode()
    where = {}
    for line in plain.splitlines():
        if line.startswith("node "):
            _, name, x, y = line.split()[:4]
            where[name.strip('"')] = (float(x), float(y))
    for module in ("inception3a", "inception4a", "inception5b"):
        heads = [
            f"{module}.branch1.conv",
            f"{module}.branch2.0.conv",
            f"{module}.branch3.0.conv",
            f"{module}.branch4.0",
        ]
        xs, ys = zip(*(where[h] for h in heads), strict=True)
        assert list(xs) == sorted(xs) and len(set(ys)) == 1, (module, xs, ys)


# --------------------------------------------------------------------------- whole process: no torch, the CLI

NO_TORCH = """
import argparse, sys
import nasdsl
from nasdsl.commands import draw as command
p = argparse.ArgumentParser()
p.add_argument("spec")
p.add_argument("--set", dest="overrides", action="append", default=[])
command.add_arguments(p)
args = p.parse_args(sys.argv[1:])
assert command.run(args, nasdsl.compile_spec(args.spec, args.overrides)) == 0
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
"""


def test_drawing_never_imports_torch(tmp_path):
    out = tmp_path / "g.dot"
    argv = [str(SPECS / "googlenet.yaml"), "-o", str(out), "--diff", str(SPECS / "googlenet_bn.yaml")]
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").startswith("digraph nasdsl {")


CLI = """
import sys
from nasdsl.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
sys.exit(code)
"""


def test_cli_draw_end_to_end(tmp_path):
    spec = str(SPECS / "googlenet.yaml")

    def cli(*argv: str, path: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": path} if path is not None else None
        return subprocess.run(
            [sys.executable, "-c", CLI, "draw", *argv], capture_output=True, text=True, env=env, timeout=60
        )

    out = tmp_path / "g.dot"
    done = cli(spec, "-o", str(out), "--depth", "0", "--set", "num_classes=10")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out} ({out.stat().st_size:,} bytes)\n"
    last = _top_level(nasdsl.compile_spec(spec).graph)[-1]
    assert parse(out.read_text(encoding="utf-8")).edge_label(last, "output:logits") == "10"
    missing = cli(spec, "-o", str(tmp_path / "g.svg"), path=str(tmp_path / "empty"))
    assert missing.returncode == 2 and not (tmp_path / "g.svg").exists()
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'g.svg'}: drawing SVG needs Graphviz's dot program, which is not on PATH: "
        "install Graphviz's dot (apt-get install graphviz / brew install graphviz)"
    ]
    if HAS_DOT:
        svg = tmp_path / "g.svg"
        assert cli(spec, "-o", str(svg), "--focus", "inception4a").returncode == 0
        ET.parse(svg)
    bad = cli(spec, "-o", str(tmp_path / "x.dot"), "--focus", "nowhere")
    assert bad.returncode == 2 and "no block 'nowhere' to focus on" in bad.stderr


@needs_dot
def test_each_line_of_a_label_is_one_svg_text_element(googlenet):
    """A label line written as two runs (a bold kind, then the name) became two <text> elements
    whose space some renderers drop ("Inceptioninception3a" in rsvg-convert): each line of a
    box, a cluster's title or an edge label is one element, holding its words with their spaces."""
    svg = ET.fromstring(draw.render(draw.to_dot(googlenet, depth=1), "svg"))
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in svg.iter(f"{ns}g") if g.get("class") in ("node", "cluster", "edge")]
    assert len(groups) > 50
    for g in groups:
        ys = [t.get("y") for t in g.iter(f"{ns}text")]
        assert len(ys) == len(set(ys)), (g.findtext(f"{ns}title"), [t.text for t in g.iter(f"{ns}text")])
    texts = ["".join(t.itertext()) for t in svg.iter(f"{ns}text")]
    assert "Inception inception3a (64, 96, 128, 16, 32, 32)" in texts
