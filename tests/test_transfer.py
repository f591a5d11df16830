"""Weight transfer between variants (nasdsl/transfer.py, ``nasdsl transfer``): every tensor copied,
adapted by the documented rule, or initialised by the child's init rules; nothing dropped silently."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import nasdsl
from nasdsl.cli import main
from nasdsl.errors import WeightsError
from nasdsl.transfer import transfer_weights
from nasdsl.weights import check_weights, initial_weights, parameters

from paths import ROOT, SPECS

#: a small network: a concat of a 1x1 branch and a kxk branch with batch norm, then a classifier
NET = """\
nasdsl: 1
name: Net
input: {shape: [3, 16, 16]}
variables: {w: 8, k: 3, classes: 10}
templates:
  Branches:
    params: [a, b]
    body:
      concat:
        left: {op: conv2d, out: a, kernel: 1}
        right: [{op: conv2d, out: b, kernel: k, padding: "k // 2"}, batch_norm, relu]
model:
  stem: {op: conv2d, out: w, kernel: 3, padding: 1}
  mix: {use: Branches, args: [w, "2 * w"]}
  pool: global_avg_pool
  flat: flatten
  fc: {op: linear, out: classes}
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(NET)
    return path


def _weights(graph, seed: int = 7) -> dict[str, np.ndarray]:
    """Weights whose every value is distinct from the child's initialisation (seeded differently, shifted)."""
    drawn = initial_weights(graph, seed=seed)
    return {k: np.asarray(v + 100 if v.dtype == np.float32 else v + 3) for k, v in drawn.items()}


def test_the_same_spec_copies_everything(net):
    parent = nasdsl.compile_spec(net)
    weights = _weights(parent.graph)
    moved = transfer_weights(parent, weights, net, strict=True)
    assert moved.counts() == {"copied": len(weights), "adapted": 0, "initialised": 0, "dropped": 0}
    assert list(moved) == list(parameters(parent.graph))
    assert all(np.array_equal(moved[k], weights[k]) for k in weights)
    assert moved["mix.right.1.num_batches_tracked"].dtype == np.int64


def test_changed_channels_keep_each_sources_leading_channels(net):
    parent, child = nasdsl.compile_spec(net), nasdsl.compile_spec(net, {"mix.a": 4, "k": 5})
    weights = _weights(parent.graph)
    fresh = initial_weights(child.graph, seed=0)
    moved = transfer_weights(parent, weights, child)
    status = {m.key: m.status for m in moved.report}
    assert status["stem.weight"] == status["stem.bias"] == "copied"
    assert status["mix.left.weight"] == status["mix.left.bias"] == "adapted"  # 8 -> 4 output channels
    assert status["mix.right.1.weight"] == "copied"  # the batch norm's 16 channels are the same 16
    # the left branch keeps its first 4 filters, the rest of the child's tensor is its own initialisation
    assert np.array_equal(moved["mix.left.weight"], weights["mix.left.weight"][:4])
    # the 3x3 kernel is the centre of the 5x5 one; around it, the child's initialisation
    new, old = moved["mix.right.0.weight"], weights["mix.right.0.weight"]
    assert new.shape == (16, 8, 5, 5) and np.array_equal(new[:, :, 1:4, 1:4], old)
    assert np.array_equal(new[:, :, 0, :], fresh["mix.right.0.weight"][:, :, 0, :])
    # fc reads [left (4 channels) | right (16)]: the right branch's columns are its own, not shifted
    fc = moved["fc.weight"]
    assert fc.shape == (10, 20)
    assert np.array_equal(fc[:, :4], weights["fc.weight"][:, :4])
    assert np.array_equal(fc[:, 4:], weights["fc.weight"][:, 8:])
    fc_note = next(m for m in moved.report if m.key == "fc.weight")
    assert fc_note.status == "adapted" and fc_note.note == "from 10x24; dim 1: 24 -> 20"
    assert (fc_note.copied, fc_note.size) == (200, 200)
    # the result fits the child exactly
    check_weights(child.graph, child.graph, moved)
    with pytest.raises(WeightsError, match=r"--strict: 4 tensors are not copied as they are: mix.left.weight"):
        transfer_weights(parent, weights, child, strict=True)


