"""A small reader for Caffe prototxt files: just enough to derive the
parameter shapes of a network as an independent reference for the tests."""

from __future__ import annotations

import re
from pathlib import Path

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([A-Za-z_][A-Za-z0-9_]*)\s*(:)?|(\{)|(\})|("(?:[^"\\]|\\.)*")|([^\s{}"#]+))')


def parse(text: str) -> dict:
    """Parse prototxt into nested dicts; every field maps to a list of values."""
    stack: list[dict] = [{}]
    key = None
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        comment, word, colon, open_, close, string, scalar = m.groups()
        if comment:
            continue
        if word and key is None:
            key = word
            if colon:
                continue
            continue
        if open_:
            child: dict = {}
            stack[-1].setdefault(key, []).append(child)
            stack.append(child)
            key = None
        elif close:
            stack.pop()
        else:
            value = string[1:-1] if string else (word or scalar)
            stack[-1].setdefault(key, []).append(value)
            key = None
    return stack[0]


def _window(size: int, p: dict, ceil: bool) -> int:
    k = int(p.get("kernel_size", ["1"])[0])
    stride = int(p.get("stride", ["1"])[0])
    pad = int(p.get("pad", ["0"])[0])
    span = size + 2 * pad - k
    out = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def parameter_shapes(path: str | Path, image: int = 224) -> dict[str, tuple[int, ...]]:
    """``{"layer/name.weight": shape, "layer/name.bias": shape}`` for every
    Convolution and InnerProduct layer, following blob shapes (C, H, W) through
    the net: convolutions round down, pooling rounds up (Caffe's rules)."""
    net = parse(Path(path).read_text())
    blobs: dict[str, tuple[int, ...]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in net["layer"]:
        kind = layer["type"][0]
        bottoms, tops = layer.get("bottom", []), layer.get("top", [])
        if kind == "Data":
            blobs[tops[0]] = (3, image, image)
            continue
        name = layer["name"][0]
        src = blobs.get(bottoms[0]) if bottoms else None
        if kind == "Convolution":
            p = layer["convolution_param"][0]
            out = int(p["num_output"][0])
            k = int(p["kernel_size"][0])
            group = int(p.get("group", ["1"])[0])
            shapes[f"{name}.weight"] = (out, src[0] // group, k, k)
            shapes[f"{name}.bias"] = (out,)
            blobs[tops[0]] = (out, _window(src[1], p, False), _window(src[2], p, False))
        elif kind == "Pooling":
            p = layer["pooling_param"][0]
            blobs[tops[0]] = (src[0], _window(src[1], p, True), _window(src[2], p, True))
        elif kind == "InnerProduct":
            out = int(layer["inner_product_param"][0]["num_output"][0])
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
