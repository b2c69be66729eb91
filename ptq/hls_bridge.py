"""The one place hepprune talks to hls4ml: convert, compile, C-simulate.

Why a bridge: hls4ml 1.3 picks its Keras parser from the *installed* ``keras``
package (Keras 3, pulled in by TensorFlow), not from the model, so
``config_from_keras_model`` and ``convert_from_keras_model`` send our tf_keras
(Keras 2) models to the Keras 3 parser, which crashes with
``'Node' object has no attribute 'arguments'``. Building the conversion
config ourselves and calling ``hls4ml.converters.keras_v2_to_hls`` parses
them correctly. The C simulation (``compile`` with g++, ``predict``) needs no
vendor tools.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from hepprune.core.backend import keras
from hepprune.core.config import HlsConfig
from hepprune.core.errors import HepPruneError
from hepprune.core.fixedpoint import HEADROOM, accumulator_precision, int_bits, parse_fixed, sized, widened, with_modes
from hepprune.core.qat import INPUT_QUANT, Quantiser, is_quantised
from hepprune.ptq import csim_build, csim_worker
from hepprune.ptq.ranges import layer_ranges_over

log = logging.getLogger(__name__)

PROJECT = "hepprune"
BACKEND = "Vitis"
# distributed_arithmetic (da4ml's shift-and-add constant products) is the RTL stage's, not an hls.strategy choice.
STRATEGIES = {"latency": "Latency", "resource": "Resource", "resource_unrolled": "resource_unrolled",
              "distributed_arithmetic": "distributed_arithmetic"}


def _hls4ml():
    try:
        import hls4ml  # noqa: F401, PLC0415 - deferred: hls4ml loads only where a model is exported
        from hls4ml.converters.keras_v2_to_hls import keras_v2_to_hls  # noqa: PLC0415 - deferred: hls4ml
        from hls4ml.utils.config import create_config  # noqa: PLC0415 - deferred: hls4ml
    except ImportError as exc:  # pragma: no cover - hls4ml is a dependency
        raise HepPruneError(f"hls4ml is not importable ({exc}); reinstall hepprune (pip install -e .)") from None
    return keras_v2_to_hls, create_config


def raw_input_precisions(folded, x_chunks, input_name: str, frac_bits: int = 10) -> dict:
    """hls4ml LayerName precisions for a model whose first Dense takes raw
    detector inputs. The default ap_fixed<16,6> holds only +-32, far below a
    500 GeV tower, and W/std would keep few significant bits; so the input,
    the first layer's weights, biases and accumulator are sized from the
    actual ranges (25 % headroom), with ``frac_bits`` fractional bits.
    ``x_chunks``: the raw inputs, as arrays of events (one pass)."""
    first = next(layer for layer in folded.layers if type(layer).__name__ == "Dense")
    w, b = first.get_weights()[0], first.get_weights()[1] if first.use_bias else np.zeros(first.units)
    x_max = acc_max = 0.0
    for x in x_chunks:
        x_max = max(x_max, float(np.abs(x).max()))
        acc_max = max(acc_max, float((np.abs(b) + np.abs(x).astype(np.float64) @ np.abs(w)).max()))  # partial sums
    return {input_name: {"Precision": {"result": sized(x_max, frac_bits, HEADROOM)}},
            first.name: {"Precision": {"weight": sized(float(np.abs(w).max()), 16),
                                       "bias": sized(float(np.abs(b).max()), frac_bits + 2),
                                       "accum": sized(acc_max, frac_bits + 2, HEADROOM)}}}


def convert(model, out_dir: Path, hls: HlsConfig, layer_precisions: dict | None = None, backend: str = BACKEND):
    """An hls4ml ModelGraph of a tf_keras model, its project in ``out_dir``.
    A layer hls4ml cannot convert is named in the error. ``backend`` matters
    only for synthesis (Vitis for vitis_hls, Vivado for vivado_hls)."""
    keras_v2_to_hls, create_config = _hls4ml()
    config = create_config(output_dir=str(out_dir), project_name=PROJECT, backend=backend, part=hls.part,
                           clock_period=hls.clock_period, io_type=hls.io_type)
    config.update(KerasModel=model, InputData=None, OutputPredictions=None)
    precision = {"default": hls.precision, "accum": accumulator_precision(hls.precision)}
    config["HLSConfig"] = {"Model": {"Precision": precision, "ReuseFactor": hls.reuse_factor,
                                     "Strategy": STRATEGIES[hls.strategy], "BitExact": None}}
    if layer_precisions:
        config["HLSConfig"]["LayerName"] = layer_precisions
    try:
        return keras_v2_to_hls(config)
    except Exception as exc:  # hls4ml raises bare Exceptions naming the layer type
        layer = next((candidate.name for candidate in model.layers if type(candidate).__name__ in str(exc)), None)
        where = f"layer {layer} ({type(model.get_layer(layer)).__name__})" if layer else "the model"
        raise HepPruneError(f"hls4ml cannot convert {where}: {exc}") from None


def version() -> str:
    import hls4ml  # noqa: PLC0415 - deferred: hls4ml loads only where a model is exported

    return f"hls4ml {hls4ml.__version__}"


def reuse_factors(graph) -> dict[str, int]:
    """Layer -> the reuse factor hls4ml really uses. A configured RF that does
    not divide a layer's work is replaced by the nearest valid one (RF 7 became
    4 and 8 on the demo MLP); costs must use these."""
    out = {}
    for layer in graph.get_layers():
        rf = layer.get_attr("reuse_factor")
        if rf is not None and layer.class_name in ("Dense", "Conv1D", "Conv2D"):
            out[layer.name] = int(rf)
    return out


class CsimError(HepPruneError):
    """The C simulation aborted (an ap_types assertion, say) in its worker."""


def csim_predict(graph, x: np.ndarray, processes: int | None = None) -> np.ndarray:
    """C-simulate ``x`` with a compiled graph (one input), outputs flattened per
    sample. hls4ml's ``predict`` is a single-threaded loop over samples, so
    the samples are split across worker processes. They are *spawned*, not
    forked: forking a process that runs TensorFlow's threads can deadlock
    the child on a lock some thread held (seen here, intermittently). Being
    separate processes, an abort inside the simulation library (ap_types
    asserts on some types) becomes a CsimError instead of killing the caller."""
    cfg = graph.config
    out_dir = Path(cfg.get_output_dir()).resolve()
    lib = str(out_dir / "firmware" / f"{cfg.get_project_name()}-{cfg.get_config_value('Stamp')}.so")
    args = (lib, f"{cfg.get_project_name()}_float", str(out_dir / "firmware"))
    n_out = int(sum(v.size() for v in graph.get_output_variables()))
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)  # the firmware takes flat arrays
    processes = processes or min(os.cpu_count() or 1, 8)
    processes = max(1, min(processes, len(x) // 1000))  # split only where each worker gets 1000+ samples
    chunks = np.array_split(x, processes)
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(csim_worker.simulate, *zip(*[(*args, c, n_out) for c in chunks])))
    except BrokenProcessPool:
        raise CsimError(f"the C simulation of {out_dir} aborted (see the message above)") from None
    return np.concatenate(parts).astype(np.float64)


def fold_standardization(model, mean: np.ndarray, std: np.ndarray):
    """A copy of ``model`` that takes raw inputs: the first Dense layer absorbs
    (x - mean) / std, i.e. W' = W / std[:, None] and b' = b - (mean / std) @ W.
    So the firmware takes detector inputs directly."""
    first = next((layer for layer in model.layers if layer.weights), None)
    if first is None or type(first).__name__ != "Dense" or np.ndim(mean) != 1:
        kind = type(first).__name__ if first is not None else "no weighted layer"
        raise HepPruneError(f"cannot fold the input standardisation into the first layer ({kind}); "
                            "only a first Dense layer on flat inputs can absorb it")
    folded = keras.models.clone_model(model)
    folded.set_weights(model.get_weights())
    w, *rest = first.get_weights()
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    new_w = (w / std[:, None]).astype(np.float32)
    bias = rest[0] if first.use_bias else np.zeros(w.shape[1])
    new_b = (bias - (mean / std) @ w).astype(np.float32)
    if not first.use_bias and np.any(new_b):
        raise HepPruneError(f"cannot fold the standardisation: {first.name} has no bias")
    folded.get_layer(first.name).set_weights([new_w, new_b] if first.use_bias else [new_w])
    return folded


def qat_precisions(model) -> dict:
    """hls4ml LayerName precisions of a QKeras model, from its quantisers, so
    that the firmware computes exactly what the model computes: weights and
    biases in the types that hold their quantised values; every activation,
    the input included, in the type its quantiser rounds and saturates to
    (hls4ml ignores a QActivation's quantiser without this); Dense and Conv2D
    sums in exact ("auto") types. Shape layers (pooling, flatten) keep the
    type of what they pass on."""
    out: dict[str, dict] = {}
    last = None
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "QActivation":
            last = Quantiser.of(layer.quantizer, layer.name).hls_type(rounding=True)
            out[layer.name] = {"Precision": {"result": last}}
            if layer.name == INPUT_QUANT:
                out[model.input_names[0]] = {"Precision": {"result": last}}
        elif kind in ("QDense", "QConv2D"):
            out[layer.name] = {"Precision": {
                "weight": Quantiser.of(layer.kernel_quantizer_internal, layer.name).hls_type(rounding=False),
                "bias": Quantiser.of(layer.bias_quantizer_internal, layer.name).hls_type(rounding=False),
                "result": "auto", "accum": "auto"}}
            last = None
        elif last is not None and not layer.weights:
            out[layer.name] = {"Precision": {"result": last}}
    return out


def first_disagreeing_layer(model, x: np.ndarray, hls: HlsConfig, precisions: dict, out_dir: Path) -> str:
    """The first layer (in model order) whose firmware output differs from the
    Keras layer's on the input ``x`` (one event), from hls4ml's trace of a
    copy of the project with every layer traced; "the output" if only the
    network output differs, as when a trace cannot be compared."""
    traced = {name: {**slots, "Trace": True} for name, slots in precisions.items()}
    for layer in model.layers:
        traced.setdefault(layer.name, {})["Trace"] = True
    graph = convert(model, out_dir, hls, traced)
    csim_build.compile_graph(graph)
    _, trace = graph.trace(np.ascontiguousarray(x[None].reshape(1, -1), dtype=np.float32))
    for layer in model.layers:
        if layer.name not in trace:
            continue
        want = keras.Model(model.inputs, layer.output).predict_on_batch(x[None]).reshape(-1)
        if not np.array_equal(np.asarray(trace[layer.name], np.float32).reshape(-1), want.astype(np.float32)):
            return layer.name
    return "the output"


def firmware_model(model, std, x_chunks):
    """(model to export, the function turning raw inputs into its inputs,
    hls4ml layer precisions or None); ``x_chunks`` is re-iterable arrays of
    raw inputs (a list, or hepprune.data.prepare.HeldOutEvents.inputs()).

    The standardisation is folded into a first Dense layer, so the firmware
    takes raw detector inputs. Where it cannot fold (a CNN, a model whose input
    feeds several branches), the firmware takes standardised inputs, as the
    network does; the check is numerical, so no model structure is assumed."""
    def standardised(x):
        return std.apply(x.copy())

    def raw(x):
        return x

    if is_quantised(model):  # folding would move the weights off their grid
        return model, standardised, qat_precisions(model)
    try:
        folded = fold_standardization(model, std.mean, std.std)
    except HepPruneError as exc:
        log.info("%s; the firmware takes standardised inputs", exc)
        return model, standardised, None
    probe = next(iter(x_chunks))[:256]
    want = np.asarray(model.predict_on_batch(standardised(probe)), np.float64)
    got = np.asarray(folded.predict_on_batch(probe), np.float64)
    if not np.allclose(got, want, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(want).max())):
        log.info("folding the standardisation into %s changes the outputs (its input feeds other layers too); "
                 "the firmware takes standardised inputs", model.name)
        return model, standardised, None
    return folded, raw, raw_input_precisions(folded, x_chunks, folded.input_names[0])


def widen_overflowing(model, x_chunks, precisions: dict | None, default: str) -> dict:
    """``precisions`` plus wider result types (and exact "auto" accumulators)
    for every layer whose values on the inputs ``x_chunks`` (re-iterable
    arrays) would overflow ``default``.

    Why: a network trained on raw inputs (a user's own .h5, say) carries
    activations in the hundreds, far beyond ap_fixed<16,6>'s +-32, and
    fixed point wraps around. Layers within range keep the default, so the
    usual standardised networks export exactly as before."""
    parsed = parse_fixed(default)
    assert parsed is not None, default  # the config's hls.precision, validated
    integer = parsed.integer
    out = {k: {"Precision": dict(v.get("Precision", {}))} for k, v in (precisions or {}).items()}
    ranges = layer_ranges_over(model, x_chunks)
    needs = {name: int_bits(HEADROOM * r["result"]) for name, r in ranges.items() if name != model.input_names[0]}
    any_widened = False
    for name, need in needs.items():
        if need > integer:
            out.setdefault(name, {"Precision": {}})["Precision"].setdefault("result", widened(default, need))
            any_widened = True
    if any_widened:  # large inputs to a layer whose output is small still overflow its partial sums
        for name, r in ranges.items():
            if "weight" in r:
                out.setdefault(name, {"Precision": {}})["Precision"].setdefault("accum", "auto")
    for slots in out.values():  # sized types round and saturate like the default
        for slot, text in slots["Precision"].items():
            slots["Precision"][slot] = with_modes(text, default)
    return out
