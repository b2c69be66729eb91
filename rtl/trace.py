"""The whole network as one da4ml shift-and-add graph, traced from the hls4ml
model graph with the types hls4ml gives every layer, so the Verilog da4ml
emits computes what hls4ml's distributed-arithmetic C simulation computes,
bit for bit.

da4ml's own converter takes Keras 3 models only, so tf_keras and QKeras
models are traced here, layer by layer: a Dense layer is the exact constant
matrix product plus bias (what hls4ml's DA kernel computes), then the cast to
the layer's result type; an activation is its function, then its cast. da4ml
rounds half up (AP_RND) or truncates (AP_TRN); AP_RND_CONV, the rounding of
QKeras' quantisers, is built from those (:func:`cast`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepprune.core.fixedpoint import FixedPoint
from hepprune.ptq import emulate
from hepprune.ptq.emulate import Unsupported


class RtlError(Unsupported):
    """A model or setting the RTL path cannot express."""


def fixed_of(precision: Any, where: str) -> FixedPoint:
    """The FixedPoint of an hls4ml precision type, refusing what da4ml cannot build."""
    return emulate.fixed_of(precision, where, RtlError)


def cast(v: Any, t: FixedPoint) -> Any:
    """A da4ml FixedVariableArray converted to ``t`` as an ap_fixed assignment does.

    AP_RND_CONV (half to even) from truncation: with q the target step and s
    the finest step present, TRN(x + q/2 - s + b*s), b the bit of x at q's
    weight. A remainder of exactly q/2 then rounds up only when b = 1 (odd).
    """
    k, i, f = t.kif
    overflow = t.overflow.removeprefix("AP_")
    if t.rounding == "AP_RND_CONV":
        q = 2.0 ** -f
        s = float(np.min(v.lhs[2]))
        if s < q:  # bits below q exist: round them
            odd = v.quantize(k=0, i=-f + 1, f=f, overflow_mode="WRAP", round_mode="TRN")  # b * q
            v = v + (q / 2 - s) + odd * (s / q)
        return v.quantize(k=k, i=i, f=f, overflow_mode=overflow, round_mode="TRN")
    return v.quantize(k=k, i=i, f=f, overflow_mode=overflow, round_mode=t.rounding.removeprefix("AP_"))


def _result(layer: Any) -> FixedPoint:
    return emulate.result_type(layer, RtlError)


def _weights(layer: Any, name: str) -> np.ndarray | None:
    """A layer's weights on its weight type's grid (DA builds the values it is given)."""
    return emulate.weights_on_grid(layer, name, RtlError)


def input_type(graph: Any) -> FixedPoint:
    """The firmware's input type: inputs reach the RTL on this grid."""
    return _result(next(iter(graph.get_layers())))


def _apply(v: Any, layer: Any) -> Any:
    """One hls4ml layer on the traced values ``v``: its arithmetic, then the cast to its result type."""
    if layer.class_name == "Dense":
        kernel = _weights(layer, "weight")
        assert kernel is not None
        v = v @ kernel.reshape(-1, kernel.shape[-1])
        bias = _weights(layer, "bias")
        if bias is not None and np.any(bias):
            v = v + bias.ravel()
    elif emulate.activation_of(layer) == "relu":
        v = v.relu()
    return cast(v, _result(layer))


def _inputs(kif: Any, options: dict) -> Any:
    from da4ml.trace import FixedVariableArray, HWConfig  # noqa: PLC0415 - deferred: numba (~2 s)

    k, i, f = (np.asarray(a) for a in kif)
    return FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1), solver_options=options)


def trace_graph(graph: Any, solver_options: dict | None = None) -> Any:
    """The da4ml combinational logic (``CombLogic``) of a converted hls4ml
    ``ModelGraph`` of Dense layers and ReLU/linear activations; any other layer
    is refused by name."""
    return trace_layers(graph, solver_options, per_layer=False)[0][1]


def trace_layers(graph: Any, solver_options: dict | None = None, per_layer: bool = True) -> list[tuple[str, Any]]:
    """("network", the whole network's CombLogic), then with ``per_layer`` one
    (Dense layer name, CombLogic) per Dense layer with the activations after
    it, each taking exactly the values the layer before it can produce: the
    pieces whose synthesis gives per-layer costs."""
    from da4ml.trace import comb_trace  # noqa: PLC0415 - deferred: numba (~2 s)

    layers = list(graph.get_layers())
    emulate.check_layers(layers, RtlError)
    options = {"hard_dc": 2, **(solver_options or {})}
    n_in = int(np.prod(layers[0].get_output_variable().shape))
    k, i, f = _result(layers[0]).kif
    inp = _inputs((np.full(n_in, k), np.full(n_in, i), np.full(n_in, f)), options)
    groups: list[tuple[str, list[Any]]] = []
    for layer in layers[1:]:
        if layer.class_name == "Dense" or not groups:
            groups.append((layer.name, []))
        groups[-1][1].append(layer)
    v = inp
    boundaries = []  # the values entering each group
    for _, members in groups:
        boundaries.append(v)
        for layer in members:
            v = _apply(v, layer)
    out = [("network", comb_trace(inp, v))]
    if per_layer:
        for (name, members), before in zip(groups, boundaries):
            start = _inputs(before.kif, options)
            w = start
            for layer in members:
                w = _apply(w, layer)
            out.append((name, comb_trace(start, w)))
    return out