def test_missing_renamed_reshaped_and_dropped_tensors(net, tmp_path):
    parent = nasdsl.compile_spec(net)
    weights = _weights(parent.graph)
    text = NET.replace("  stem:", "  first:").replace(
        "  fc: {op: linear, out: classes}", "  head: {op: linear, out: 5}"
    )
    (tmp_path / "child.yaml").write_text(text.replace("  mix:", "  fc: {op: conv2d, out: 8, kernel: 1}\n  mix:"))
    child = nasdsl.compile_spec(tmp_path / "child.yaml")
    moved = transfer_weights(parent, weights, child)
    by_key = {(m.key, m.status): m for m in moved.report}
    # 'stem' renamed 'first' with the same structure: followed, copied
    assert by_key[("first.weight", "copied")].source == "stem.weight"
    assert np.array_equal(moved["first.weight"], weights["stem.weight"])
    # a tensor of another rank under the parent's name: initialised, and said why
    assert by_key[("fc.weight", "initialised")].note == "the parent's has 2 dimensions"
    assert by_key[("head.weight", "initialised")].note == "no tensor of this name in the parent"
    assert by_key[("head.weight", "initialised")].source is None
    # nothing of the parent is left out silently
    assert [m.key for m in moved.report if m.status == "dropped"] == []  # fc.weight and fc.bias were read
    text = NET.replace("  flat: flatten\n  fc: {op: linear, out: classes}\n", "  flat: flatten\n")
    (tmp_path / "headless.yaml").write_text(text)
    moved = transfer_weights(parent, weights, tmp_path / "headless.yaml")
    assert [(m.key, m.status, m.shape) for m in moved.report if m.status == "dropped"] == [
        ("fc.weight", "dropped", (10, 24)),
        ("fc.bias", "dropped", (10,)),
    ]


def test_weights_that_do_not_fit_the_parent_are_refused(net):
    parent = nasdsl.compile_spec(net)
    weights = _weights(parent.graph)
    weights["stem.weight"] = weights["stem.weight"][:4]
    with pytest.raises(WeightsError, match=r"wrong \(1\): stem.weight \(expected 8x3x3x3, found 4x3x3x3\)"):
        transfer_weights(parent, weights, net)


#: two ShuffleNet V2 widths, small enough to move in a moment (the spec's variables as --set takes them)
SHUFFLE = {"input.shape": [3, 32, 32], "stem_channels": 8, "conv5_channels": 32, "num_classes": 10,
           "stage2_repeats": 3, "stage3_repeats": 2, "stage4_repeats": 2}  # fmt: skip
WIDTHS = {"parent": (16, 32, 64), "child": (24, 32, 48)}


def shuffled(width: int) -> list[int]:
    """Which channel before the shuffle each channel after it holds, as torch.nn.ChannelShuffle(2) has it."""
    import torch

    tags = torch.arange(width, dtype=torch.float32).view(1, width, 1, 1)
    return [int(v) for v in torch.nn.ChannelShuffle(2)(tags).flatten()]


def shufflenet_reads(widths: tuple[int, int, int]) -> dict[str, list[tuple[str, int]]]:
    """What each channel read by a layer means, written from ShuffleNet V2's units (Ma et al. 2018,
    Fig. 3 c, d; torchvision's InvertedResidual): per layer, the layer that made each channel it
    reads and its index there. A downsampling unit's branch1 (a depthwise 3x3, then a 1x1) and
    branch2 read its whole input; a basic unit's branch2 reads the second half of its input and
    its first half passes on; each unit concatenates the two and shuffles them."""
    x = [("conv1.0", i) for i in range(SHUFFLE["stem_channels"])]
    reads = {}
    for stage, width in zip(("stage2", "stage3", "stage4"), widths, strict=True):
        half = width // 2
        reads[f"{stage}.0.branch1.0"] = reads[f"{stage}.0.branch2.0"] = x
        made = [(f"{stage}.0.branch1.2", j) for j in range(half)] + [(f"{stage}.0.branch2.5", j) for j in range(half)]
        x = [made[k] for k in shuffled(width)]
        for unit in range(1, SHUFFLE[f"{stage}_repeats"]):
            reads[f"{stage}.{unit}.branch2.0"] = x[half:]
            made = x[:half] + [(f"{stage}.{unit}.branch2.5", j) for j in range(half)]
            x = [made[k] for k in shuffled(width)]
    reads["conv5.0"] = x
    return reads


