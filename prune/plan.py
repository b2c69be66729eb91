"""Which layers a pruning sweep prunes, and whether each target is reachable.

Decided on a :class:`ModelSpec`: the model's layers as the pruner sees them
(names, classes, which have weights, the shapes of the weights it masks,
which produce the output). The spec comes from a live tf_keras model
(:func:`hepprune.prune.pruning.describe`) or, before TensorFlow loads, from the baseline's
``model.h5`` itself (:func:`spec_from_h5`: its ``model_config`` and weight
shapes, read with h5py). One code path for both, so a bad ``prune.include``
or ``prune.exclude``, or a target a layer cannot reach, is refused in a second
with the message the pruning stage gives after loading the model. A file
whose layers only TensorFlow can describe (custom layers or objects, nested
models) gives no spec, and the stage decides after loading it, as before.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import h5py

from hepprune.core.config import Config, ModelConfig, PruneConfig
from hepprune.core.errors import ConfigError
from hepprune.core.runs import BASELINE, MODEL_FILE
from hepprune.data.prepare import prepare_data
from hepprune.prune.schedule import Schedule, derive_schedule

# The pruning stage's messages, whichever module decides them.
log = logging.getLogger("hepprune.prune.pruning")

PRUNABLE_TYPES = ("Dense", "Conv1D", "Conv2D")  # built-in layers whose kernel tfmot prunes
NOT_PRUNED_QUIETLY = ("BatchNormalization", "LayerNormalization")  # weights, but nothing to prune by design
ELEMENTWISE = ("Activation", "ReLU", "BatchNormalization", "Dropout", "LeakyReLU")  # may sit between pruned Dense
WEIGHTLESS_TYPES = ("Activation", "Softmax", "Flatten", "Reshape", "Dropout", "ReLU", "LeakyReLU")  # as models.py


@dataclass(frozen=True)
class LayerSpec:
    name: str
    kind: str  # type(layer).__name__
    weighted: bool  # layer.weights is not empty
    custom_prunable: bool  # a user layer implementing tfmot's PrunableLayer
    prunable_shapes: tuple[tuple[int, ...], ...]  # the weights the pruner masks (the kernel of a built-in layer)

    @property
    def prunable(self) -> bool:
        return self.kind in PRUNABLE_TYPES or self.custom_prunable


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # type(model).__name__
    sequential: bool  # isinstance(model, keras.Sequential)
    layers: tuple[LayerSpec, ...]  # model.layers, in order
    outputs: tuple[str, ...]  # models.output_layers(model)

    def layer(self, name: str) -> LayerSpec:
        return next(layer for layer in self.layers if layer.name == name)


# ---------------------------------------------------------------- from model.h5, without TensorFlow

# Built-in tf_keras layers whose saved class name is the class the file loads as,
# and that are never a tfmot PrunableLayer. Anything else: no spec from the file.
KNOWN_KINDS = frozenset({
    "InputLayer", "Dense", "Conv1D", "Conv2D", "Activation", "ReLU", "LeakyReLU", "Softmax",
    "BatchNormalization", "LayerNormalization", "Dropout", "Flatten", "Reshape",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
})


def spec_from_h5(path: str | Path, cfg: ModelConfig) -> ModelSpec | None:
    """The spec of the Keras 2 HDF5 model at ``path``, read without TensorFlow;
    None when only loading the model can tell (the caller then loads it)."""
    if cfg.custom_objects:  # they may rename or replace any class the file names
        return None
    try:
        with h5py.File(path, "r") as f:
            return _spec(f)
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration):
        return None  # damaged or unusual: loading it says what is wrong


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _spec(f: h5py.File) -> ModelSpec | None:
    config = json.loads(_text(f.attrs["model_config"]))
    kind = config["class_name"]
    if kind not in ("Sequential", "Functional", "Model"):
        return None
    entries = config["config"]["layers"]
    for entry in entries:
        if entry["class_name"] not in KNOWN_KINDS or entry.get("registered_name") not in (None, entry["class_name"]):
            return None
        if entry.get("module") not in (None, "keras.layers"):
            return None
    if kind == "Sequential":  # model.layers leaves out a Sequential's input
        entries = [e for e in entries if e["class_name"] != "InputLayer"]
    names = [e["config"]["name"] for e in entries]
    weights = f["model_weights"]
    # Keras writes model.layers' names in order; a mismatch means a file this reader misreads.
    if [_text(n) for n in weights.attrs["layer_names"]] != names or len(set(names)) != len(names):
        return None
    layers = []
    for entry, name in zip(entries, names, strict=True):
        group = weights[name]
        weight_names = [_text(w) for w in group.attrs["weight_names"]]
        shapes: tuple[tuple[int, ...], ...] = ()
        if entry["class_name"] in PRUNABLE_TYPES:
            if not weight_names or not weight_names[0].split("/")[-1].startswith("kernel"):
                return None
            shapes = (tuple(int(d) for d in group[weight_names[0]].shape),)
        layers.append(LayerSpec(name, entry["class_name"], bool(weight_names), False, shapes))
    outputs = _sequential_outputs(layers) if kind == "Sequential" else _functional_outputs(config["config"], layers)
    if outputs is None:
        return None
    return ModelSpec("Sequential" if kind == "Sequential" else "Functional", kind == "Sequential", tuple(layers),
                     tuple(outputs))


def _passes_through(layer: LayerSpec) -> bool:
    """models.output_layers walks back through this layer to its inputs."""
    return layer.kind in WEIGHTLESS_TYPES or (not layer.weighted and layer.kind != "InputLayer")


def _sequential_outputs(layers: list[LayerSpec]) -> list[str] | None:
    for layer in reversed(layers):
        if not _passes_through(layer):
            return [layer.name] if layer.weighted else []
    return []  # walked back to the input


def _functional_outputs(config: dict[str, Any], layers: list[LayerSpec]) -> list[str] | None:
    """models.output_layers on the saved graph: the same walk, the same order."""
    by_name = {layer.name: layer for layer in layers}
    inbound = {e["config"]["name"]: e.get("inbound_nodes", []) for e in config["layers"]}
    if len(config["output_layers"]) != 1 or config["output_layers"][0][1:] != [0, 0]:
        return None
    names: list[str] = []
    frontier = [config["output_layers"][0][0]]
    seen: set[str] = set()
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        layer = by_name[name]
        if _passes_through(layer):
            nodes = inbound[name]
            if len(nodes) != 1 or not isinstance(nodes[0], list):  # shared layers: loading tells
                return None
            for source in nodes[0]:
                if not isinstance(source, list) or source[1:3] != [0, 0]:
                    return None
                frontier.append(source[0])
        elif layer.weighted:
            names.append(name)
    return names


# ---------------------------------------------------------------- the decisions, on a spec


def prunable_layers(spec: ModelSpec) -> list[str]:
    """Every prunable layer except those producing the output. A weighted layer
    tfmot cannot prune is left dense, with a warning naming it."""
    outputs = set(spec.outputs)
    for layer in spec.layers:
        if layer.weighted and not layer.prunable and layer.kind not in NOT_PRUNED_QUIETLY:
            log.warning("layer %s (%s) cannot be pruned by tfmot; it stays dense", layer.name, layer.kind)
    return [layer.name for layer in spec.layers if layer.prunable and layer.name not in outputs]


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def select_layers(spec: ModelSpec, include: list[str], exclude: list[str]) -> list[str]:
    """Layer names to prune; unknown names or patterns are an error."""
    names = [layer.name for layer in spec.layers]
    candidates = [layer.name for layer in spec.layers if layer.prunable]
    for key, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if not fnmatch.filter(names, pattern):
                raise ConfigError(f"prune.{key}: no layer matches '{pattern}'; layers: {', '.join(names)}")
    if include:
        # A wildcard pattern picks the prunable layers it matches (fc* names activations too);
        # a plain name, or a pattern matching nothing prunable, that cannot be pruned is refused.
        not_prunable = [p for p in include if not fnmatch.filter(candidates, p) or
                        (not _is_pattern(p) and p not in candidates)]
        if not_prunable:
            raise ConfigError(f"prune.include: {', '.join(not_prunable)} cannot be pruned (only "
                              f"{', '.join(PRUNABLE_TYPES)} kernels and tfmot PrunableLayer weights are); "
                              f"prunable: {', '.join(candidates)}")
        chosen = [n for n in candidates if any(fnmatch.fnmatchcase(n, p) for p in include)]
    else:
        chosen = prunable_layers(spec)
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not chosen:
        raise ConfigError(f"the model has no layer to prune (prunable: {', '.join(candidates) or 'none'}, "
                          f"include={include}, exclude={exclude})")
    return chosen


def block_size(layer: LayerSpec, cfg: PruneConfig) -> tuple[int, int]:
    """tfmot's block pruning needs a 2-D kernel at least one block wide; a
    layer that cannot take the block (e.g. Dense(1)) is pruned unstructured."""
    if cfg.granularity != "block":
        return (1, 1)
    block = (cfg.block_size[0], cfg.block_size[1])
    shape = layer.prunable_shapes[0]
    if len(shape) != 2 or shape[0] < block[0] or shape[1] < block[1]:
        log.warning("layer %s (kernel %s) cannot take block_size %s; pruning it unstructured",
                    layer.name, shape, list(block))
        return (1, 1)
    return block


def pruning_units(layer: LayerSpec, cfg: PruneConfig) -> tuple[int, str]:
    """How many independent pieces the pruner removes from this layer's kernel."""
    shape = layer.prunable_shapes[0]
    if cfg.granularity == "neuron":
        return shape[-1], "units"
    block = block_size(layer, cfg) if cfg.granularity == "block" else (1, 1)
    if block != (1, 1):
        return (shape[0] // block[0]) * (shape[1] // block[1]), f"{block[0]}x{block[1]} blocks"
    return sum(prod(s) for s in layer.prunable_shapes), "weights"


def check_reachable(spec: ModelSpec, layers: list[str], target: float, cfg: PruneConfig) -> None:
    """Refuse, before training, a target a layer cannot meet within the
    tolerance: a layer of n pieces can only be pruned in steps of 1/n."""
    for name in layers:
        n, what = pruning_units(spec.layer(name), cfg)
        reachable = 1 - round(n * (1 - target)) / n
        if abs(reachable - target) > cfg.tolerance:
            raise ConfigError(f"target {target:g} is unreachable for layer {name}: it has {n} {what}, so the "
                              f"nearest sparsity is {reachable:.4f}, off by more than prune.tolerance="
                              f"{cfg.tolerance:g}; pick a target near a multiple of 1/{n} or exclude the layer")


def next_dense(kinds: Sequence[tuple[str, str]], name: str) -> tuple[list[int], int]:
    """(indices of the element-wise layers in between, index of the next Dense)
    after layer ``name`` in a Sequential's (name, class) list."""
    i = [n for n, _ in kinds].index(name)
    between: list[int] = []
    for j in range(i + 1, len(kinds)):
        other, kind = kinds[j]
        if kind == "Dense":
            return between, j
        if kind not in ELEMENTWISE:
            raise ConfigError(f"neuron pruning of {name}: {other} ({kind}) follows it; only "
                              f"{', '.join(ELEMENTWISE)} may stand between two Dense layers")
        between.append(j)
    raise ConfigError(f"neuron pruning of {name}: it is the output layer (removing its units would "
                      "change the model's outputs)")


def check_neuron_supported(model_kind: str, sequential: bool, kinds: Sequence[tuple[str, str]],
                           layers: list[str]) -> None:
    """Neuron pruning needs a Sequential chain of Dense layers with only
    element-wise layers between a pruned layer and the next Dense. ``kinds``:
    (name, class) of every layer of the model, in order."""
    if not sequential:
        raise ConfigError("prune.granularity=neuron supports Sequential models only (this one is "
                          f"{model_kind}); use unstructured or block")
    kind_of = dict(kinds)
    for name in layers:
        if kind_of[name] != "Dense":
            raise ConfigError(f"prune.granularity=neuron prunes Dense units; layer {name} is "
                              f"{kind_of[name]} (exclude it with prune.exclude)")
        next_dense(kinds, name)


def plan_target(cfg: Config, target: float, spec: ModelSpec, steps_per_epoch: int) -> tuple[list[str], Schedule]:
    """The layers and schedule for one target, or the ConfigError that refuses it."""
    schedule = derive_schedule(cfg.prune, target, steps_per_epoch)
    layers = select_layers(spec, cfg.prune.include, cfg.prune.exclude)
    if cfg.prune.granularity == "neuron":
        check_neuron_supported(spec.kind, spec.sequential, [(layer.name, layer.kind) for layer in spec.layers], layers)
    check_reachable(spec, layers, target, cfg.prune)
    return layers, schedule


# ---------------------------------------------------------------- the sweep, before TensorFlow


@contextlib.contextmanager
def _held_logs() -> Iterator[None]:
    """Hold the block's log records; emit them only if it raises. A check
    that passes stays silent: the stage repeats it, and logs it, later."""
    root = logging.getLogger()
    handlers, held = root.handlers[:], []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    root.handlers = [Hold()]
    try:
        yield
    except BaseException:
        root.handlers = handlers
        for record in held:
            root.handle(record)
        raise
    finally:
        root.handlers = handlers


def refuse_early(cfg: Config, run_dir: Path) -> None:
    """The sweep's checks (the data, then every target's layers and schedule)
    on the baseline's model.h5 as read without TensorFlow: a sweep the
    pruning stage would refuse is refused in a second, with the same lines.
    Nothing is logged when it passes (the stage checks again on the loaded
    model), nor when the file needs TensorFlow to be described."""
    baseline = run_dir / BASELINE
    spec = spec_from_h5(baseline / MODEL_FILE, cfg.model)
    if spec is None:
        return
    with _held_logs(), prepare_data(cfg, baseline) as prepared:
        for target in cfg.prune.targets:
            plan_target(cfg, target, spec, prepared.steps_per_epoch(cfg))
