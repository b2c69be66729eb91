"""Quantisation-aware training: QKeras versions of the models.

A bit setting ``b`` (``qat.bits``) quantises every weight and bias of a model
to ``b`` bits (``quantized_bits(b, i, alpha=1)``), every hidden ReLU to ``b``
bits (``quantized_relu(b, i)``), and its standardised inputs, first thing,
to the type ``qat.input``; the integer bits ``i`` come from the ``qat``
section, per layer where overridden. Every value the network computes is
then on a fixed-point grid, which is what lets the hls4ml firmware, given
the same types layer by layer (``ptq/hls_bridge.py``), compute exactly what
the QKeras model computes.

Only Sequential models of Dense, Conv2D, ReLU and shape layers (the built-in
mlp and cnn, or a Sequential builder of the same) are quantised; anything
else is refused in one line naming the layer. Classification is refused
(core/config.py): hls4ml's softmax is a lookup table, so its firmware cannot equal the model.

QKeras is imported on first use (about 2 s, and only QAT needs it).
QKeras 0.9 declares ``pyparser`` but imports ``pyparsing``; setup.cfg lists both.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import h5py

from hepprune.core.backend import keras
from hepprune.core.config import QatConfig
from hepprune.core.errors import ConfigError, HepPruneError
from hepprune.core.fixedpoint import parse_fixed

INPUT_QUANT = "input_quant"  # the first layer of every quantised model
QUANTISED_TYPES = {"Dense": "QDense", "Conv2D": "QConv2D"}
KEPT_TYPES = ("InputLayer", "Flatten", "MaxPooling2D", "Reshape", "Dropout")


def label(bits: int | None) -> str:
    """A bit setting as written in stage names and tables: q6, or float."""
    return "float" if bits is None else f"q{bits}"


def qkeras() -> Any:
    try:
        import qkeras as module  # noqa: PLC0415 - deferred: QKeras (~2 s), only for QAT models
    except ImportError as exc:  # pragma: no cover - a dependency of hepprune
        raise HepPruneError(f"QKeras is not importable ({exc}); reinstall hepprune (pip install -e .)") from None
    root = logging.getLogger()
    if not any(isinstance(f, _QKerasChatter) for f in root.filters):
        root.addFilter(_QKerasChatter())
    return module


class _QKerasChatter(logging.Filter):
    """QKeras logs every quantiser it parses to the root logger at INFO ("keras dict linear")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}qkeras{os.sep}" not in record.pathname


# tf_keras warns on every save that a QKeras quantiser is not a Constraint; it saves and loads correctly.
warnings.filterwarnings("ignore", message=r"The `keras.constraints.serialize\(\)` API should only be used",
                        category=UserWarning)


def custom_objects() -> dict[str, Any]:
    """QKeras' layers and quantisers by name, to load a saved QAT model."""
    objects: dict[str, Any] = {}
    qkeras().utils._add_supported_quantized_objects(objects)
    return objects


def file_has_qkeras_layers(path: str | os.PathLike[str]) -> bool:
    """Whether a saved tf_keras .h5 model holds QKeras layers (read from its
    JSON, without TensorFlow), so QKeras loads only for the files that need it."""
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get("model_config", "")
    except OSError:
        return False
    text = text.decode() if isinstance(text, bytes) else str(text)
    return any(f'"class_name": "{name}"' in text for name in ("QDense", "QConv2D", "QActivation"))


def is_quantised(model: Any) -> bool:
    return any(type(layer).__name__ in ("QDense", "QConv2D", "QActivation") for layer in model.layers)