def test_shufflenet_widths_keep_every_channel_where_it_means_the_same():
    """Transfer through slices, concatenations and channel shuffles: every value a layer's input
    channels carry over sits on the child's channel that means what the parent's did (checked
    against the units' design, not against the code under test), and every channel the two have
    in common carries over."""
    nets = {}
    for side, (w2, w3, w4) in WIDTHS.items():
        overrides = {**SHUFFLE, "stage2_channels": w2, "stage3_channels": w3, "stage4_channels": w4}
        nets[side] = nasdsl.compile_spec(SPECS / "shufflenet_v2_x1_0.yaml", overrides)
    # every parent value unique (and far from the child's initialisation): where a child value came from is its value
    weights, at, start = {}, {}, 1000
    for key, w in parameters(nets["parent"].graph).items():
        if w.dtype == "int64":
            weights[key] = np.zeros(w.shape, np.int64)
            continue
        weights[key] = (start + np.arange(int(np.prod(w.shape)), dtype=np.float64)).astype(np.float32).reshape(w.shape)
        at.update({float(v): (key, index) for index, v in np.ndenumerate(weights[key])})
        start += weights[key].size
    moved = transfer_weights(nets["parent"], weights, nets["child"])
    status = {m.key: m.status for m in moved.report}
    want, had = shufflenet_reads(WIDTHS["child"]), shufflenet_reads(WIDTHS["parent"])
    checked = 0
    for layer in want:
        depthwise = layer.endswith("branch1.0")  # its output channel o filters input channel o alone
        tensors = [f"{layer}.weight"] + (
            [f"{layer[:-1]}1.{p}" for p in ("weight", "bias", "running_mean")] if depthwise else []
        )
        for key in tensors:
            dim = 0 if depthwise else 1
            assert status[key] in ("copied", "adapted"), key
            pairs = {}
            for index, v in np.ndenumerate(moved[key]):
                if float(v) in at:
                    source, where = at[float(v)]
                    assert source == key
                    pairs.setdefault(index[dim], set()).add(where[dim])
            for i, js in pairs.items():
                assert len(js) == 1, key
                assert want[layer][i] == had[layer][js.pop()], f"{key}: channel {i} got another channel's weights"
                checked += 1
            common = {k for k in want[layer] if k in had[layer]}
            assert {want[layer][i] for i in pairs} == common, f"{key}: a channel in common was not carried over"
    assert checked > 300 and status["stage2.1.branch2.0.weight"] == "adapted"


def test_through_a_reshape_channels_carry_over_only_where_nothing_before_it_changed(tmp_path):
    """The registry gives a reshape no channel map: what its outputs mean is known only where both
    graphs made them from the same channels; elsewhere the layer after it is initialised, honestly
    (a flatten, which has a map, carries the channels both have over)."""
    text = "name: R\ninput: {shape: [3, 4, 4]}\nvariables: {w: 8}\nmodel:\n  conv: {op: conv2d, out: w, kernel: 1}\n"
    fc = "  fc: {op: linear, out: 5}\n"
    for name, flat in (("reshape", "  flat: {op: reshape, shape: [-1]}\n"), ("flatten", "  flat: flatten\n")):
        (tmp_path / f"{name}.yaml").write_text(text + flat + fc)
        parent = nasdsl.compile_spec(tmp_path / f"{name}.yaml")
        weights = _weights(parent.graph)
        same = transfer_weights(parent, weights, tmp_path / f"{name}.yaml")
        assert same.counts()["copied"] == len(weights), name
        narrower = transfer_weights(parent, weights, nasdsl.compile_spec(tmp_path / f"{name}.yaml", {"w": 4}))
        moved = next(m for m in narrower.report if m.key == "fc.weight")
        if name == "reshape":
            assert (moved.status, moved.note) == ("initialised", "the parent's is 5x128, with no channel in common")
        else:  # the first 4 channels' 16 features each, in place
            assert moved.status == "adapted" and np.array_equal(narrower["fc.weight"], weights["fc.weight"][:, :64])


