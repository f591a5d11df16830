"""Where things are, for the tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DATA = ROOT / "tests" / "data"


#: input sizes tried, smallest first, for tests that only need a spec's structure to run
#: (a fixed pooling window or a fixed classifier input needs a larger one)
SMALL_SIZES = (32, 64, 96, 160, 224, 299)


def compile_small(spec: Path):
    """``spec`` compiled at the smallest square input in :data:`SMALL_SIZES` it accepts
    (the weights do not depend on the input size where a spec accepts several)."""
    import nasdsl

    return nasdsl.compile_spec(spec, small_overrides(spec))


#: for the tests of structure alone, the overrides of specs whose fixed window needs a large input:
#: S3D's final 2x7x7 average pooling needs a clip of 13x209x209 (14.8 GMACs); with a window of 1x1x1
#: it takes a 16x32x32 clip (0.37 GMACs), and the scores' mean over time still has 2 positions.
#: MaxViT's 7x7 partitions need 224x224 (5.6 GMACs); partitions of 2x2 take 64x64 (0.44 GMACs),
#: with every stage's block and grid attention still over several positions (its spec's note)
STRUCTURE_OVERRIDES = {
    "s3d": {"frames": 16, "size": 32, "avgpool.kernel": [1, 1, 1]},
    "maxvit_t": {"image_size": 64, "partition_size": 2},
}


def small_overrides(spec: Path) -> dict:
    """The ``--set`` overrides :func:`compile_small` compiles ``spec`` with (none where the
    spec accepts no smaller input)."""
    spec = Path(spec)
    if spec.stem in STRUCTURE_OVERRIDES:
        return dict(STRUCTURE_OVERRIDES[spec.stem])
    if spec not in _SMALL:
        _SMALL[spec] = _find_small(spec)
    return dict(_SMALL[spec])


def _find_small(spec: Path) -> dict:
    import nasdsl
    from nasdsl import ir
    from nasdsl.errors import NasdslError

    compiled = nasdsl.compile_spec(spec)
    graph = compiled.graph
    t = ir.node(graph, ir.info(graph).input).type
    for size in SMALL_SIZES:  # every height and width `size`, time at most 4 frames, the rest kept
        shape = [size if a in "HW" else min(d, 4) if a == "T" else d for d, a in zip(t.shape, t.axes, strict=True)]
        # the shape itself, or the variables it is written with (MViT's grid follows `frames` and `size`)
        for overrides in ({"input.shape": shape}, _shape_variables(compiled.spec.input.shape, shape)):
            try:
                if overrides:
                    nasdsl.compile_spec(spec, overrides)
                    return overrides
            except NasdslError:
                continue
    return {}


def _shape_variables(written, shape: list) -> dict:
    """The variables that set ``shape`` where the spec writes each size of its input as a number or
    one variable's name (``[3, frames, size, size]``); ``{}`` where it writes any other way."""
    out: dict = {}
    for item, size in zip(written.items or (), shape, strict=False):
        if item.expr is None:
            if item.raw != size:
                return {}
        elif item.expr.source.strip() in item.expr.names and out.get(item.expr.source.strip(), size) == size:
            out[item.expr.source.strip()] = size
        else:
            return {}
    return out


_SMALL: dict = {}