@dataclass(frozen=True)
class Quantiser:
    """One QKeras quantiser as (bits, integer bits, signed): quantized_bits is
    signed (ap_fixed<bits, integer + 1>), quantized_relu is not (ap_ufixed<bits, integer>)."""

    bits: int
    integer: int
    signed: bool

    @classmethod
    def of(cls, quantiser: Any, where: str) -> Quantiser:
        kind = type(quantiser).__name__
        config = quantiser.get_config()
        if kind == "quantized_bits" and config.get("alpha") in (1, 1.0) and config.get("keep_negative", True) \
                and not config.get("symmetric"):
            return cls(int(config["bits"]), int(config["integer"]), True)
        if kind == "quantized_relu" and not config.get("negative_slope") and not config.get("use_sigmoid") \
                and config.get("relu_upper_bound") is None:
            return cls(int(config["bits"]), int(config["integer"]), False)
        raise ConfigError(f"{where}: quantiser {quantiser} has no exact hls4ml type; use quantized_bits(b, i, "
                          "alpha=1) or quantized_relu(b, i)")

    def hls_type(self, rounding: bool) -> str:
        """The hls4ml type holding every value of the quantiser; ``rounding``:
        round to nearest even and saturate, as the quantiser does, for a
        type that quantises (activations), not one that only holds (weights)."""
        modes = ",AP_RND_CONV,AP_SAT" if rounding else ""
        if self.signed:
            return f"ap_fixed<{self.bits},{self.integer + 1}{modes}>"
        return f"ap_ufixed<{self.bits},{self.integer}{modes}>"


def quantise(model: Any, bits: int, qat: QatConfig) -> Any:
    """A QKeras copy of ``model`` at bit setting ``bits``, with its weights;
    the first layer quantises the inputs to ``qat.input``."""
    q = qkeras()
    if not isinstance(model, keras.Sequential):
        raise ConfigError(f"qat: model {model.name} is not Sequential; quantisation-aware training supports "
                          "Sequential models (the built-in mlp and cnn, or a Sequential model.builder)")
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(qat.layers) - names)
    if unknown:
        raise ConfigError(f"qat.layers: no layer named '{unknown[0]}'; layers: {', '.join(sorted(names))}")
    fixed = parse_fixed(qat.input)
    assert fixed is not None, qat.input  # QatConfig validated it
    layers = [keras.Input(model.input_shape[1:], name=model.input_names[0]),
              q.QActivation(q.quantized_bits(fixed.width, fixed.integer - 1, alpha=1), name=INPUT_QUANT)]
    for layer in model.layers:
        layers.append(_quantised_layer(q, layer, qat.setting(bits, layer.name)))
    quantised = keras.Sequential(layers, name=f"{model.name}_{label(bits)}")
    for layer in model.layers:
        if layer.weights:
            quantised.get_layer(layer.name).set_weights(layer.get_weights())
    return quantised


def _quantised_layer(q: Any, layer: Any, s: dict[str, int]) -> Any:
    kind = type(layer).__name__
    config = layer.get_config()
    if kind in QUANTISED_TYPES:
        if config.get("activation") not in ("linear", None):
            raise ConfigError(f"qat: layer {layer.name} ({kind}) has a built-in activation "
                              f"'{config['activation']}'; put it in its own Activation layer to quantise it")
        config.update(kernel_quantizer=q.quantized_bits(s["bits"], s["weight_integer"], alpha=1),
                      bias_quantizer=q.quantized_bits(s["bits"], s["bias_integer"], alpha=1))
        return getattr(q, QUANTISED_TYPES[kind]).from_config(config)
    if kind == "Activation" and config["activation"] == "relu":
        return q.QActivation(q.quantized_relu(s["activation_bits"], s["activation_integer"]), name=layer.name)
    if kind in KEPT_TYPES:
        return layer.__class__.from_config(config)
    raise ConfigError(f"qat: cannot quantise layer {layer.name} ({kind}"
                      f"{' ' + repr(config['activation']) if kind == 'Activation' else ''}); QAT supports "
                      f"Dense, Conv2D, ReLU activations and {', '.join(KEPT_TYPES[1:])}")


def describe(model: Any) -> dict[str, Any]:
    """Layer -> its quantisers' (bits, integer), for metrics.json."""
    out: dict[str, Any] = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "QActivation":
            out[layer.name] = {"activation": _pair(Quantiser.of(layer.quantizer, layer.name))}
        elif kind in QUANTISED_TYPES.values():
            out[layer.name] = {"weight": _pair(Quantiser.of(layer.kernel_quantizer_internal, layer.name)),
                               "bias": _pair(Quantiser.of(layer.bias_quantizer_internal, layer.name))}
    return out


def _pair(quantiser: Quantiser) -> list[int]:
    return [quantiser.bits, quantiser.integer]