def test_googlenet_to_a_narrower_variant_and_build_model_takes_the_result():
    parent = nasdsl.compile_spec(SPECS / "googlenet.yaml")
    child = nasdsl.compile_spec(SPECS / "googlenet.yaml", ["inception4a.c1x1=160", "aux_logits=false"])
    weights = _weights(parent.graph)
    moved = nasdsl.transfer_weights(parent, weights, child)
    counts = moved.counts()
    assert counts == {"copied": 110, "adapted": 6, "initialised": 0, "dropped": 12}
    # inception4b reads [4a.branch1 (160) | branch2 (208) | branch3 (48) | branch4 (64)]: each keeps its place
    old, new = weights["inception4b.branch1.conv.weight"], moved["inception4b.branch1.conv.weight"]
    assert new.shape == (160, 480, 1, 1)
    assert np.array_equal(new[:, :160], old[:, :160]) and np.array_equal(new[:, 160:], old[:, 192:])
    import torch

    model = nasdsl.build_model(child, weights=moved)
    assert torch.equal(model.state_dict()["inception4b.branch1.conv.weight"], torch.from_numpy(new))


NO_TORCH = """
import sys
from nasdsl.cli import main
code = main(sys.argv[1:])
assert code == 0, code
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
"""


def test_the_command_writes_safetensors_without_torch_and_reports_every_tensor(net, tmp_path):
    parent = nasdsl.compile_spec(net)
    save_file(_weights(parent.graph), tmp_path / "parent.safetensors")
    out = tmp_path / "child.safetensors"
    argv = ["transfer", "--from", str(net), "--weights", str(tmp_path / "parent.safetensors"), "--to", str(net)]
    argv += ["--set", "mix.a=4", "-o", str(out)]
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"transfer {net} ({tmp_path / 'parent.safetensors'}) -> {net}"
    (left,) = [line.split() for line in lines if " mix.left.weight " in line]
    note = "(from 8x8x1x1; dim 0: 8 -> 4; 32 of 32 values carried over)"
    assert " ".join(left) == f"adapted mix.left.weight 4x8x1x1 {note}"
    assert all(line.split()[0] in ("copied", "adapted") for line in lines[1:-2])  # one line per tensor
    assert lines[-2] == "10 copied, 3 adapted, 0 initialised, 0 dropped"
    assert lines[-1].startswith(f"wrote {out} (")
    child = nasdsl.compile_spec(net, {"mix.a": 4})
    written = load_file(out)
    check_weights(child.graph, child.graph, written)
    again = transfer_weights(parent, tmp_path / "parent.safetensors", child)
    assert all(np.array_equal(written[k], again[k]) for k in again)  # deterministic: the same seed, the same values


