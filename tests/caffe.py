"""Caffe's parameter shapes for bvlc_googlenet, derived the way Caffe derives them, as an
independent reference for the tests.

The net's layers come from tests/data/bvlc_googlenet_layers.txt, a table transcribed from
bvlc_googlenet's train_val.prototxt (its header says how); the shapes are not in that file:
they are computed here by following blob shapes through the layers."""

from __future__ import annotations

from pathlib import Path

from paths import DATA

LAYERS = DATA / "bvlc_googlenet_layers.txt"
COLUMNS = ["name", "type", "phase", "outputs", "kernel", "stride", "pad", "pool", "tops", "bottoms"]


def layers(path: str | Path = LAYERS) -> list[dict]:
    """The table's rows, in order: ``{"name": ..., "tops": [...], "bottoms": [...], "kernel": 3, ...}``,
    with ``None`` for a field the layer does not set ("-")."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert lines[0].split() == COLUMNS, lines[0]
    rows = []
    for line in lines[1:]:
        cells = line.split()
        assert len(cells) == len(COLUMNS), line
        row: dict = {k: None if v == "-" else v for k, v in zip(COLUMNS, cells, strict=True)}
        for k in ("outputs", "kernel", "stride", "pad"):
            if row[k] is not None:
                row[k] = int(row[k])
        for k in ("tops", "bottoms"):
            row[k] = row[k].split(",") if row[k] else []
        rows.append(row)
    return rows


def _window(size: int, layer: dict, ceil: bool) -> int:
    k = layer["kernel"] or 1
    stride = layer["stride"] or 1
    pad = layer["pad"] or 0
    span = size + 2 * pad - k
    out = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def parameter_shapes(path: str | Path = LAYERS, image: int = 224) -> dict[str, tuple[int, ...]]:
    """``{"layer/name.weight": shape, "layer/name.bias": shape}`` for every
    Convolution and InnerProduct layer, following blob shapes (C, H, W) through
    the net: convolutions round down, pooling rounds up (Caffe's rules)."""
    blobs: dict[str, tuple[int, ...]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in layers(path):
        kind, name = layer["type"], layer["name"]
        bottoms, tops = layer["bottoms"], layer["tops"]
        if kind == "Data":
            blobs[tops[0]] = (3, image, image)
            continue
        src = blobs.get(bottoms[0]) if bottoms else None
        if kind == "Convolution":
            out, k = layer["outputs"], layer["kernel"]
            shapes[f"{name}.weight"] = (out, src[0], k, k)
            shapes[f"{name}.bias"] = (out,)
            blobs[tops[0]] = (out, _window(src[1], layer, False), _window(src[2], layer, False))
        elif kind == "Pooling":
            blobs[tops[0]] = (src[0], _window(src[1], layer, True), _window(src[2], layer, True))
        elif kind == "InnerProduct":
            out = layer["outputs"]
            fan_in = 1
            for d in src:
                fan_in *= d
            shapes[f"{name}.weight"] = (out, fan_in)
            shapes[f"{name}.bias"] = (out,)
            blobs[tops[0]] = (out,)
        elif kind == "Concat":
            first = blobs[bottoms[0]]
            blobs[tops[0]] = (sum(blobs[b][0] for b in bottoms), *first[1:])
        elif src is not None:
            for top in tops:
                blobs[top] = src
    return shapes
