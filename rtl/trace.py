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

from hepprune.core.errors import HepPruneError
from hepprune.core.fixedpoint import EMULATED_OVERFLOW, EMULATED_ROUNDING, FixedPoint, parse_fixed, quantise

TRACED = ("Input", "Dense", "Activation", "ReLU")  # hls4ml layer classes the trace expresses
TRACED_ACTIVATIONS = ("relu", "linear")


class RtlError(HepPruneError):
    """A model or setting the RTL path cannot express."""


def fixed_of(precision: Any, where: str) -> FixedPoint:
    """The FixedPoint of an hls4ml precision type, refusing what da4ml cannot build."""
    text = precision.definition_cpp() if hasattr(precision, "definition_cpp") else str(precision)
    t = parse_fixed(text)
    if t is None:
        raise RtlError(f"{where}: type {text} is not ap_fixed/ap_ufixed; distributed arithmetic needs fixed point")
    if t.rounding not in EMULATED_ROUNDING or t.overflow not in EMULATED_OVERFLOW:
        raise RtlError(f"{where}: type {t} uses {t.rounding}/{t.overflow}; the RTL path builds "
                       f"{', '.join(EMULATED_ROUNDING)} with {', '.join(EMULATED_OVERFLOW)}")
    return t


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
    return fixed_of(layer.get_output_variable().type.precision, f"layer {layer.name}")


def _weights(layer: Any, name: str) -> np.ndarray | None:
    """A layer's weights on its weight type's grid (DA builds the values it is given)."""
    w = layer.get_weights(name) if name in layer.weights else None
    if w is None or w.data is None:
        return None
    return quantise(np.asarray(w.data, dtype=np.float64), fixed_of(w.type.precision, f"layer {layer.name} {name}"))


def input_type(graph: Any) -> FixedPoint:
    """The firmware's input type: inputs reach the RTL on this grid."""
    return _result(next(iter(graph.get_layers())))


def trace_graph(graph: Any, solver_options: dict | None = None) -> Any:
    """The da4ml combinational logic (``CombLogic``) of a converted hls4ml
    ``ModelGraph`` of Dense layers and ReLU/linear activations; any other layer
    is refused by name."""
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace  # noqa: PLC0415 - deferred: numba (~2 s)

    layers = list(graph.get_layers())
    for layer in layers:
        activation = str(layer.get_attr("activation", "linear")).lower()
        if layer.class_name not in TRACED or (layer.class_name != "Dense" and layer.class_name != "Input"
                                              and activation not in TRACED_ACTIVATIONS):
            what = layer.class_name + (f" '{activation}'" if layer.class_name in ("Activation", "ReLU") else "")
            raise RtlError(f"layer {layer.name} ({what}) cannot be expressed in distributed arithmetic here; "
                           f"the RTL path builds Dense layers with ReLU or linear activations")
    first = layers[0]
    if first.class_name != "Input":
        raise RtlError(f"the model graph starts with {first.name} ({first.class_name}), not its input")
    n_in = int(np.prod(first.get_output_variable().shape))
    k, i, f = _result(first).kif
    options = {"hard_dc": 2, **(solver_options or {})}
    inp = FixedVariableArray.from_kif(np.full(n_in, k), np.full(n_in, i), np.full(n_in, f), HWConfig(1, -1, -1),
                                      solver_options=options)
    v = inp
    for layer in layers[1:]:
        if layer.class_name == "Dense":
            kernel = _weights(layer, "weight")
            assert kernel is not None
            v = v @ kernel.reshape(-1, kernel.shape[-1])
            bias = _weights(layer, "bias")
            if bias is not None and np.any(bias):
                v = v + bias.ravel()
        elif str(layer.get_attr("activation")).lower() == "relu":
            v = v.relu()
        v = cast(v, _result(layer))
    return comb_trace(inp, v)