def test_the_command_writes_pt_reports_json_and_refuses(net, tmp_path, capsys):
    import torch

    parent = nasdsl.compile_spec(net)
    torch.save({k: torch.from_numpy(v) for k, v in _weights(parent.graph).items()}, tmp_path / "parent.pt")
    base = ["transfer", "--from", str(net), "--weights", str(tmp_path / "parent.pt"), "--to", str(net)]
    assert main([*base, "--set", "w=4", "-o", str(tmp_path / "child.pt"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"copied": 2, "adapted": 11, "initialised": 0, "dropped": 0}
    copied = [t["key"] for t in report["tensors"] if t["status"] == "copied"]
    assert copied == ["mix.right.1.num_batches_tracked", "fc.bias"]
    model = nasdsl.build_model(net, weights=tmp_path / "child.pt", w=4)
    assert model.state_dict()["stem.weight"].shape == (4, 3, 3, 3)
    # --strict, a format it cannot tell, the child given twice: exit 2, nothing written
    assert main([*base, "--set", "w=4", "-o", str(tmp_path / "strict.pt"), "--strict"]) == 2
    assert "--strict: 11 tensors are not copied as they are" in capsys.readouterr().err
    assert not (tmp_path / "strict.pt").exists()
    assert main([*base, "-o", str(tmp_path / "child.npz")]) == 2
    assert "expected a name ending in .safetensors or .pt" in capsys.readouterr().err
    assert main(["transfer", str(SPECS / "googlenet.yaml"), *base[1:], "-o", str(tmp_path / "x.pt")]) == 2
    assert "the child spec is given twice" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_narrow_floats_in_safetensors_read_as_torch_widens_them(tmp_path, net, dtype):
    """A bfloat16 or 8-bit float .safetensors file loads (numpy has none of them), to the values
    torch's own widening gives, as the torch.save file of the same tensors does; the extension is
    read in any case, as files are written."""
    import torch
    from safetensors.torch import save_file as save_torch

    from nasdsl.weights import load_weights

    drawn = {k: torch.from_numpy(v) for k, v in initial_weights(nasdsl.compile_spec(net).graph).items()}
    narrow = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in drawn.items()}
    save_torch(narrow, tmp_path / "w.SafeTensors")
    torch.save(narrow, tmp_path / "w.pt")
    read, saved = load_weights(tmp_path / "w.SafeTensors"), load_weights(tmp_path / "w.pt")
    assert read.keys() == narrow.keys()
    for k, v in narrow.items():
        assert read[k].dtype == (np.float32 if v.is_floating_point() else np.int64)
        np.testing.assert_array_equal(read[k], v.to(torch.float32 if v.is_floating_point() else torch.int64).numpy())
        np.testing.assert_array_equal(read[k], np.asarray(saved[k].float() if v.is_floating_point() else saved[k]))


def test_a_checkpoint_of_the_training_script_is_read_as_its_models_state_dict(tmp_path, net, capsys):
    """examples/train.py's last.pt (the model's state_dict beside the optimizer's, the schedule's
    and the counters) is taken by --weights as its model entry: compile --weights gives the same
    ONNX bytes as from the bare state_dict. A dict with only some of those keys is no checkpoint of
    the script, and stays refused."""
    import torch

    from nasdsl.cli import main
    from nasdsl.weights import TRAIN_CHECKPOINT_KEYS, load_weights

    state = {k: torch.from_numpy(v) for k, v in initial_weights(nasdsl.compile_spec(net).graph, seed=3).items()}
    ckpt = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 2}}
    ckpt |= {"epoch": 2, "batch": 0, "step": 40}
    assert set(ckpt) == set(TRAIN_CHECKPOINT_KEYS)
    torch.save(ckpt, tmp_path / "last.pt")
    torch.save(state, tmp_path / "sd.pt")
    read = load_weights(tmp_path / "last.pt")
    assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    for name in ("last", "sd"):
        argv = ["compile", str(net), "-o", str(tmp_path / f"{name}.onnx"), "--weights", str(tmp_path / f"{name}.pt")]
        assert main(argv) == 0
    capsys.readouterr()
    assert (tmp_path / "last.onnx").read_bytes() == (tmp_path / "sd.onnx").read_bytes()
    # docs/training.md's command, run on this spec and checkpoint
    (line,) = [ln for ln in (ROOT / "docs" / "training.md").read_text().splitlines() if ln.startswith("nasdsl compile")]
    argv = line.split()[1:]
    argv[argv.index("compile") + 1] = str(net)
    argv[argv.index("--set") + 1] = "classes=10"  # (the net's own value: the same model)
    argv[argv.index("-o") + 1] = str(tmp_path / "doc.onnx")
    argv[argv.index("--weights") + 1] = str(tmp_path / "last.pt")
    assert main(argv) == 0 and (tmp_path / "doc.onnx").read_bytes() == (tmp_path / "sd.onnx").read_bytes()
    capsys.readouterr()
    del ckpt["optimizer"]
    torch.save(ckpt, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match="for a checkpoint, save its state_dict alone"):
        load_weights(tmp_path / "partial.pt")


def test_a_counter_with_fractions_is_refused(net):
    """An int64 buffer (BatchNorm's num_batches_tracked) given floats is taken when they are whole
    numbers (a state_dict made with .half() on every tensor), refused when not, never truncated."""
    graph = nasdsl.compile_spec(net).graph
    weights = dict(initial_weights(graph))
    weights["mix.right.1.num_batches_tracked"] = np.array(2.0, dtype=np.float16)
    moved = transfer_weights(graph, weights, graph)
    assert moved["mix.right.1.num_batches_tracked"].dtype == np.int64
    assert moved["mix.right.1.num_batches_tracked"] == 2
    weights["mix.right.1.num_batches_tracked"] = np.array(1.5)
    expected = r"num_batches_tracked \(expected integers \(int64\), found float64 values that are not whole numbers\)"
    with pytest.raises(WeightsError, match=expected):
        check_weights(graph, graph, weights)


def test_an_ensemble_parent_is_refused_before_its_weights_are_read(tmp_path, net, capsys):
    """The child side refuses an ensemble; so does the parent side, at --from, before any file is read or written."""
    team = tmp_path / "team.yaml"
    team.write_text("nasdsl: 1\nname: Team\nensemble:\n  members:\n    a: net.yaml\n    b: net.yaml\n")
    out = tmp_path / "o.safetensors"
    args = ["transfer", "--from", str(team), "--weights", str(tmp_path / "absent.pt"), "--to", str(net), "-o", str(out)]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: --from: the parent {team} is an ensemble; weights are transferred between model specs: "
        "run it on a member's spec\n"
    )
    assert not out.exists()
    with pytest.raises(nasdsl.errors.UsageError, match="the child .*team.yaml is an ensemble"):
        transfer_weights(net, str(tmp_path / "absent.pt"), team)


