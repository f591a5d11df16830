"""Malformed specs and the whole error text they produce.

Each case is a small spec written inline; it is saved as ``spec.yaml`` in a
temporary folder and checked with the folder as the working directory, so the
file name in every message is the relative name the user typed. The CLI must
exit 2, print nothing on stdout and print exactly the expected diagnostics on
stderr: ``FILE:LINE:COL: error: KEY.PATH: what was expected, what was got``.

Line and column numbers can be read off the spec text: its first line is line 1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nasdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOOGLENET = ROOT / "specs" / "googlenet.yaml"

# The first two lines of most cases.
HEAD = "name: Net\ninput: {shape: [3, 32, 32]}\n"


@dataclass(frozen=True)
class Case:
    id: str
    spec: str | None  # None: no spec.yaml is written
    expected: str  # the whole stderr
    sets: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # more files beside spec.yaml
    target: str = "spec.yaml"


def spec(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


CASES = [
    # ----------------------------------------------------------------- unknown keys, ops and templates
    Case(
        "unknown-key-in-op",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernal: 3}
            """),
        "spec.yaml:4:30: error: model.conv.kernal: unknown key 'kernal' in op conv2d (did you mean 'kernel'?); "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init\n",
    ),
    Case(
        "unknown-key-in-template",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c]
                body:
                  conv: {op: conv2d, out: c, kernel: 3}
                bdy: relu
            model:
              b: {use: Block, args: [8]}
            """),
        "spec.yaml:8:5: error: templates.Block.bdy: unknown key 'bdy' in template Block (did you mean 'body'?); "
        "allowed: params, inputs, body, doc, build_order\n",
    ),
    Case(
        "unknown-key-in-template-body",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c]
                body:
                  conv: {op: conv2d, out: c, kernal: 3}
            model:
              b: {use: Block, args: [8]}
            """),
        "spec.yaml:7:34: error: templates.Block.body.conv.kernal: unknown key 'kernal' in op conv2d "
        "(did you mean 'kernel'?); allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, "
        "doc, from, init\n",
    ),
    Case(
        # the misspelt key and the missing one it should have been are both reported
        "unknown-key-at-top-level",
        HEAD
        + spec("""
            modle:
              conv: relu
            """),
        "spec.yaml:1:1: error: model: missing key 'model': the network's layers\n"
        "spec.yaml:3:1: error: modle: unknown key 'modle' in a spec (did you mean 'model'?); "
        "allowed: nasdsl, name, doc, extends, input, variables, init, templates, model, outputs, outputs_by_name, "
        "evaluation\n",
    ),
    Case(
        "unknown-op",
        HEAD
        + spec("""
            model:
              conv: {op: conv2f, out: 8, kernel: 3}
            """),
        "spec.yaml:4:14: error: model.conv.op: unknown op 'conv2f' (did you mean 'conv2d'?)\n",
    ),
    Case(
        "unknown-template",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c]
                body: {op: conv2d, out: c, kernel: 3}
            model:
              b: {use: Blok, args: [8]}
            """),
        "spec.yaml:8:12: error: model.b.use: unknown op or template 'Blok' (did you mean 'Block'?)\n",
    ),
    Case(
        "unknown-op-or-template-as-a-word",
        HEAD
        + spec("""
            model:
              act: rleu
            """),
        "spec.yaml:4:8: error: model.act: unknown op or template 'rleu' (did you mean 'relu'?)\n",
    ),
    Case(
        "two-kinds-of-block",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, use: Block, out: 8, kernel: 3}
            """),
        "spec.yaml:4:22: error: model.conv: expected one of the keys op, use, ref, seq, repeat, concat, add, mul, "
        "mean, matmul, interpolate_like in a block, got op and use\n",
    ),
    Case(
        "use-of-an-op-with-args",
        HEAD
        + spec("""
            model:
              conv: {use: conv2d, args: [8, 3]}
            """),
        "spec.yaml:4:15: error: model.conv.use: expected a template after 'use', got the op 'conv2d', "
        "which takes no 'args': write {op: conv2d, ...} with its attributes as keys\n",
    ),
    # ----------------------------------------------------------------- template arguments
    Case(
        "too-many-arguments",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c, {k: 3}]
                body: {op: conv2d, out: c, kernel: k}
            model:
              b: {use: Block, args: [8, 3, 1]}
            """),
        "spec.yaml:8:32: error: model.b.args[2]: expected at most 2 arguments to Block(c, k=3), got 3\n",
    ),
    Case(
        "too-few-arguments",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c, {k: 3}]
                body: {op: conv2d, out: c, kernel: k}
            model:
              b: {use: Block, args: {k: 5}}
            """),
        "spec.yaml:8:25: error: model.b.args: missing argument 'c' of Block(c, k=3)\n",
    ),
    Case(
        "no-arguments",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c, d]
                body: {op: conv2d, out: c, kernel: d}
            model:
              b: Block
            """),
        "spec.yaml:8:6: error: model.b: missing arguments 'c', 'd' of Block(c, d)\n",
    ),
    Case(
        "unknown-argument-name",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c, {k: 3}]
                body: {op: conv2d, out: c, kernel: k}
            model:
              b: {use: Block, args: {c: 8, kernel: 5}}
            """),
        "spec.yaml:8:40: error: model.b.args.kernel: unknown parameter 'kernel' of Block; parameters: c, k=3\n",
    ),
    Case(
        "parameter-without-default-after-one-with",
        HEAD
        + spec("""
            templates:
              Block:
                params: [{k: 3}, c]
                body: {op: conv2d, out: c, kernel: k}
            model:
              b: {use: Block, args: [3, 8]}
            """),
        "spec.yaml:5:22: error: templates.Block.params[1]: parameter 'c' has no default but follows 'k', "
        "which has one: put the parameters with defaults last\n",
    ),
    Case(
        "template-that-uses-itself",
        HEAD
        + spec("""
            templates:
              Loop:
                params: [c]
                body:
                  conv: {op: conv2d, out: c, kernel: 1}
                  again: {use: Loop, args: [c]}
            model:
              b: {use: Loop, args: [8]}
            """),
        "spec.yaml:8:14: error: templates.Loop.body.again: template Loop instantiates itself (Loop -> Loop)\n",
    ),
    # ----------------------------------------------------------------- attribute values
    Case(
        "zero-filters",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 0, kernel: 3}
            """),
        "spec.yaml:4:27: error: model.conv.out: expected an integer > 0, got 0\n",
    ),
    Case(
        # the value is wrong where it is written (the argument), not in the template that uses it
        "negative-filters-through-a-template",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c]
                body:
                  conv: {op: conv2d, out: c, kernel: 3}
                  relu: relu
            model:
              b: {use: Block, args: [-8]}
            """),
        "spec.yaml:10:26: error: model.b.args[0]: expected an integer > 0, got -8 (used as 'out' of node b.conv)\n",
    ),
    Case(
        "float-filters",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8.5, kernel: 3}
            """),
        "spec.yaml:4:27: error: model.conv.out: expected an integer > 0, got 8.5\n",
    ),
    Case(
        "string-where-an-integer-belongs",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3x3}
            """),
        "spec.yaml:4:38: error: model.conv.kernel: invalid number '3x3' (write a pair as [3, 3])\n",
    ),
    Case(
        "word-where-an-integer-belongs",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: eight, kernel: 3}
            """),
        "spec.yaml:4:27: error: model.conv.out: unknown name 'eight'\n",
    ),
    Case(
        "boolean-where-a-number-belongs",
        HEAD
        + spec("""
            model:
              pool: {op: max_pool, kernel: 2, stride: true}
            """),
        "spec.yaml:4:43: error: model.pool.stride: expected an integer > 0, got true\n",
    ),
    Case(
        "mapping-where-a-value-belongs",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: {filters: 8}, kernel: 3}
            """),
        "spec.yaml:4:27: error: model.conv.out: expected a number, a name or an expression, got a mapping\n",
    ),
    Case(
        "missing-attributes",
        HEAD
        + spec("""
            model:
              conv: conv2d
            """),
        "spec.yaml:4:9: error: model.conv: missing attributes out, kernel of conv2d\n",
    ),
    Case(
        "dropout-rate-from-a-variable",
        HEAD
        + spec("""
            variables:
              drop: 1.5
            model:
              d: {op: dropout, p: drop}
            """),
        "spec.yaml:4:9: error: variables.drop: expected a number >= 0.0 and < 1.0, got 1.5 (used as 'p' of node d)\n",
    ),
    Case(
        "padding-same-with-stride-2",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3, stride: 2, padding: same}
            """),
        "spec.yaml:4:61: error: model.conv.padding: expected stride 1 with padding 'same', got stride 2\n",
    ),
    Case(
        "pool-padding-over-half-the-kernel",
        HEAD
        + spec("""
            model:
              pool: {op: max_pool, kernel: 2, padding: 2}
            """),
        "spec.yaml:4:44: error: model.pool.padding: expected padding at most half the kernel 2, got 2\n",
    ),
    Case(
        "when-that-is-not-a-boolean",
        HEAD
        + spec("""
            variables:
              use_bn: 1
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
              bn: {op: batch_norm, when: use_bn}
            """),
        "spec.yaml:4:11: error: variables.use_bn: expected true or false, got 1 (used as 'when' of node bn)\n",
    ),
    Case(
        "bad-phase",
        HEAD
        + spec("""
            model:
              act: {op: relu, phase: always}
            """),
        "spec.yaml:4:26: error: model.act.phase: expected one of both, train, eval, got 'always'\n",
    ),
    # ----------------------------------------------------------------- shapes
    Case(
        "concat-of-different-spatial-sizes",
        HEAD
        + spec("""
            model:
              mixed:
                concat:
                  a: {op: conv2d, out: 8, kernel: 3}
                  b: {op: conv2d, out: 8, kernel: 1}
            """),
        "spec.yaml:5:5: error: model.mixed: expected concat inputs that differ only in channels, "
        "got 8x30x30, 8x32x32 (from mixed.a, mixed.b)\n",
    ),
    Case(
        "add-of-different-shapes",
        HEAD
        + spec("""
            model:
              res:
                add:
                  - {op: conv2d, out: 8, kernel: 1}
                  - {op: conv2d, out: 4, kernel: 1}
            """),
        "spec.yaml:5:5: error: model.res: expected add inputs of one shape, got 8x32x32, 4x32x32 (from res.0, res.1)\n",
    ),
    Case(
        "kernel-larger-than-its-input",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 33}
            """),
        "spec.yaml:4:9: error: model.conv: expected a kernel no larger than the input 32x32, got 33x33\n",
    ),
    Case(
        "kernel-larger-than-its-padded-input",
        HEAD
        + spec("""
            model:
              pool: {op: max_pool, kernel: 3, stride: 16}
              conv: {op: conv2d, out: 8, kernel: 5, padding: 1}
            """),
        "spec.yaml:5:9: error: model.conv: expected a kernel no larger than the padded input 4x4 "
        "(2x2 with padding 1), got 5x5\n",
    ),
    Case(
        # the template's text is shared by its uses: the message names the node
        "kernel-too-large-inside-a-template",
        HEAD
        + spec("""
            templates:
              Block:
                params: [c, {k: 3}]
                body: {op: conv2d, out: c, kernel: k}
            model:
              b1: {use: Block, args: [8]}
              b2: {use: Block, args: [8, 31]}
            """),
        "spec.yaml:6:11: error: templates.Block.body: expected a kernel no larger than the input 30x30, got 31x31 "
        "(in node b2)\n",
    ),
    Case(
        "linear-without-flatten",
        HEAD
        + spec("""
            model:
              fc: {op: linear, out: 10}
            """),
        "spec.yaml:4:7: error: model.fc: expected flat features as the input of linear (add a flatten before it), "
        "got a (C, H, W) map 3x32x32\n",
    ),
    Case(
        "convolution-after-flatten",
        HEAD
        + spec("""
            model:
              flat: flatten
              conv: {op: conv2d, out: 8, kernel: 1}
            """),
        "spec.yaml:5:9: error: model.conv: expected a feature map (C, H, W) as the input of conv2d, "
        "got flat features 3072\n",
    ),
    Case(
        "groups-that-do-not-divide-the-channels",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3, groups: 2}
            """),
        "spec.yaml:4:9: error: model.conv: expected groups that divide the input channels 3 and the output "
        "channels 8, got 2\n",
    ),
    # ----------------------------------------------------------------- graph structure
    Case(
        "cycle-ref-from-inside-itself",
        HEAD
        + spec("""
            model:
              stage:
                conv: {op: conv2d, out: 3, kernel: 1}
                loop: {ref: stage}
            """),
        "spec.yaml:6:17: error: model.stage.loop.ref: cannot refer to 'stage' from inside it: "
        "that would make a cycle\n",
    ),
    Case(
        "duplicate-name",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
              conv: relu
            """),
        "spec.yaml:5:3: error: duplicate key 'conv' (first defined at line 4)\n",
    ),
    Case(
        "dangling-ref",
        HEAD
        + spec("""
            model:
              stage:
                conv: {op: conv2d, out: 3, kernel: 1}
                skip: {ref: cnv}
            """),
        "spec.yaml:6:17: error: model.stage.skip.ref: no node named 'cnv' before this point "
        "(did you mean 'stage.conv'?)\n",
    ),
    Case(
        "output-from-a-missing-node",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
            outputs:
              logits: {from: conv2}
            """),
        "spec.yaml:6:18: error: outputs.logits.from: no node named 'conv2' (did you mean 'conv'?)\n",
    ),
    Case(
        "invalid-identifier",
        HEAD
        + spec("""
            model:
              conv-1: {op: conv2d, out: 8, kernel: 3}
            """),
        "spec.yaml:4:3: error: model.conv-1: expected a block name of letters, digits and '_' that does not "
        "start with a digit, got 'conv-1'\n",
    ),
    Case(
        "python-keyword-as-a-name",
        HEAD
        + spec("""
            model:
              class: relu
            """),
        "spec.yaml:4:3: error: model.class: expected a block name that Python does not reserve, got 'class'\n",
    ),
    # ----------------------------------------------------------------- sections and types
    Case(
        "list-where-a-mapping-belongs",
        HEAD
        + spec("""
            variables: [width, depth]
            model:
              conv: relu
            """),
        "spec.yaml:3:12: error: variables: expected a mapping, got a list\n",
    ),
    Case(
        "model-as-a-list",
        HEAD
        + spec("""
            model:
              - relu
            """),
        "spec.yaml:4:3: error: model: expected a mapping of named blocks (conv1: ..., pool1: ...), got a list\n",
    ),
    Case(
        "unknown-init-scheme",
        HEAD
        + spec("""
            init:
              conv2d: {weight: xavier_unifrom}
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
            """),
        "spec.yaml:4:20: error: init.conv2d.weight: unknown init scheme 'xavier_unifrom' "
        "(did you mean 'xavier_uniform'?)\n",
    ),
    Case(
        "kaiming-mode-typo",
        HEAD
        + spec("""
            init:
              conv2d: {weight: {kaiming_normal: {mode: fan_inn}}}
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
            """),
        "spec.yaml:4:44: error: init.conv2d.weight.mode: expected mode to be one of fan_out, fan_in, "
        "got 'fan_inn' (did you mean 'fan_in'?)\n",
    ),
    Case(
        "fan-scheme-on-a-bias",
        HEAD
        + spec("""
            init:
              conv2d: {bias: kaiming_normal}
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
            """),
        "spec.yaml:4:18: error: init.conv2d.bias: kaiming_normal counts fan_in and fan_out, which the bias of "
        "conv2d (one dimension) does not have; use constant, zeros, ones, normal, trunc_normal, uniform or default\n",
    ),
    Case(
        "init-of-a-layer-without-parameters",
        HEAD
        + spec("""
            model:
              act: {op: relu, init: {weight: zeros}}
            """),
        "spec.yaml:4:25: error: model.act.init: op relu has no parameters that init sets; "
        "init applies to conv1d, conv2d, conv3d, batch_norm, conv_transpose1d, conv_transpose2d, conv_transpose3d, "
        "parameter, linear, layer_norm, attention, pooling_attention, positional_encoding, prelu, group_norm, "
        "instance_norm, partition_attention\n",
    ),
    Case(
        "init-of-a-layer-names-an-unknown-parameter",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3, init: {weights: zeros}}
            """),
        "spec.yaml:4:48: error: model.conv.init.weights: unknown parameter 'weights' of conv2d "
        "(did you mean 'weight'?); allowed: weight, bias\n",
    ),
    Case("missing-model", HEAD, "spec.yaml:1:1: error: model: missing key 'model': the network's layers\n"),
    Case(
        "missing-input-shape",
        spec("""
            name: Net
            input: {name: image}
            model:
              conv: relu
            """),
        "spec.yaml:2:8: error: input.shape: missing key 'shape': expected a list of sizes, such as [C, H, W]\n",
    ),
    Case(
        "input-shape-of-six",
        spec("""
            name: Net
            input: {shape: [1, 2, 3, 4, 5, 6]}
            model:
              act: relu
            """),
        "spec.yaml:2:16: error: input.shape: expected a list of 1 to 5 sizes without the batch ([C, H, W] for "
        "images, [C, T, H, W] for video, [L, C] for tokens), got a list of 6\n",
    ),
    Case(
        "input-axes-that-do-not-fit",
        spec("""
            name: Net
            input: {shape: [3, 8, 8], axes: CHWT}
            model:
              act: relu
            """),
        "spec.yaml:2:33: error: input.axes: expected 3 letters, one per axis of the shape, from C (channels or "
        "features), T (time), H, W (height, width) and L (sequence), C at most once, got 'CHWT'\n",
    ),
    Case(
        "input-size-from-a-variable",
        spec("""
            name: Net
            input: {shape: [3, size, size]}
            variables:
              size: -4
            model:
              act: relu
            """),
        "spec.yaml:4:9: error: variables.size: expected an integer > 0, got -4 (used as input.shape[1])\n",
    ),
    Case(
        "input-mean-of-two",
        spec("""
            name: Net
            input: {shape: [3, 32, 32], mean: [1, 2]}
            model:
              act: relu
            """),
        "spec.yaml:2:35: error: input.mean: expected 3 values (one per input channel), got 2\n",
    ),
    Case(
        "language-version",
        "nasdsl: 2\n" + HEAD + "model:\n  act: relu\n",
        "spec.yaml:1:9: error: nasdsl: expected language version 1, got 2\n",
    ),
    # ----------------------------------------------------------------- YAML syntax
    Case(
        "yaml-tab",
        HEAD + "model:\n\tconv: relu\n",
        "spec.yaml:4:1: error: found character '\\t' that cannot start any token: use spaces, "
        "YAML does not allow tabs here\n",
    ),
    Case(
        "yaml-unclosed-bracket",
        "name: Net\ninput: {shape: [3, 32, 32]\nmodel:\n  conv: relu\n",
        "spec.yaml:3:1: error: did not find expected ',' or '}' "
        "(while parsing a flow mapping started at line 2, column 8)\n",
    ),
    # ----------------------------------------------------------------- expressions
    Case(
        # the column points at the name inside the expression
        "expression-with-an-unknown-variable",
        HEAD
        + spec("""
            variables:
              width: 2
            model:
              conv: {op: conv2d, out: 16 * widht, kernel: 3}
            """),
        "spec.yaml:6:32: error: model.conv.out: unknown name 'widht' (known: width)\n",
    ),
    Case(
        "expression-dividing-by-zero",
        HEAD
        + spec("""
            variables:
              groups: 0
            model:
              conv: {op: conv2d, out: 64 // groups, kernel: 3}
            """),
        "spec.yaml:6:30: error: model.conv.out: division by zero\n",
    ),
    Case(
        "boolean-in-arithmetic",
        HEAD
        + spec("""
            variables:
              wide: true
            model:
              conv: {op: conv2d, out: wide * 16, kernel: 3}
            """),
        "spec.yaml:6:27: error: model.conv.out: expected a number, got a boolean\n",
    ),
    Case(
        "variable-using-a-later-one",
        HEAD
        + spec("""
            variables:
              width: base * 2
              base: 16
            model:
              conv: {op: conv2d, out: width, kernel: 3}
            """),
        "spec.yaml:4:10: error: variables.width: unknown name 'base' "
        "('base' is defined later: a variable may use only the variables before it)\n",
    ),
    # ----------------------------------------------------------------- extends
    Case(
        "extends-of-a-missing-file",
        spec("""
            extends: base.yaml
            name: Net
            """),
        "spec.yaml:1:10: error: extends: no such file: base.yaml\n",
    ),
    Case(
        "extends-cycle",
        spec("""
            extends: b.yaml
            name: A
            """),
        "b.yaml:1:10: error: extends: extends cycle: spec.yaml -> b.yaml -> spec.yaml\n",
        files={"b.yaml": "extends: spec.yaml\nname: B\n"},
    ),
    Case(
        "extends-of-a-number",
        spec("""
            extends: 5
            name: Net
            """),
        "spec.yaml:1:10: error: extends: expected the path of a spec file, got an integer\n",
    ),
    Case("no-such-spec-file", None, "nope.yaml:1:1: error: no such file\n", target="nope.yaml"),
    # ----------------------------------------------------------------- --set
    Case(
        "set-of-an-unknown-variable",
        HEAD
        + spec("""
            variables:
              width: 8
            model:
              conv: {op: conv2d, out: width, kernel: 3}
            """),
        "<--set widht=4>:1:1: error: widht: no variable or model entry named 'widht' (did you mean 'width'?)\n",
        sets=("widht=4",),
    ),
    Case(
        "set-of-a-negative-count",
        HEAD
        + spec("""
            variables:
              num_classes: 10
            model:
              flat: flatten
              fc: {op: linear, out: num_classes}
            """),
        "<--set num_classes=-3>:1:13: error: variables.num_classes: expected an integer > 0, got -3 "
        "(used as 'out' of node fc)\n",
        sets=("num_classes=-3",),
    ),
    Case(
        "set-of-a-word",
        HEAD
        + spec("""
            variables:
              num_classes: 10
            model:
              flat: flatten
              fc: {op: linear, out: num_classes}
            """),
        "<--set num_classes=abc>:1:13: error: variables.num_classes: unknown name 'abc' "
        "(a variable is a number, true, false or an expression of the variables before it)\n",
        sets=("num_classes=abc",),
    ),
    Case(
        "set-without-a-value",
        HEAD + "model:\n  act: relu\n",
        "<--set nonsense>:1:1: error: --set: expected PATH=VALUE, got 'nonsense'\n",
        sets=("nonsense",),
    ),
    Case(
        # through two templates (Inception -> BasicConv2d) back to the --set that gave the value
        "set-of-a-template-argument",
        None,
        "<--set inception4a.c3x3=-5>:1:18: error: model.inception4a.args.c3x3: expected an integer > 0, got -5 "
        "(used as 'out' of node inception4a.branch2.1.conv)\n",
        sets=("inception4a.c3x3=-5",),
        target="googlenet.yaml",
    ),
    Case(
        "set-of-an-unknown-template-parameter",
        None,
        "<--set inception4a.c3x4=256>:1:1: error: inception4a.c3x4: unknown parameter 'c3x4' of Inception "
        "(did you mean 'c3x3'?); parameters: c1x1, c3x3red, c3x3, c5x5red, c5x5, pool_proj\n",
        sets=("inception4a.c3x4=256",),
        target="googlenet.yaml",
    ),
    Case(
        "set-of-an-unknown-op-attribute",
        None,
        "<--set maxpool4.kernal=2>:1:17: error: model.maxpool4.kernal: unknown key 'kernal' in op max_pool "
        "(did you mean 'kernel'?); allowed: kernel, stride, padding, ceil_mode, phase, when, doc, from\n",
        sets=("maxpool4.kernal=2",),
        target="googlenet.yaml",
    ),
    # ----------------------------------------------------------------- several errors at once
    Case(
        # check reports every error it finds: one per section and one per model entry
        "several-errors",
        spec("""
            name: Net
            input: {shape: [3, 32, 32], colour: rgb}
            templates:
              Block:
                params: [c, c]
                body: relu
            model:
              conv: {op: conv2d, out: 8, kernel: 3, strid: 2}
              act: {op: relu, phase: always}
            """),
        "spec.yaml:2:29: error: input.colour: unknown key 'colour' in input; "
        "allowed: name, shape, axes, mean, std, doc\n"
        "spec.yaml:5:17: error: templates.Block.params[1]: duplicate parameter 'c'\n"
        "spec.yaml:8:41: error: model.conv.strid: unknown key 'strid' in op conv2d (did you mean 'stride'?); "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init\n"
        "spec.yaml:9:26: error: model.act.phase: expected one of both, train, eval, got 'always'\n",
    ),
    Case(
        # shape inference reports every node whose inputs it could shape; what follows an error is skipped
        "several-shape-errors",
        HEAD
        + spec("""
            model:
              mixed:
                concat:
                  a: {op: conv2d, out: 8, kernel: 33}
                  b: {op: linear, out: 10}
              fc: {op: linear, out: 10}
            """),
        "spec.yaml:6:10: error: model.mixed.a: expected a kernel no larger than the input 32x32, got 33x33\n"
        "spec.yaml:7:10: error: model.mixed.b: expected flat features as the input of linear "
        "(add a flatten before it), got a (C, H, W) map 3x32x32\n",
    ),
    # ----------------------------------------------------------------- no silent misreading (issue 10)
    Case(
        "merge-lookalike-cat",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
              cat: [{op: conv2d, out: 4, kernel: 1}, {op: conv2d, out: 4, kernel: 1}]
            """),
        "spec.yaml:5:3: error: model.cat: 'cat' names a sequence of these blocks, which reads like a merge: "
        "did you mean the merge {concat: ...}? (to keep a sequence, give it another name, or write cat: {seq: ...})\n",
    ),
    Case(
        "merge-lookalike-misspelt-concat",
        HEAD
        + spec("""
            model:
              concta:
                a: {op: conv2d, out: 4, kernel: 1}
                b: {op: conv2d, out: 4, kernel: 1}
            """),
        "spec.yaml:4:3: error: model.concta: 'concta' names a sequence of named blocks, which reads like a merge: "
        "did you mean the merge {concat: ...}? (to keep a sequence, give it another name, "
        "or write concta: {seq: ...})\n",
    ),
    Case(
        "merge-lookalike-max",
        HEAD
        + spec("""
            model:
              max: [relu, relu]
            """),
        "spec.yaml:4:3: error: model.max: 'max' names a sequence of these blocks, which reads like a merge: "
        "there is no such merge; the merges are concat, add, mul, mean, matmul, interpolate_like "
        "(to keep a sequence, give it another name, or write max: {seq: ...})\n",
    ),
    Case(
        "merge-written-as-op",
        HEAD
        + spec("""
            model:
              scale: {op: mul}
            """),
        "spec.yaml:4:15: error: model.scale.op: unknown op 'mul' ('mul' is a merge: write {mul: [branches]})\n",
    ),
    Case(
        "entry-named-like-a-merge",
        HEAD
        + spec("""
            templates:
              B:
                body:
                  conv1: {op: conv2d, out: 8, kernel: 3, padding: 1}
                  add: [{ref: conv1}, {ref: in}]
            model:
              b: B
            """),
        "spec.yaml:6:7: error: templates.B.body.conv1: unknown key 'conv1' beside 'add': a mapping with the key "
        "'add' is an add merge, whose only other keys are phase, when, doc, from, index (a block's key cannot name an "
        "entry of a sequence: give the entry another name)\n",
    ),
    # ----------------------------------------------------------------- repeat, from, placement
    Case(
        "repeat-count-zero",
        HEAD
        + spec("""
            model:
              stage: {repeat: 0, block: relu}
            """),
        "spec.yaml:4:19: error: model.stage.repeat: expected an integer > 0, got 0\n",
    ),
    Case(
        "repeat-without-block",
        HEAD
        + spec("""
            model:
              stage: {repeat: 2, blok: relu}
            """),
        # the typo is named, with its did-you-mean, rather than the key it misses
        "spec.yaml:4:22: error: model.stage.blok: unknown key 'blok' in repeat (did you mean 'block'?); allowed: "
        "repeat, block, index, name, flat, previous, phase, when, doc, from\n",
    ),
    Case(
        "repeat-name-without-index",
        HEAD
        + spec("""
            model:
              stage: {repeat: 2, name: layer, block: relu}
            """),
        "spec.yaml:4:28: error: model.stage.name: expected a name pattern with the index in it, "
        "such as 'layer{i}', got 'layer'\n",
    ),
    Case(
        "repeat-name-twice",
        HEAD
        + spec("""
            model:
              stage: {repeat: 3, name: "layer{i // 2}", block: relu}
            """),
        "spec.yaml:4:10: error: model.stage.name: the name pattern gives 'layer0' twice\n",
    ),
    Case(
        "repeat-flat-outside-a-list",
        HEAD
        + spec("""
            model:
              stage: {repeat: 2, flat: true, block: [relu]}
            """),
        "spec.yaml:4:10: error: model.stage.flat: expected a repeat that is an item of a list and repeats a list "
        "for 'flat: true', got an entry of a named sequence\n",
    ),
    Case(
        "from-an-unknown-entry",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3}
              pool: {op: max_pool, kernel: 2, from: conv2}
            """),
        "spec.yaml:5:41: error: model.pool.from: no node named 'conv2' before this point (did you mean 'conv'?)\n",
    ),
    Case(
        "placement-without-extends",
        HEAD
        + spec("""
            model:
              conv: {op: conv2d, out: 8, kernel: 3, after: x}
            """),
        "spec.yaml:4:41: error: model.conv.after: unknown key 'after' in op conv2d ('after' places an entry only "
        "in a model or outputs section of a document that extends another); allowed: out, kernel, stride, "
        "padding, dilation, groups, bias, phase, when, doc, from, init\n",
    ),
    Case(
        "placement-next-to-an-unknown-entry",
        "extends: base.yaml\nmodel:\n  drop: {op: dropout, after: pol}\n",
        "spec.yaml:3:30: error: model.drop.after: expected an entry of the base's model to place 'drop' after, "
        "got 'pol' (did you mean 'pool'?)\n",
        files={"base.yaml": HEAD + "model:\n  conv: {op: conv2d, out: 8, kernel: 3}\n  pool: global_avg_pool\n"},
    ),
    Case(
        # every error of every entry and template in one run
        "every-error-in-one-run",
        HEAD
        + spec("""
            templates:
              T:
                params: [out]
                body:
                  conv: {op: conv2d, out: out, kernel: 3, stride: -1}
                  conv2: {op: conv2d, out: -3, kernel: 3}
            model:
              a: {op: conv2d, out: -4, kernel: 3}
              t: {use: T, args: [8]}
              u: {use: T, args: [4]}
            """),
        "spec.yaml:7:55: error: templates.T.body.conv.stride: expected an integer > 0, got -1 (in node t.conv)\n"
        "spec.yaml:8:32: error: templates.T.body.conv2.out: expected an integer > 0, got -3 (in node t.conv2)\n"
        "spec.yaml:10:24: error: model.a.out: expected an integer > 0, got -4\n",
    ),
    # ----------------------------------------------------------------- every error of every kind, in one run
    Case(
        "unknown-key-unknown-template-bad-reference",  # the parser's unknown key stopped the build's errors
        HEAD
        + spec("""
            model:
              a: {use: Nope, args: [4]}
              r: {ref: nowhere}
              c: {op: conv2d, out: 4, kernel: 3, colour: red}
            """),
        "spec.yaml:4:12: error: model.a.use: unknown op or template 'Nope'\n"
        "spec.yaml:5:12: error: model.r.ref: no node named 'nowhere' before this point\n"
        "spec.yaml:6:38: error: model.c.colour: unknown key 'colour' in op conv2d; "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init\n",
    ),
    Case(
        "two-unknown-keys-of-one-block-and-a-number-out-of-range",
        HEAD
        + spec("""
            variables: {big: 1.0e+300}
            model:
              c: {op: conv2d, out: 4, kernal: 3, strid: 2}
            """),
        "spec.yaml:3:18: error: variables.big: expected a finite number of magnitude at most 2^53 "
        "(9,007,199,254,740,992), as in expressions, got 1e+300\n"
        "spec.yaml:5:27: error: model.c.kernal: unknown key 'kernal' in op conv2d (did you mean 'kernel'?); "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init\n"
        "spec.yaml:5:38: error: model.c.strid: unknown key 'strid' in op conv2d (did you mean 'stride'?); "
        "allowed: out, kernel, stride, padding, dilation, groups, bias, phase, when, doc, from, init\n",
    ),
    # ----------------------------------------------------------------- window attention (Swin)
    Case(
        "window-attention-shift-not-under-the-window",
        HEAD
        + spec("""
            model:
              p: {op: permute, dims: [1, 2, 0]}
              attn: {op: window_attention, heads: 1, window: [4, 4], shift: [2, 4]}
            """),
        "spec.yaml:5:65: error: model.attn.shift: expected each shift smaller than the window [4, 4], got [2, 4]\n",
    ),
    Case(
        "window-attention-version-2-in-3d",
        "name: Net\ninput: {shape: [3, 4, 32, 32]}\n"
        + spec("""
            model:
              p: {op: permute, dims: [1, 2, 3, 0]}
              attn: {op: window_attention, heads: 1, window: [2, 4, 4], version: 2}
            """),
        "spec.yaml:5:50: error: model.attn.window: expected a 2-D window of sides >= 2 for version 2 "
        "(its position bias divides by the side - 1), got [2, 4, 4]\n",
    ),
    Case(
        "window-attention-of-four-axes",
        HEAD
        + spec("""
            model:
              p: {op: permute, dims: [1, 2, 0]}
              attn: {op: window_attention, heads: 2, window: [4, 4, 4, 4]}
            """),
        "spec.yaml:5:50: error: model.attn.window: expected the window, [h, w] or [t, h, w], got [4, 4, 4, 4]\n",
    ),
    Case(
        "window-attention-on-a-channels-first-map",
        HEAD
        + spec("""
            model:
              attn: {op: window_attention, heads: 1, window: [4, 4]}
            """),
        "spec.yaml:4:9: error: model.attn: expected a channels-last map (H, W, C) as the input of "
        "window_attention, got a (C, H, W) map 3x32x32\n",
    ),
    Case(
        "pad-to-multiple-of-another-rank",
        HEAD
        + spec("""
            model:
              pad: {op: pad_to_multiple, multiple: [2, 4, 4]}
            """),
        "spec.yaml:4:8: error: model.pad: expected one multiple per spatial axis (2) of a (C, H, W) map "
        "3x32x32, got 3\n",
    ),
    Case(
        "patch-merging-on-tokens",
        "name: Net\ninput: {shape: [16, 8]}\n"
        + spec("""
            model:
              merge: {op: patch_merging, out: 16}
            """),
        "spec.yaml:4:10: error: model.merge: expected a channels-last map (H, W, C) or (T, H, W, C) as the "
        "input of patch_merging, got tokens (L, C) 16x8\n",
    ),
]


