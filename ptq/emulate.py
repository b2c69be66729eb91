"""Bit-exact emulation of hls4ml firmware in numpy, without a compiler.

The C simulation's cost is g++, not arithmetic: about 2.7 s of build per
bit-width scan point against 0.19 s of simulation. For the networks the
RTL path builds (Dense layers, ReLU or linear activations) every value the
firmware holds is a fixed-point number, so numpy computes the same thing
exactly: inputs on the input type's grid, each Dense layer's sum in exact
integers (hls4ml's "auto" accumulator, or any accumulator wide enough to
hold it), then each layer's cast to its result type with its rounding and
overflow modes (:func:`hepprune.core.fixedpoint.quantise`). The types are
read from the converted hls4ml graph, so layers hls4ml inserts (a linear
output activation, say) are emulated with the types hls4ml gives them.

A graph with anything else (convolutions, other activations, a narrower
accumulator that could wrap) is refused with :class:`Unsupported`, and the
caller compiles it instead. The bit-width scan checks every chosen point
against the real C simulation, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepprune.core.errors import HepPruneError
from hepprune.core.fixedpoint import EMULATED_OVERFLOW, EMULATED_ROUNDING, FixedPoint, parse_fixed, quantise

LAYERS = ("Input", "Dense", "Activation", "ReLU")  # hls4ml layer classes emulated (and traced into RTL)
ACTIVATIONS = ("relu", "linear")
EXACT_BITS = 52  # integer sums up to this magnitude convert to float64 exactly


class Unsupported(HepPruneError):
    """A graph or type the emulation (and the RTL trace) cannot express."""


def fixed_of(precision: Any, where: str, error: type[HepPruneError] = Unsupported) -> FixedPoint:
    """The FixedPoint of an hls4ml precision type, refusing what is not ap_fixed
    with emulated modes; ``error`` is the exception class to raise."""
    text = precision.definition_cpp() if hasattr(precision, "definition_cpp") else str(precision)
    t = parse_fixed(text)
    if t is None:
        raise error(f"{where}: type {text} is not ap_fixed/ap_ufixed; distributed arithmetic needs fixed point")
    if t.rounding not in EMULATED_ROUNDING or t.overflow not in EMULATED_OVERFLOW:
        raise error(f"{where}: type {t} uses {t.rounding}/{t.overflow}; the RTL path builds "
                    f"{', '.join(EMULATED_ROUNDING)} with {', '.join(EMULATED_OVERFLOW)}")
    return t


def result_type(layer: Any, error: type[HepPruneError] = Unsupported) -> FixedPoint:
    return fixed_of(layer.get_output_variable().type.precision, f"layer {layer.name}", error)


def weights_on_grid(layer: Any, name: str, error: type[HepPruneError] = Unsupported) -> np.ndarray | None:
    """A layer's weights (``weight`` or ``bias``) on their type's grid: the values the firmware holds."""
    w = layer.get_weights(name) if name in layer.weights else None
    if w is None or w.data is None:
        return None
    return quantise(np.asarray(w.data, dtype=np.float64), fixed_of(w.type.precision, f"layer {layer.name} {name}",
                                                                   error))


def activation_of(layer: Any) -> str:
    return str(layer.get_attr("activation", "linear")).lower()


def check_layers(layers: list[Any], error: type[HepPruneError] = Unsupported) -> None:
    """Refuse, by name, the first layer that is not Input, Dense or a ReLU/linear activation."""
    for layer in layers:
        if layer.class_name not in LAYERS or (layer.class_name not in ("Dense", "Input")
                                              and activation_of(layer) not in ACTIVATIONS):
            what = layer.class_name + (f" '{activation_of(layer)}'" if layer.class_name in ("Activation", "ReLU")
                                       else "")
            raise error(f"layer {layer.name} ({what}) cannot be expressed in distributed arithmetic here; "
                        f"the RTL path builds Dense layers with ReLU or linear activations")
    if layers[0].class_name != "Input":
        raise error(f"the model graph starts with {layers[0].name} ({layers[0].class_name}), not its input")


def _dense(layer: Any, x: np.ndarray, x_type: FixedPoint) -> np.ndarray:
    """The exact sum W.x + b in integers (scaled by 2^frac), then as float64."""
    kernel = weights_on_grid(layer, "weight")
    bias = weights_on_grid(layer, "bias")
    assert kernel is not None
    kernel = kernel.reshape(-1, kernel.shape[-1])
    w_frac = fixed_of(layer.get_weights("weight").type.precision, f"layer {layer.name} weight").fractional
    b_frac = fixed_of(layer.get_weights("bias").type.precision, f"layer {layer.name} bias").fractional \
        if bias is not None else 0
    frac = max(x_type.fractional + w_frac, b_frac)
    x_int = np.rint(np.ldexp(x, x_type.fractional)).astype(np.int64)
    w_int = np.rint(np.ldexp(kernel, w_frac)).astype(np.int64)
    bound = np.abs(x_int).max(initial=0) * np.abs(w_int).sum(axis=0).max(initial=0)
    if bound >= 2 ** (EXACT_BITS - (frac - x_type.fractional - w_frac)):
        raise Unsupported(f"layer {layer.name}: sums of {int(bound).bit_length()} bits exceed exact emulation")
    acc = (x_int @ w_int) << (frac - x_type.fractional - w_frac)
    if bias is not None:
        acc = acc + np.rint(np.ldexp(bias.ravel(), frac)).astype(np.int64)
    accum = layer.get_attr("accum_t")
    if accum is not None:  # a narrower accumulator than the exact sum would wrap or round: not emulated
        a = fixed_of(accum.precision, f"layer {layer.name} accum")
        lo, hi = a.bounds
        if a.fractional < frac or np.ldexp(acc.min(initial=0), -frac) < lo or np.ldexp(acc.max(initial=0), -frac) > hi:
            raise Unsupported(f"layer {layer.name}: accumulator {a} is narrower than the exact sum")
    return np.ldexp(acc.astype(np.float64), -frac)


def events_differing(a: np.ndarray, b: np.ndarray) -> int:
    """Events (rows) whose outputs are not identical."""
    return int(np.count_nonzero(np.any(a.reshape(len(a), -1) != b.reshape(len(b), -1), axis=1)))


def emulate(graph: Any, x: np.ndarray) -> np.ndarray:
    """The firmware outputs of a converted hls4ml ModelGraph on inputs ``x``
    (one row per event), bit for bit as its C simulation computes them."""
    layers = list(graph.get_layers())
    check_layers(layers)
    t = result_type(layers[0])
    v = quantise(np.asarray(x, np.float64).reshape(len(x), -1), t)
    for layer in layers[1:]:
        if layer.class_name == "Dense":
            v = _dense(layer, v, t)
        elif activation_of(layer) == "relu":
            v = np.maximum(v, 0.0)
        t = result_type(layer)
        v = quantise(v, t)
    return v