def test_the_format_check_reads_any_header_length_and_the_legacy_torch_format(tmp_path, net):
    """A safetensors header length whose first byte is 0x80 (what a pickle starts with) is still
    safetensors; a torch.save file in the legacy (non-zip) format is still torch."""
    import torch
    from safetensors.numpy import save

    from nasdsl.weights import load_weights

    drawn = initial_weights(nasdsl.compile_spec(net).graph)
    data = next(
        d for k in range(300) if (d := save(drawn, metadata={"pad": "x" * k}))[0] == 0x80
    )  # the header's length is 0x80 modulo 256
    (tmp_path / "w.safetensors").write_bytes(data)
    torch.save(
        {k: torch.from_numpy(v) for k, v in drawn.items()}, tmp_path / "w.pt", _use_new_zipfile_serialization=False
    )
    for name in ("w.safetensors", "w.pt"):
        read = load_weights(tmp_path / name)
        assert read.keys() == drawn.keys()
        assert all(np.array_equal(np.asarray(read[k]), drawn[k]) for k in drawn), name


def test_a_wrapped_models_prefix_is_named(net):
    """Keys saved from a wrapper (DistributedDataParallel's "module.") get a line naming the prefix;
    a file where only some keys carry it gets none."""
    graph = nasdsl.compile_spec(net).graph
    drawn = initial_weights(graph)
    wrapped = {f"module.{k}": v for k, v in drawn.items()}
    with pytest.raises(
        WeightsError, match=r"\n  every unexpected key is a key of the model behind the prefix 'module.'"
    ):
        check_weights(graph, graph, wrapped)
    with pytest.raises(WeightsError, match=r"none of its 13 tensors .*; every unexpected key .* prefix 'module.'"):
        nasdsl.weights.fit_weights(graph, wrapped)
    with pytest.raises(WeightsError) as info:
        check_weights(graph, graph, {**wrapped, "other.weight": drawn["fc.weight"]})
    assert "prefix" not in str(info.value)


def test_a_weights_option_names_its_file_and_checks_each_ensemble_member(tmp_path, net, capsys):
    """--weights that does not fit is reported at --weights with the file's name; an ensemble's
    whole state_dict is checked member by member under each member's prefix."""
    from safetensors.numpy import save_file

    drawn = initial_weights(nasdsl.compile_spec(net).graph)
    save_file({**drawn, "fc.bias": np.zeros(3, np.float32)}, tmp_path / "w.safetensors")
    assert main(["verify", str(net), "--weights", str(tmp_path / "w.safetensors")]) == 2
    assert capsys.readouterr().err == (
        f"error: --weights: '{tmp_path / 'w.safetensors'}' does not fit Net:\n"
        "  wrong (1): fc.bias (expected 10, found 3)\n"
    )
    team = tmp_path / "team.yaml"
    team.write_text("nasdsl: 1\nname: Team\nensemble:\n  members:\n    a: net.yaml\n    b: net.yaml\n")
    both = {**{f"a.{k}": v for k, v in drawn.items()}, **{f"b.{k}": v for k, v in drawn.items()}}
    save_file({**both, "b.fc.weight": np.zeros((3, 3), np.float32)}, tmp_path / "team.safetensors")
    assert main(["verify", str(team), "--weights", str(tmp_path / "team.safetensors")]) == 2
    assert (
        "' (its keys b.*) does not fit Net:\n  wrong (1): fc.weight (expected 10x24, found 3x3)\n"
        in capsys.readouterr().err
    )


def test_a_weights_file_above_the_default_limit_is_refused_unread(tmp_path):
    """8 GiB (nasdsl.weights.MAX_MEMORY) is the default limit of every reader of weights files."""
    from nasdsl.weights import MAX_MEMORY, load_weights

    with open(tmp_path / "w.safetensors", "wb") as f:
        f.truncate(MAX_MEMORY + 1)  # takes no disk space; never read
    with pytest.raises(WeightsError, match="the file is 8.0 GiB, above the limit of 8.0 GiB"):
        load_weights(tmp_path / "w.safetensors")