def _prepare(case: Case, folder: Path) -> list[str]:
    if case.spec is not None:
        (folder / "spec.yaml").write_text(case.spec, encoding="utf-8")
    for name, text in case.files.items():
        (folder / name).write_text(text, encoding="utf-8")
    if case.target == "googlenet.yaml":
        shutil.copy(GOOGLENET, folder / "googlenet.yaml")
    return [case.target, *(arg for s in case.sets for arg in ("--set", s))]


# FILE:LINE:COL: error: [KEY.PATH: ]message
DIAGNOSTIC = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<rest>.+)$")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_reports(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["check", *_prepare(case, tmp_path)])
    out, err = capsys.readouterr()
    assert (rc, out, err) == (2, "", case.expected)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_diagnostics_have_the_standard_form(case: Case) -> None:
    for line in case.expected.splitlines():
        m = DIAGNOSTIC.match(line)
        assert m, line
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1
        message = m["rest"].split(": ", 1)[-1] if re.match(r"^[\w.\[\]-]+: ", m["rest"]) else m["rest"]
        assert message[0].islower() or message[0] in "'\"", line
        assert "Traceback" not in line and "Error(" not in line


def test_summary_reports_the_same_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    case = next(c for c in CASES if c.id == "several-errors")
    monkeypatch.chdir(tmp_path)
    rc = main(["summary", *_prepare(case, tmp_path), "--format", "json"])
    out, err = capsys.readouterr()
    assert (rc, out, err) == (2, "", case.expected)


SUBPROCESS_CASES = [
    "unknown-key-in-op",
    "yaml-tab",
    "several-errors",
    "set-of-a-template-argument",
    "extends-cycle",
]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_check_as_a_command(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    args = _prepare(case, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "nasdsl", "check", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", case.expected)
