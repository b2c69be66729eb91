"""The one experiment config model, validated at the door.

Every command reads a YAML file (:class:`Loader`: PyYAML's safe loader,
refusing duplicate keys and reading ``1e-3`` as a number), applies
``--set key=value`` overrides, and builds a :class:`Config` here. Unknown keys,
wrong types and out-of-range values fail at once with a one-line
:class:`~data.errors.ConfigError` that names the key and lists the valid ones,
before any data is read or any TensorFlow is imported.

It lives in ``data/`` because ``data`` is the bottom layer that every stage
(``ptq``, ``prune``, ``slurm``) may import; nothing here depends on them.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
import typing
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from hepprune.core.errors import ConfigError
from hepprune.core.expression import parse
from hepprune.core.fixedpoint import check_precision

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Section = TypeVar("Section", bound="DataclassInstance")


def _opt(default: Any, doc: str, *, choices: tuple[str, ...] | None = None, ge: float | None = None,
         gt: float | None = None, le: float | None = None, lt: float | None = None,
         factory: Any = None, pattern: tuple[str, str] | None = None) -> Any:
    """A documented config field; ``pattern`` is (regex the whole value must
    match, what to say when it does not)."""
    meta = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "pattern": pattern}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


LAYOUTS = ("hepprune", "array", "columns", "compound", "pandas")


@dataclass(frozen=True)
class LayoutConfig:
    format: str = _opt("hepprune", "how the files hold the events: hepprune (this project's schema), array (a 2-D "
                       "dataset), columns (one 1-D dataset per feature), compound (named fields of one dataset) "
                       "or pandas (DataFrame.to_hdf, table or fixed)", choices=LAYOUTS)
    inputs: str = _opt("", "where the features live: array: the 2-D dataset; compound: the dataset; pandas: the "
                       "to_hdf key; columns: the group holding the 1-D datasets (empty = the file's root)")
    columns: list[str] = _opt(None, "array: the names of the 2-D dataset's columns; empty = its (or the file's) "
                              "names_attribute, else DATASET_0, DATASET_1, ...", factory=list)
    names_attribute: str = _opt("feature_names", "array: the attribute, of the dataset or else of the file, that "
                                "names the columns")
    features: list[str] = _opt(None, "the network's inputs, by name, in order; empty = every numeric column of "
                               "inputs that the target and reference do not use", factory=list)
    target: str = _opt("", "the target: a column or 1-D dataset, or arithmetic of them ('true_pt', "
                       "'e_em + e_had'); quote paths in backticks: `truth/pt`")
    reference: str = _opt("", "the raw estimator pred/true is compared with, as for target (regression)")
    target_name: str = _opt("", "the target's name in reports; empty = the target text")
    target_unit: str = _opt("GeV", "the target's unit in reports")
    reference_name: str = _opt("", "the reference's name in reports; empty = the reference text")
    class_names: list[str] = _opt(None, "classification: the class of each target index", factory=list)

    def __post_init__(self) -> None:
        if self.format == "hepprune":  # the other keys are ignored: a repacked copy keeps its mapping beside it
            return
        if self.format in ("array", "compound", "pandas") and not self.inputs:
            raise ConfigError(f"data.layout.inputs: format {self.format} needs the dataset (or pandas key) that "
                              "holds the features")
        if self.columns and self.format != "array":
            raise ConfigError(f"data.layout.columns names a 2-D array's columns; format {self.format} "
                              "takes its names from the file")
        if not self.target:
            raise ConfigError(f"data.layout.target: format {self.format} needs the target (a column or an "
                              "expression of columns)")
        parse(self.target, "data.layout.target")
        if self.reference:
            parse(self.reference, "data.layout.reference")
        for key in ("columns", "features", "class_names"):
            values = getattr(self, key)
            if not all(isinstance(v, str) and v for v in values):
                raise ConfigError(f"data.layout.{key} must be a list of names")
            if len(set(values)) != len(values):
                dup = next(v for v in values if values.count(v) > 1)
                raise ConfigError(f"data.layout.{key} lists {dup!r} twice")


@dataclass(frozen=True)
class DataConfig:
    path: str = _opt("", "HDF5 file or glob of shards; --data overrides it")
    val_fraction: float = _opt(0.1, "fraction of each shard's events used for validation", gt=0, lt=1)
    test_fraction: float = _opt(0.1, "fraction of each shard's events held out for testing", gt=0, lt=1)
    batch_size: int = _opt(512, "events per training batch", ge=1)
    shuffle_buffer: int = _opt(262144, "events held in the shuffle buffer (bounds memory)", ge=1)
    target_transform: str = _opt("ratio", "what the network regresses: ratio = true/reference, "
                                 "log = log(true), none = true/target_scale",
                                 choices=("ratio", "log", "none"))
    standardize: bool = _opt(True, "feed the network (x - mean) / std of the training inputs; false feeds raw "
                             "inputs (e.g. a model.from_file trained on raw inputs)")
    target_scale: float = _opt(100.0, "divisor of the target for target_transform=none", gt=0)
    reference_floor: float = _opt(1.0, "reference values are clipped to at least this "
                                  "(in target units) for target_transform=ratio", gt=0)
    layout: LayoutConfig = _opt(None, "how your HDF5 files map onto inputs, target and reference, read in "
                                "place (README, \"Your own HDF5 files\")", factory=LayoutConfig)

    def __post_init__(self) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"data.val_fraction + data.test_fraction = "
                              f"{self.val_fraction + self.test_fraction:g} leaves no training events; "
                              "it must be below 1")


MODULE_ATTR = (r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", "'module.path:name'")


@dataclass(frozen=True)
class ModelConfig:
    type: str = _opt("mlp", "mlp (flat inputs) or cnn (the image view); also picks the input view for "
                     "builder and from_file models", choices=("mlp", "cnn"))
    builder: str = _opt("", "'module.path:function' called as function(input_shape, n_outputs) that returns an "
                        "uncompiled tf_keras model; replaces the built-in network",
                        pattern=(r"|" + MODULE_ATTR[0], MODULE_ATTR[1]))
    from_file: str = _opt("", "a pretrained tf_keras .h5 model that becomes the baseline as it is "
                          "(ptq/trainModel.py evaluates it instead of training)")
    custom_objects: list[str] = _opt(None, "'module.path:Name' of each custom layer or object the models need to "
                                     "load (registered under Name)", factory=list)
    hidden_units: list[int] = _opt(None, "units of each hidden Dense layer", factory=lambda: [64, 32, 16])
    activation: str = _opt("relu", "hidden-layer activation", choices=("relu", "tanh", "sigmoid"))
    batch_norm: bool = _opt(False, "BatchNormalization after each hidden Dense/Conv2D")
    conv_filters: list[int] = _opt(None, "filters of each Conv2D layer (cnn only)", factory=lambda: [8, 16])
    kernel_size: int = _opt(3, "Conv2D kernel size (cnn only)", ge=1)
    pool_size: int = _opt(0, "MaxPooling2D size after each Conv2D, 0 = none (cnn only)", ge=0)

    def __post_init__(self) -> None:
        if self.builder and self.from_file:
            raise ConfigError("model.builder and model.from_file exclude each other; set one")
        for item in self.custom_objects:
            if not isinstance(item, str) or not re.fullmatch(MODULE_ATTR[0], item):
                raise ConfigError(f"model.custom_objects: every entry must be 'module.path:Name', got {item!r}")
        for key in ("hidden_units", "conv_filters"):
            values = getattr(self, key)
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                     for v in values):
                raise ConfigError(f"model.{key} must be a non-empty list of positive integers, "
                                  f"got {values!r}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _opt(30, "maximum number of pretraining epochs", ge=1)
    learning_rate: float = _opt(1e-3, "Adam learning rate", gt=0)
    loss: str = _opt("mae", "loss on the transformed target", choices=("huber", "mse", "mae"))
    huber_delta: float = _opt(0.1, "Huber loss transition point (transformed-target units)", gt=0)
    early_stopping_patience: int = _opt(8, "epochs without val_loss improvement before "
                                        "stopping; 0 disables (pretraining only)", ge=0)
    reduce_lr_patience: int = _opt(4, "epochs without improvement before the learning rate "
                                   "is reduced; 0 disables", ge=0)
    reduce_lr_factor: float = _opt(0.5, "factor applied to the learning rate on a plateau", gt=0, lt=1)
    min_learning_rate: float = _opt(1e-5, "floor for the reduced learning rate", gt=0)


@dataclass(frozen=True)
class PruneConfig:
    targets: list[float] = _opt(None, "final sparsities of the sweep, each in (0, 1); --targets overrides",
                                factory=lambda: [0.3, 0.5, 0.75])
    epochs: int = _opt(40, "total epochs per target: warm-up + pruning ramp + fine-tuning (docs/training.md)",
                       ge=1)
    warmup_epochs: int = _opt(3, "epochs with the pruning wrappers in place but nothing removed", ge=0)
    pruning_epochs: int = _opt(20, "epochs over which sparsity ramps to the target (the rest fine-tunes)", ge=1)
    schedule: str = _opt("polynomial", "polynomial: PolynomialDecay from initial_sparsity to the target; "
                         "constant: the target from the first pruning step", choices=("polynomial", "constant"))
    initial_sparsity: float = _opt(0.0, "sparsity at the start of the ramp (polynomial)", ge=0, lt=1)
    power: float = _opt(3.0, "exponent of the PolynomialDecay ramp", gt=0)
    frequency: int = _opt(0, "steps between mask updates; 0 chooses it so the ramp gets "
                          "min_mask_updates updates", ge=0)
    min_mask_updates: int = _opt(10, "fewest mask updates a ramp may have; fewer is refused", ge=1)
    granularity: str = _opt("unstructured", "unstructured (magnitude), block (block_size) or neuron "
                            "(whole output units by L2 norm)", choices=("unstructured", "block", "neuron"))
    block_size: list[int] = _opt(None, "tfmot block_size [rows, cols] for granularity=block",
                                 factory=lambda: [1, 4])
    include: list[str] = _opt(None, "layer names or fnmatch patterns to prune; empty = every Dense/Conv1D/"
                              "Conv2D except the output layer", factory=list)
    exclude: list[str] = _opt(None, "layer names or patterns never to prune", factory=list)
    learning_rate: float = _opt(1e-3, "Adam learning rate while pruning", gt=0)
    finetune_lr: str = _opt("cosine", "learning rate over the fine-tuning epochs after the ramp: constant, or "
                            "cosine from learning_rate down towards 0 (settles the last weights, which are kept)",
                            choices=("constant", "cosine"))
    batch_size: int = _opt(0, "events per batch while pruning; 0 = the baseline's data.batch_size", ge=0)
    distill: float = _opt(0.0, "weight of the baseline's own outputs in the pruning target (knowledge "
                          "distillation): 0 = the true values only, 1 = the baseline's outputs only, so the pruned "
                          "model learns to reproduce the baseline's response and resolution bin by bin", ge=0, le=1)
    tolerance: float = _opt(0.01, "largest accepted |achieved - target| sparsity per layer; at most 0.01, the "
                            "guarantee every pruned model carries", gt=0, le=0.01)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("prune.targets must list at least one sparsity")
        for t in self.targets:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
                raise ConfigError(f"prune.targets: every target must be a number in (0, 1), got {t!r}")
            if self.schedule == "polynomial" and t <= self.initial_sparsity:
                raise ConfigError(f"prune.targets: target {t:g} is not above prune.initial_sparsity "
                                  f"{self.initial_sparsity:g}")
        # Two targets closer than the sparsity guarantee give models that cannot be told apart (and
        # once shared a directory name): refused before anything trains.
        ordered = sorted(self.targets)
        for a, b in zip(ordered, ordered[1:]):
            if b - a <= self.tolerance:
                what = "is listed twice" if math.isclose(a, b) else \
                    f"and {b:g} are within prune.tolerance={self.tolerance:g} of each other"
                raise ConfigError(f"prune.targets: {a:g} {what}; their pruned models could not be told apart, "
                                  "so list distinct targets further apart")
        if self.warmup_epochs + self.pruning_epochs > self.epochs:
            raise ConfigError(f"prune.warmup_epochs + prune.pruning_epochs = "
                              f"{self.warmup_epochs + self.pruning_epochs} exceeds prune.epochs = {self.epochs}")
        if len(self.block_size) != 2 or not all(isinstance(b, int) and b >= 1 for b in self.block_size):
            raise ConfigError(f"prune.block_size must be two positive integers, got {self.block_size!r}")
        for key in ("include", "exclude"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise ConfigError(f"prune.{key} must be a list of layer names or patterns")


@dataclass(frozen=True)
class AnalysisConfig:
    samples: int = _opt(0, "held-out test events compared per model (the first N in file order); 0 = the "
                        "whole test split, streamed (the bit-width scan holds it in memory); --samples overrides",
                        ge=0)
    n_bins: int = _opt(5, "quantile bins in the true value for binned metrics (used when bins is empty)", ge=1)
    bins: list[float] = _opt(None, "explicit bin edges in the true value (target units); empty = quantile bins",
                             factory=list)
    bootstrap: int = _opt(200, "bootstrap resamples for statistical uncertainties (paired for the shifts "
                          "against the baseline); 0 = none", ge=0)
    response_tolerance: float = _opt(0.003, "largest accepted |response shift| against the baseline (median "
                                     "pred/true difference; 0.003 = 0.3 % of a response of 1), overall and in "
                                     "every bin", ge=0, lt=1)
    resolution_tolerance: float = _opt(0.02, "largest accepted relative growth of the resolution (q68) against "
                                       "the baseline, overall and in every bin (0.02 = 2 %)", ge=0, lt=1)
    significance: float = _opt(2.0, "a shift fails when it exceeds its tolerance by more than this many paired "
                               "bootstrap standard errors", gt=0, le=10)

    def __post_init__(self) -> None:
        edges = self.bins
        if edges and (len(edges) < 2 or any(isinstance(e, bool) or not isinstance(e, (int, float))
                                            for e in edges) or list(edges) != sorted(set(edges))):
            raise ConfigError(f"analysis.bins must be at least two increasing numbers, got {edges!r}")


@dataclass(frozen=True)
class HlsConfig:
    precision: str = _opt("ap_fixed<16,6,AP_RND,AP_SAT>", "hls4ml default precision, ap_fixed<W,I> with "
                          "optional quantisation and overflow modes; rounded and saturating by default, as "
                          "truncation biases the response downwards")
    reuse_factor: int = _opt(1, "hls4ml reuse factor (RF): multiplications shared per multiplier", ge=1)
    strategy: str = _opt("latency", "latency; resource_unrolled for RF > 1 (drops zero-weight multiplications); "
                         "resource (plain: keeps them, weights in BRAM)",
                         choices=("latency", "resource_unrolled", "resource"))
    io_type: str = _opt("io_parallel", "hls4ml io_type", choices=("io_parallel", "io_stream"))
    part: str = _opt("xcvu13p-flga2577-2-e", "FPGA part for synthesis")
    clock_period: float = _opt(5.0, "clock period in ns", gt=0)
    dsp_min_bits: int = _opt(10, "weights at least this wide use a DSP per multiplier; narrower ones "
                             "are built from LUTs", ge=1)
    simulate: bool = _opt(True, "export every analysed model to hls4ml and C-simulate it (g++, no vendor "
                          "tools); --no-hls skips it")

    def __post_init__(self) -> None:
        try:
            check_precision(self.precision, "hls.precision")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class PtqConfig:
    widths: list[int] = _opt(None, "total bit widths W of ap_fixed<W,I> the bit-width scan C-simulates; I comes "
                             "from each layer's ranges", factory=lambda: [6, 8, 10, 12, 14, 16, 18])
    tolerance: float = _opt(0.01, "relative change of response and resolution vs float still accepted when "
                            "choosing the smallest width; the analysis flags a firmware response further "
                            "off", gt=0, lt=1)
    models: list[str] = _opt(None, "models the bit-width scan runs on (e.g. baseline, prune_0.75); empty = every "
                             "finished model; --models overrides", factory=list)

    def __post_init__(self) -> None:
        w = self.widths
        if not w or not all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 64 for v in w) \
                or list(w) != sorted(set(w)):
            raise ConfigError(f"ptq.widths must be increasing integers between 2 and 64, got {w!r}")
        if not all(isinstance(v, str) for v in self.models):
            raise ConfigError("ptq.models must be a list of model names")


@dataclass(frozen=True)
class FrontierConfig:
    bits: list[int] = _opt(None, "bit settings prune/frontier.py searches: 0 = float, b = QKeras b-bit QAT",
                           factory=lambda: [0, 8])
    min_sparsity: float = _opt(0.5, "lowest target sparsity the search tries", gt=0, lt=1)
    max_sparsity: float = _opt(0.95, "highest target sparsity the search tries", gt=0, lt=1)
    step: float = _opt(0.05, "spacing of the candidate targets between min_sparsity and max_sparsity; the "
                       "bisection stops at this resolution", ge=0.01, le=0.5)
    width: int = _opt(0, "total width W of float candidates' distributed-arithmetic firmware for their cost; 0 = "
                      "the baseline's chosen width from ptq/bitwidth_scan.py, else hls.precision's", ge=0, le=32)
    reference_width: int = _opt(16, "width of the dense baseline whose cost the chosen model's is compared with",
                                ge=2, le=32)
    dsp_luts: float = _opt(55.0, "LUTs one DSP counts for in the cost (LUT + dsp_luts x DSP)", ge=0)

    def __post_init__(self) -> None:
        if not self.bits or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 16
                                    for b in self.bits) or len(set(self.bits)) != len(self.bits):
            raise ConfigError(f"frontier.bits must be distinct bit settings, 0 (float) or 2-16 (QAT), got "
                              f"{self.bits!r}; no bit setting means no candidate")
        if any(b == 1 for b in self.bits):
            raise ConfigError("frontier.bits: 1 bit is not a QAT setting; use 0 (float) or 2-16")
        if self.min_sparsity > self.max_sparsity:
            raise ConfigError(f"frontier.min_sparsity={self.min_sparsity:g} is above frontier.max_sparsity="
                              f"{self.max_sparsity:g}: the search space holds no candidate")


RTL_FAMILIES = ("xcup", "xcu", "xc7", "xc6s")  # Yosys synth_xilinx -family values the report names


@dataclass(frozen=True)
class RtlConfig:
    models: list[str] = _opt(None, "models the RTL stage builds (e.g. baseline, prune_0.75); empty = every "
                             "finished model; --models overrides", factory=list)
    width: int = _opt(0, "total width W of float models' ap_fixed<W,I> (I per layer from its ranges); 0 = the "
                      "baseline's chosen width from ptq/bitwidth_scan.py. QAT models keep their trained types",
                      ge=0, le=32)
    clock_mhz: float = _opt(200.0, "target clock of the pipelined Verilog; pipeline stages are cut so that each "
                            "holds at most the adder levels one period allows", gt=0)
    family: str = _opt("xcup", "Xilinx family Yosys synthesises for (synth_xilinx -family): xcup UltraScale+, "
                       "xcu UltraScale, xc7 7-series, xc6s Spartan-6", choices=RTL_FAMILIES)
    per_layer: bool = _opt(True, "also synthesise each layer on its own, for the per-layer LUT/FF/carry/DSP "
                           "counts (one more Yosys run per layer)")

    def __post_init__(self) -> None:
        if not all(isinstance(v, str) for v in self.models):
            raise ConfigError("rtl.models must be a list of model names")


QAT_LAYER_KEYS = ("bits", "weight_integer", "bias_integer", "activation_integer")


@dataclass(frozen=True)
class QatConfig:
    bits: list[int] = _opt(None, "bit settings the pruning sweep trains beside float, each a b for QKeras "
                           "b-bit weights, biases and activations (prune_<target>_q<b>/, target 0 the dense "
                           "reference); empty = float only; --bits overrides", factory=list)
    weight_integer: int = _opt(0, "integer bits (sign excluded) of weights: quantized_bits(b, weight_integer, "
                               "alpha=1), i.e. ap_fixed<b, weight_integer + 1>", ge=0)
    bias_integer: int = _opt(0, "integer bits (sign excluded) of biases: quantized_bits(b, bias_integer, alpha=1)",
                             ge=0)
    activation_integer: int = _opt(2, "integer bits of hidden activations: quantized_relu(b, activation_integer), "
                                   "i.e. ap_ufixed<b, activation_integer>", ge=0)
    activation_bits: int = _opt(0, "width of hidden activations when it differs from the setting's b (e.g. 8-bit "
                                "weights, 10-bit activations); 0 = b", ge=0)
    input: str = _opt("ap_fixed<12,4>", "fixed-point type the model quantises its (standardised) inputs to, "
                      "first thing: the firmware's input type, so model and firmware see the same values")
    weight_quantizer: str = _opt("quantized_bits", "QKeras quantiser of weights and biases (the one hls4ml "
                                 "exports bit-exactly: alpha=1, signed)", choices=("quantized_bits",))
    activation_quantizer: str = _opt("quantized_relu", "QKeras quantiser of hidden ReLU activations",
                                     choices=("quantized_relu",))
    layers: dict[str, dict[str, int]] = _opt(None, "per-layer overrides, {layer: {bits, weight_integer, "
                                             "bias_integer, activation_integer}}; bits replaces the setting's b "
                                             "for that layer", factory=dict)

    def __post_init__(self) -> None:
        def whole(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for b in self.bits:
            if not whole(b) or not 2 <= b <= 32:
                raise ConfigError(f"qat.bits: every bit setting must be an integer from 2 to 32, got {b!r}")
        if len(set(self.bits)) != len(self.bits):
            twice = next(b for b in self.bits if self.bits.count(b) > 1)
            raise ConfigError(f"qat.bits: {twice} is listed twice; both settings would train into "
                              f"prune_<target>_q{twice}/")
        try:
            parsed = check_precision(self.input, "qat.input")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if parsed.kind != "ap_fixed" or parsed.integer < 1 or parsed.modes or not 2 <= parsed.width <= 32:
            raise ConfigError(f"qat.input must be ap_fixed<W,I> with 2 <= W <= 32, I >= 1 and no modes (signed: "
                              f"standardised inputs are negative too; the quantiser always rounds to nearest "
                              f"even and saturates), got {self.input!r}")
        if self.activation_bits and not 2 <= self.activation_bits <= 32:
            raise ConfigError(f"qat.activation_bits must be 0 (the bit setting's b) or an integer from 2 to 32, "
                              f"got {self.activation_bits!r}")
        for name, over in self.layers.items():
            if not isinstance(over, dict) or not over:
                raise ConfigError(f"qat.layers.{name} must map some of {', '.join(QAT_LAYER_KEYS)} to integers, "
                                  f"got {over!r}")
            for key, value in over.items():
                if key not in QAT_LAYER_KEYS:
                    raise ConfigError(f"unknown config key 'qat.layers.{name}.{key}'; valid keys: "
                                      f"{', '.join(QAT_LAYER_KEYS)}")
                low = 2 if key == "bits" else 0
                if not whole(value) or not low <= value <= 32:
                    raise ConfigError(f"qat.layers.{name}.{key} must be an integer from {low} to 32, got {value!r}")
        for b in self.bits:
            for layer in (None, *self.layers):
                self.check_fits(b, layer)

    def setting(self, bits: int, layer: str | None = None) -> dict[str, int]:
        """bits and integer bits of one layer at bit setting ``bits``; a layer's own
        ``bits`` sets its width whether it holds weights or is an activation."""
        over = self.layers.get(layer, {}) if layer is not None else {}
        out = {"bits": bits, "activation_bits": self.activation_bits or bits, "weight_integer": self.weight_integer,
               "bias_integer": self.bias_integer, "activation_integer": self.activation_integer}
        out.update(over)
        if "bits" in over:
            out["activation_bits"] = over["bits"]
        return out

    def check_fits(self, bits: int, layer: str | None) -> None:
        """Integer bits must leave room in the word: signed values spend one bit on the sign."""
        s = self.setting(bits, layer)
        where = f"qat.layers.{layer}" if layer is not None and layer in self.layers else "qat"
        for key, sign, width in (("weight_integer", 1, "bits"), ("bias_integer", 1, "bits"),
                                 ("activation_integer", 0, "activation_bits")):
            if s[key] + sign > s[width]:
                raise ConfigError(f"{where}.{key} = {s[key]} does not fit in {s[width]} bits"
                                  f"{' (one is the sign)' if sign else ''}; at most {s[width] - sign}")


@dataclass(frozen=True)
class DistributeConfig:
    strategy: str = _opt("single", "single: one process; multiworker: tf.distribute.MultiWorkerMirroredStrategy "
                         "over the tasks of an srun step (pretraining and pruning)",
                         choices=("single", "multiworker"))
    workers: int = _opt(2, "srun tasks (one worker each) the SLURM pretrain and prune jobs start with "
                        "strategy=multiworker; data.batch_size must be divisible by it", ge=1)


SLURM_TIME = r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+|infinite|unlimited"


@dataclass(frozen=True)
class SlurmStage:
    time: str = _opt("01:00:00", "wall-time limit in sbatch --time format (MM, HH:MM:SS, D-HH:MM, ...)",
                     pattern=(SLURM_TIME, "an sbatch --time value like 30, 04:00:00 or 1-12:00"))
    cpus: int = _opt(2, "--cpus-per-task", ge=1)
    mem: str = _opt("8G", "--mem per node, e.g. 8G or 16000M", pattern=(r"\d+[KMGT]?", "like 8G or 16000M"))
    gpus: int = _opt(0, "GPUs per node (--gres=gpu:N); 0 = none", ge=0)


def _stage(time: str, cpus: int, mem: str) -> Callable[[], SlurmStage]:
    return lambda: SlurmStage(time=time, cpus=cpus, mem=mem)


@dataclass(frozen=True)
class SlurmConfig:
    partition: str = _opt("", "partition for every job; empty = the cluster's default")
    account: str = _opt("", "account to charge; empty = your default")
    setup: list[str] = _opt(None, "shell lines run before each stage, e.g. module load, source .venv/bin/activate; "
                            "empty = activate the checkout's .venv if it exists", factory=list)
    extra: list[str] = _opt(None, "extra #SBATCH flags for every job, e.g. --qos=normal", factory=list)
    signal_seconds: int = _opt(300, "seconds before the time limit (or on preemption) at which a job gets "
                               "USR1, checkpoints and requeues itself", ge=10)
    synth: bool = _opt(False, "also submit a C-synthesis job (needs vitis_hls/vivado_hls on its nodes)")
    rtl: bool = _opt(False, "also submit the open-source silicon job (rtl/synthesize_rtl.py, then the analysis "
                     "again), after the bit-width scan and the analysis")
    frontier: bool = _opt(False, "also submit the physics-frontier search (prune/frontier.py), after the "
                          "pretraining; it submits each round's candidates as a pruning job array and waits")
    pretrain: SlurmStage = _opt(None, "pretraining job", factory=_stage("04:00:00", 4, "16G"))
    prune: SlurmStage = _opt(None, "pruning job array (one task per target)", factory=_stage("04:00:00", 4, "16G"))
    analyze: SlurmStage = _opt(None, "analysis and hls4ml C simulation job", factory=_stage("01:00:00", 2, "8G"))
    scan: SlurmStage = _opt(None, "bit-width scan job", factory=_stage("01:00:00", 2, "8G"))
    synth_job: SlurmStage = _opt(None, "C-synthesis job (slurm.synth)", factory=_stage("08:00:00", 4, "32G"))
    rtl_job: SlurmStage = _opt(None, "open-source silicon job (slurm.rtl): Verilator and Yosys, minutes to an hour "
                               "per model", factory=_stage("04:00:00", 2, "16G"))
    frontier_job: SlurmStage = _opt(None, "the frontier search's own job (slurm.frontier): judges candidates and "
                                    "waits for their arrays", factory=_stage("12:00:00", 2, "8G"))
    tensorboard: SlurmStage = _opt(None, "TensorBoard job", factory=_stage("08:00:00", 1, "2G"))

    def __post_init__(self) -> None:
        for key in ("setup", "extra"):
            if not all(isinstance(v, str) for v in getattr(self, key)):
                raise ConfigError(f"slurm.{key} must be a list of strings")
        bad = [f for f in self.extra if not f.startswith("--")]
        if bad:
            raise ConfigError(f"slurm.extra: every entry must be an sbatch flag starting with --, got {bad[0]!r}")


@dataclass(frozen=True)
class Config:
    seed: int = _opt(12345, "seed for weights, data order and everything random", ge=0, le=2**32 - 1)
    task: str = _opt("regression", "regression (a value, pred/true) or classification (the target is a class "
                     "index; softmax outputs, cross-entropy, accuracy and ROC AUC)",
                     choices=("regression", "classification"))
    data: DataConfig = _opt(None, "dataset and input pipeline", factory=DataConfig)
    model: ModelConfig = _opt(None, "network architecture", factory=ModelConfig)
    train: TrainConfig = _opt(None, "pretraining (ptq/trainModel.py)", factory=TrainConfig)
    prune: PruneConfig = _opt(None, "pruning sweep (prune/train_model_prune.py)", factory=PruneConfig)
    analysis: AnalysisConfig = _opt(None, "model comparison (prune/analyze_prune.py)", factory=AnalysisConfig)
    hls: HlsConfig = _opt(None, "hls4ml export and firmware cost", factory=HlsConfig)
    ptq: PtqConfig = _opt(None, "post-training quantisation bit-width scan (ptq/bitwidth_scan.py)",
                          factory=PtqConfig)
    qat: QatConfig = _opt(None, "quantisation-aware training: QKeras bit settings the pruning sweep adds",
                          factory=QatConfig)
    rtl: RtlConfig = _opt(None, "open-source silicon: distributed-arithmetic Verilog, Verilator and Yosys "
                          "(rtl/synthesize_rtl.py)", factory=RtlConfig)
    frontier: FrontierConfig = _opt(None, "the search for the cheapest model within the physics tolerances "
                                    "(prune/frontier.py)", factory=FrontierConfig)
    distribute: DistributeConfig = _opt(None, "how pretraining and pruning spread over workers",
                                        factory=DistributeConfig)
    slurm: SlurmConfig = _opt(None, "SLURM jobs (slurm/submit.py)", factory=SlurmConfig)

    def __post_init__(self) -> None:
        if self.qat.bits and self.task == "classification":
            raise ConfigError("qat.bits: quantisation-aware training is for regression; a classifier's softmax is a "
                              "lookup table in hls4ml, so its firmware could not equal the QKeras model")
        if self.data.layout.format != "hepprune":
            mapped = self.data.layout
            if self.task == "regression" and not mapped.reference:
                raise ConfigError("data.layout.reference: a regression needs the raw estimator pred/true is "
                                  "compared with (a column or an expression of columns)")
            if self.task == "classification" and not mapped.class_names:
                raise ConfigError("data.layout.class_names: a classification needs the name of each class index")
        if self.prune.distill and self.task == "classification":
            raise ConfigError(f"prune.distill={self.prune.distill:g}: distillation blends the baseline's output "
                              "into a regression target; a classifier's labels are not blended (use 0)")
        # Checked here, at the door, so slurm/submit.py refuses it instead of the job.
        if self.distribute.strategy == "multiworker":
            for key, size in (("data.batch_size", self.data.batch_size), ("prune.batch_size", self.prune.batch_size)):
                if size % self.distribute.workers:
                    raise ConfigError(f"{key} {size} is not divisible by distribute.workers "
                                      f"{self.distribute.workers}: each worker takes an equal share of a batch")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- reading YAML


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice; PyYAML would keep the last silently."""


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with two fixes for configs written by hand:

    - a key given twice (two ``train:`` sections) is an error naming both
      lines, where PyYAML silently drops the first;
    - ``1e-3`` is a number, as in YAML 1.2 and Python; YAML 1.1 needs a dot
      (``1.0e-3``) and reads ``1e-3`` as a string.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKey(f"duplicate key '{key}' on lines {seen[key]} and {line}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # safe: Loader is a SafeLoader subclass


# ---------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "a list", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    tp = typing.get_origin(tp) or tp  # list[int] -> list: the items are checked by the section itself
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be finite, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")


def _check_range(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    pattern = meta.get("pattern")
    if pattern and not re.fullmatch(pattern[0], str(value).strip(), re.I):
        raise ConfigError(f"{key} must be {pattern[1]}, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    for bound, ok, word in (("ge", operator.ge, ">="), ("gt", operator.gt, ">"),
                            ("le", operator.le, "<="), ("lt", operator.lt, "<")):
        b = meta.get(bound)
        if b is not None and not ok(value, b):
            raise ConfigError(f"{key} must be {word} {b:g}, got {value!r}")


def _build(cls: type[Section], raw: Any, prefix: str, base: Section | None = None) -> Section:
    """``cls`` from a raw mapping; unset keys keep ``base``'s values (a nested
    section's own defaults) or the class defaults."""
    where = prefix.rstrip(".") or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys"
                          f"{' in ' + where if prefix else ''}: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key, tp = f"{prefix}{name}", hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            factory = fields[name].default_factory  # dataclasses.MISSING (not callable) when there is none
            kwargs[name] = _build(tp, value, f"{key}.", factory() if callable(factory) else None)
        else:
            kwargs[name] = _coerce(key, value, tp)
            _check_range(key, kwargs[name], fields[name].metadata)
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def from_dict(raw: Any) -> Config:
    return _build(Config, raw, "")


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw config dict."""
    raw = dict(raw or {})
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'")
        try:
            value = parse_yaml(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value '{text}'") from None
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def load(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config; a missing path means all defaults."""
    raw: Any = {}
    if path is not None:
        path = Path(path)
        try:
            raw = parse_yaml(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        except DuplicateKey as exc:
            raise ConfigError(f"config file {path}: {exc}; keep one") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{at}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return from_dict(apply_overrides(raw, overrides))


def describe(cls: type[DataclassInstance] = Config, prefix: str = "",
             instance: Any = None) -> list[tuple[str, str, str]]:
    """(key, default, doc) for every key: the README's config table comes from here."""
    rows = []
    hints = typing.get_type_hints(cls)
    instance = instance if instance is not None else cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(instance, f.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{prefix}{f.name}.", default))
            continue
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("doc", "")))
    return rows

