"""``nasdsl import`` of flat ONNX graphs: the module tree from the dynamo exporter's metadata,
and blocks found by structure alone where a file has neither names nor metadata.

The references are independent of the importer: the PyTorch modules the files were exported
from (tests/flat_toy.py, torchvision's ResNet-18 and GoogLeNet: which blocks they have, their
widths, their state_dict names), the GoogLeNet paper's Table 1 (tests/data/googlenet_table1.csv)
and ONNX Runtime running the source file.
"""

from __future__ import annotations

import csv
import io
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
import torchvision
from flat_toy import WIDTHS, toy
from onnx_runs import agreement

import nasdsl
from nasdsl.backends.onnx import export_onnx
from nasdsl.cli import main as cli_main
from nasdsl.importer import ImportFailure, import_model

from paths import DATA, ROOT
from reference_models import randomise

TOY = DATA / "toy_blocks_dynamo.onnx"
DOC = ROOT / "docs" / "import.md"


def _stripped(proto):
    """The model without node names or metadata: nothing says which module made a node."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in proto.graph.node:
        node.name = ""
        del node.metadata_props[:]
    return proto


def _uses(graph, template: str) -> list[str]:
    return list(nasdsl.ir.info(graph).templates[template].instances)


@pytest.fixture(scope="module")
def toy_file():
    return onnx.load(TOY)


def test_the_toy_file_is_the_dynamo_exporters_with_metadata_and_no_module_names(toy_file):
    metadata = {p.key for n in toy_file.graph.node for p in n.metadata_props}
    assert {"pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"} <= metadata
    assert not any(n.name.startswith("/") for n in toy_file.graph.node)


def test_dynamo_metadata_gives_the_module_tree_the_classes_and_the_state_dict_names(toy_file):
    result = import_model(toy_file, weights=True)
    assert result.report.name == "Toy"
    assert result.report.templates == [("Block", ["conv1_out"], 3)]
    graph = result.compiled.graph
    assert _uses(graph, "Block") == ["blocks.0", "blocks.1", "blocks.2"]
    assert [nasdsl.ir.node(graph, f"blocks.{k}.conv1").attrs["out"] for k in range(3)] == list(WIDTHS)
    reference = toy().state_dict()
    # the weights are carried under the module's own names (BatchNorm folded into the convolutions)
    assert {"stem.weight", "blocks.2.conv2.weight", "blocks.1.proj.weight", "fc.weight"} <= set(result.weights)
    assert set(result.weights) - {k for k in result.weights if k.endswith(".bias")} <= set(reference)
    np.testing.assert_array_equal(result.weights["fc.weight"], reference["fc.weight"].numpy())
    np.testing.assert_array_equal(result.weights["blocks.1.proj.weight"], reference["blocks.1.proj.weight"].numpy())
    assert agreement(toy_file, result) < 1e-5


def test_without_names_or_metadata_the_blocks_are_found_by_structure(toy_file):
    flat = _stripped(toy_file)
    result = import_model(flat, weights=True)
    assert result.report.templates == [("Block1", ["conv2d_out"], 3)]
    graph = result.compiled.graph
    uses = _uses(graph, "Block1")
    assert uses == ["block1_0.0", "block1_0.1", "block1_0.2"]  # consecutive uses: one list
    assert [nasdsl.ir.node(graph, f"{u}.conv2d").attrs["out"] for u in uses] == list(WIDTHS)
    assert agreement(flat, result) < 1e-5
    # --by-structure ignores the metadata the file has: the same spec
    assert import_model(toy_file, by_structure=True).text == result.text


@pytest.fixture(scope="module")
def resnet18_flat():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    randomise(model)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), buf, dynamo=False, opset_version=17)
    return model, _stripped(onnx.load_from_string(buf.getvalue()))


def test_resnet18_without_names_has_its_basic_blocks_found(resnet18_flat):
    model, flat = resnet18_flat
    result = import_model(flat, weights=True)
    blocks = [m for m in model.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    projected = [b for b in blocks if b.downsample is not None]
    plain = [b for b in blocks if b.downsample is None]
    counts = sorted(uses for _, _, uses in result.report.templates)
    assert counts == sorted([len(projected), len(plain)])  # [3, 5]
    graph = result.compiled.graph
    by_uses = {uses: name for name, _, uses in result.report.templates}
    widths = [nasdsl.ir.node(graph, f"{u}.conv2d").attrs["out"] for u in _uses(graph, by_uses[len(plain)])]
    assert widths == [b.conv1.out_channels for b in plain]
    assert agreement(flat, result) < 1e-5


def test_googlenet_without_names_has_one_inception_template_with_table_1s_arguments():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), buf, dynamo=False, opset_version=17)
    flat = _stripped(onnx.load_from_string(buf.getvalue()))
    result = import_model(flat, weights=True)
    [(name, params, uses)] = result.report.templates
    assert uses == 9 and len(params) == 6
    lines = [line for line in (DATA / "googlenet_table1.csv").read_text().splitlines() if not line.startswith("#")]
    columns = ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj")
    table = [
        [int(row[c]) for c in columns]
        for row in csv.DictReader(lines)
        if re.fullmatch(r"inception \(\w+\)", row["layer"])
    ]
    graph = result.compiled.graph
    convs = ("conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4", "conv2d_5")
    found = [[nasdsl.ir.node(graph, f"{u}.{c}").attrs["out"] for c in convs] for u in _uses(graph, name)]
    assert found == table
    assert agreement(flat, result) < 1e-5


def test_by_structure_is_for_onnx_only():
    with pytest.raises(ImportFailure, match="is for ONNX files"):
        import_model("torchvision:resnet18", by_structure=True)


# -- docs/import.md's section on flat graphs ----------------------------------------------------


def test_flat_graph_section_of_the_docs_runs_and_prints_what_it_shows(tmp_path, monkeypatch, capsys):
    text = DOC.read_text()
    section = text[text.index("## Flat graphs") :]
    section = section[: section.index("\n## ", 4)]
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("nasdsl ")
    ]
    outputs = dict(re.findall(r"<!-- output: (.*?) -->\n```\n(.*?)```", section, re.S))
    excerpts = re.findall(r"<!-- excerpt: (\S+) -->\n```yaml\n(.*?)```", section, re.S)
    assert commands and outputs and excerpts
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.onnx").write_bytes(TOY.read_bytes())
    for command in commands:
        capsys.readouterr()
        assert cli_main(command.split()[1:]) == 0, command
        printed = re.sub(r"\(\d+\.\d+ s\)", "(TIME)", capsys.readouterr().out)
        if command in outputs:
            assert printed == re.sub(r"\(\d+\.\d+ s\)", "(TIME)", outputs.pop(command)), command
    assert outputs == {}
    for file, excerpt in excerpts:
        assert excerpt in (tmp_path / file).read_text(), file


def test_an_opset_18_split_by_number_of_outputs_is_read_as_its_slices():
    """The dynamo exporter writes ``x.chunk(2, dim=1)`` as an opset-18 ``Split`` with
    ``num_outputs`` and no sizes (ShuffleNet): parts of ceil(C / n) channels, the last smaller."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(1).standard_normal((3, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
            helper.make_node("Conv", ["b", "w"], ["c"]),
            helper.make_node("Relu", ["c"], ["d"]),
            helper.make_node("Concat", ["a", "d"], ["y"], axis=1),
        ],
        "chunks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 5, 5])],
        [numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    result = import_model(proto, weights=True)
    slices = [n for n in result.compiled.graph.nodes if nasdsl.ir.node(result.compiled.graph, n).op == "slice"]
    assert len(slices) == 2
    assert agreement(proto, result) < 1e-6


def test_blocks_that_cannot_be_written_leave_the_graph_flat_and_say_so(toy_file, monkeypatch):
    """The blocks found by structure are a reading of the graph: when the spec written with
    them fails its check against the graph, the import is flat (the same network, no
    templates) and the report says why."""
    from nasdsl.importer import check as check_module

    real = check_module.check

    def refuse_templates(model, text):
        if "templates:" in text:
            raise check_module.ImportMismatch("a refused block")
        return real(model, text)

    monkeypatch.setattr(check_module, "check", refuse_templates)
    flat = _stripped(toy_file)
    result = import_model(flat, weights=True)
    assert result.report.templates == []
    assert any("could not be written as a spec (a refused block): imported flat" in n for n in result.report.notes)
    assert agreement(flat, result) < 1e-5
    # names from the metadata: that module tree refused too, the blocks are found by structure
    # (refused here as well), and the graph is imported flat; the notes say each step
    named = import_model(toy_file)
    assert named.report.templates == []
    assert named.report.notes[0].startswith("the file's module tree could not be written as a spec (a refused block)")
    assert any("imported flat" in n for n in named.report.notes)


def test_importing_leaves_the_callers_model_as_it_was():
    """The reader rewires nodes around an Identity in place: it works on its own copy, so the
    ModelProto handed to import_model is the same, byte for byte, after the import."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["c"], ["i"], name="/id/Identity"),
        helper.make_node("Relu", ["i"], ["y"], name="/relu/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weight, "conv.weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    result = import_model(model, weights=True)
    assert model.SerializeToString() == before
    assert np.array_equal(result.weights["conv.weight"], weight)


def test_a_merge_that_reads_one_value_twice_imports_from_its_own_export(tmp_path):
    """``add: [{ref: s}, {ref: s}]`` reads ``s`` once through an identity (``j.1``), which the
    export keeps and the import drops: the check of the written spec sees through such identities
    (it was an internal error, 'the written spec differs from the source')."""
    path = tmp_path / "twice.yaml"
    path.write_text(
        "nasdsl: 1\nname: Twice\ninput: {shape: [4, 6, 6]}\nmodel:\n  s: {op: conv2d, out: 6, kernel: 1}\n"
        "  j: {add: [{ref: s}, {ref: s}]}\n  k: {concat: [{ref: s}, {ref: j}, {ref: s}]}\n"
    )
    proto = export_onnx(nasdsl.compile_spec(path).graph, opset=17)
    assert [n.op_type for n in proto.graph.node].count("Identity") == 2
    result = import_model(proto, weights=True)
    assert "  j: {add: [{ref: s}, {ref: s}]}" in result.text
    assert agreement(proto, result) < 1e-6
