"""The op registry: everything nasdsl knows about each primitive op, in one entry.

An entry (:class:`OpDef`, ``nasdsl/ops/core.py``) holds the op's attribute
schema with defaults, its shape rule over tensors of any rank, its parameters,
its multiply-add count, the facts passes and tools read (element-wise, how
channels map from input to output, which parameters count fans) and, filled in
by the backends, its lowerings. Adding an op is adding one entry to
:data:`OPS` in the module of its family; the backends then need one lowering
each. ``docs/spec-language.md`` lists every op with its attributes.

==================  ================================================================
module              ops
==================  ================================================================
``conv``            ``conv1d`` ``conv2d`` ``conv3d``, ``max_pool[1d|3d]``,
                    ``avg_pool[1d|3d]``, ``adaptive_avg_pool[1d|3d]``,
                    ``global_avg_pool``, ``batch_norm``, ``lrn``
``conv_transpose``  ``conv_transpose1d`` ``conv_transpose2d`` ``conv_transpose3d``
``elementwise``     ``relu`` ``relu6`` ``sigmoid`` ``tanh`` ``silu`` ``gelu``
                    ``hardswish`` ``hardsigmoid``, ``dropout``, ``stochastic_depth``,
                    ``layer_scale``, ``identity``
``tensor``          ``flatten`` ``reshape`` ``permute`` ``transpose`` ``slice``
                    ``select`` ``roll`` ``pad`` ``channel_shuffle`` ``parameter``
                    ``constant`` ``interpolate`` ``interpolate_like``
``linear``          ``linear`` ``layer_norm`` ``softmax`` ``attention``
``merge``           ``concat`` ``add`` ``mul`` ``mean`` ``matmul``
``partition``       ``partition_attention`` (MaxViT's block and grid attention)
``window``          ``window_attention`` ``patch_merging`` ``pad_to_multiple``
``multiscale``      ``pooling_attention``, ``positional_encoding`` (MViT)
``norms_activations`` ``leaky_relu`` ``elu`` ``prelu``, ``group_norm`` ``instance_norm``
``more_ops``        ``pixel_shuffle`` ``pixel_unshuffle``, ``adaptive_max_pool[1d|3d]``, ``clamp``,
                    ``softplus`` ``mish`` ``selu`` ``log_softmax``
==================  ================================================================

Multiply-adds count convolutions (output elements x input channels per group x
window), transposed ones (input elements x output channels per group x window),
fully connected layers (positions x in x out), matrix products and
attention (its projections and its two products), window attention
(the same per window, padding included), pooling attention (also its pooling
convolutions and relative positions); everything else counts zero, as in the
paper and in torchvision's figures.
"""

from nasdsl.ops import (  # noqa: F401 - they register their ops
    conv,
    conv_transpose,
    elementwise,
    ensemble,
    linear,
    merge,
    more_ops,
    multiscale,
    norms_activations,
    partition,
    tensor,
    window,
)
from nasdsl.ops.core import (
    BACKENDS,
    BACKENDS_SHOWN,
    MAX_CHANNELS,
    MAX_RANK,
    MAX_WINDOW,
    OPS,
    REFUSED,
    REQUIRED,
    Attr,
    OpDef,
    Weight,
    check_int,
    describe,
    lowering,
    lowering_of,
    same_padding,
    window_out,
)

OPS["opaque"].lowerings.update(dict.fromkeys(BACKENDS, REFUSED))  # no backend writes it: lowering_of says why

#: ops that merge branches (written ``{concat: ...}`` or ``{add: ...}`` in a spec)
MERGE_OPS = tuple(name for name, op in OPS.items() if op.merge and op.spec)
#: the ops a spec may write (``{op: ...}``, or a merge)
SPEC_OPS = tuple(name for name, op in OPS.items() if op.spec)
#: for each op with learned parameters, the names a spec's ``init`` section can set
INIT_PARAMS: dict[str, tuple[str, ...]] = {name: op.init_params for name, op in OPS.items() if op.init_params}

__all__ = [
    "BACKENDS",
    "BACKENDS_SHOWN",
    "INIT_PARAMS",
    "MAX_CHANNELS",
    "MAX_RANK",
    "MAX_WINDOW",
    "MERGE_OPS",
    "OPS",
    "REFUSED",
    "REQUIRED",
    "SPEC_OPS",
    "Attr",
    "OpDef",
    "Weight",
    "check_int",
    "describe",
    "lowering",
    "lowering_of",
    "same_padding",
    "window_out",
]
