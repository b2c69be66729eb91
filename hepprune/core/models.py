"""Models: the built-in networks, the user's own (builder, file, custom layers),
and the checks every model passes before it trains.

Everything is tf_keras (Keras 2), because tfmot prunes only Keras 2 models.
The built-in networks use only layers that both tfmot prunes and hls4ml
converts (Dense, Conv2D, BatchNormalization, Activation, Flatten,
MaxPooling2D), with stable names (``fc1``, ``conv1``, ``output``) because the
pruning stage selects layers by name.

Ways in (``model`` section of the config):

- built-in (default): :func:`build_model`;
- ``builder: "module.path:function"``: ``function(input_shape, n_outputs)``
  returns an uncompiled tf_keras model;
- ``from_file: model.h5``: a pretrained model that becomes the baseline;
- ``custom_objects: ["module.path:Name", ...]``: custom layers to load.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from hepprune.core import qat
from hepprune.core.backend import keras
from hepprune.core.config import Config, ModelConfig
from hepprune.core.errors import ConfigError
from hepprune.core.task import Task, task_of

log = logging.getLogger(__name__)

OUTPUT_LAYER = "output"
WEIGHTLESS_TYPES = ("Activation", "Softmax", "Flatten", "Reshape", "Dropout", "ReLU", "LeakyReLU")


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int = 1,
                output_activation: str | None = None) -> keras.Model:
    """The built-in network: ``n_outputs`` outputs, linear or through
    ``output_activation`` (the task's: softmax for classification)."""
    layers = keras.layers
    model = keras.Sequential(name=f"baseline_{cfg.type}")
    model.add(keras.Input(shape=input_shape, name="inputs"))
    if cfg.type == "cnn":
        for i, filters in enumerate(cfg.conv_filters, start=1):
            model.add(layers.Conv2D(filters, cfg.kernel_size, padding="same", name=f"conv{i}"))
            if cfg.batch_norm:
                model.add(layers.BatchNormalization(name=f"conv{i}_bn"))
            model.add(layers.Activation(cfg.activation, name=f"conv{i}_act"))
            if cfg.pool_size > 1:
                model.add(layers.MaxPooling2D(cfg.pool_size, padding="same", name=f"pool{i}"))
        model.add(layers.Flatten(name="flatten"))
    for i, units in enumerate(cfg.hidden_units, start=1):
        model.add(layers.Dense(units, name=f"fc{i}"))
        if cfg.batch_norm:
            model.add(layers.BatchNormalization(name=f"fc{i}_bn"))
        model.add(layers.Activation(cfg.activation, name=f"fc{i}_act"))
    model.add(layers.Dense(n_outputs, name=OUTPUT_LAYER))
    if output_activation:
        model.add(layers.Activation(output_activation, name=output_activation))
    return model


def _import(spec: str, key: str) -> Any:
    """The object ``spec`` names: a user's builder function, custom layer or other custom object."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the user's module raises on import
        raise ConfigError(f"{key}: cannot import module '{module_name}' ({exc.__class__.__name__}: {exc}); "
                          "is it on PYTHONPATH?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: module '{module_name}' has no attribute '{attr}'") from None


def custom_objects(cfg: ModelConfig) -> dict[str, Any]:
    """Name -> object for every ``model.custom_objects`` entry."""
    return {spec.partition(":")[2]: _import(spec, "model.custom_objects") for spec in cfg.custom_objects}


def load_model(path: str | os.PathLike[str], cfg: ModelConfig) -> Any:
    """A tf_keras model from an HDF5 file, with the config's custom objects
    (and tfmot's, for files holding pruning wrappers)."""
    from hepprune.core.backend import tfmot  # noqa: PLC0415 - deferred: tfmot (~1 s), only where a model is read

    objects = custom_objects(cfg)
    if qat.file_has_qkeras_layers(path):
        objects = {**qat.custom_objects(), **objects}
    try:
        with tfmot.sparsity.keras.prune_scope(), keras.utils.custom_object_scope(objects):
            return keras.models.load_model(str(path), compile=False)
    except (ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        hint = " (list it in model.custom_objects as 'module.path:Name')" if "Unknown" in text else ""
        raise ConfigError(f"cannot load {path}: {text}{hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot load {path}: {exc}") from None


def is_tf_keras_model(obj: object) -> bool:
    return isinstance(obj, keras.Model)


def check_model(model: Any, input_shape: tuple[int, ...], task: Task, n_classes: int, where: str) -> None:
    """Refuse, in one line, a model the workflow cannot train, prune or
    export: not tf_keras, subclassed, several inputs or outputs, the wrong
    input shape, or an output that does not fit the task."""
    if not is_tf_keras_model(model):
        kind = f"{type(model).__module__}.{type(model).__name__}"
        hint = " (a Keras 3 model: build it with `import tf_keras as keras`)" if kind.startswith("keras") else ""
        raise ConfigError(f"{where} must give a tf_keras model, got {kind}{hint}")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ConfigError(f"{where} is a subclassed model ({type(model).__name__}); tfmot can only prune "
                          "Sequential and functional models, whose layers it can see and wrap: rebuild it with "
                          "keras.Sequential or the functional API")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"{where} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); "
                          "hepprune needs one of each (branches inside the model are fine)")
    got = tuple(model.inputs[0].shape[1:])
    if got != tuple(input_shape):
        raise ConfigError(f"{where} takes inputs of shape {got} but the dataset gives {tuple(input_shape)}"
                          f"{' (model.type picks the flat or image view)' if len(got) != len(input_shape) else ''}")
    task.check_outputs(model.outputs[0].shape[-1], n_classes, where)


def new_model(cfg: Config, input_shape: tuple[int, ...], n_classes: int) -> Any:
    """An uncompiled model to pretrain: the user's builder or the built-in network."""
    custom_objects(cfg.model)  # fail on a bad entry before training, not when a later stage loads the model
    task = task_of(cfg)
    n_outputs = task.outputs(n_classes)
    if not cfg.model.builder:
        return build_model(cfg.model, input_shape, n_outputs, task.output_activation())
    function = _import(cfg.model.builder, "model.builder")
    try:
        model = function(tuple(input_shape), n_outputs)
    except Exception as exc:
        raise ConfigError(f"model.builder {cfg.model.builder}({tuple(input_shape)}, {n_outputs}) raised "
                          f"{exc.__class__.__name__}: {exc}") from None
    check_model(model, input_shape, task, n_classes, f"model.builder {cfg.model.builder}")
    return model


def output_layers(model: Any) -> list[str]:
    """Names of the weighted layers that produce the model's output, found by
    walking back through weightless layers (activations, flatten, ...); the
    pruning stage leaves them dense by default."""
    names: list[str] = []
    frontier: list[Any] = [model.outputs[0]]
    seen: set[int] = set()
    while frontier:
        tensor = frontier.pop()
        layer = tensor._keras_history.layer
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if type(layer).__name__ in WEIGHTLESS_TYPES or (not layer.weights and type(layer).__name__ != "InputLayer"):
            inbound = layer.input if isinstance(layer.input, list) else [layer.input]
            frontier.extend(inbound)
        elif layer.weights:
            names.append(layer.name)
    return names


def from_file_path(cfg: ModelConfig) -> Path:
    path = Path(cfg.from_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.from_file: {path} not found")
    return path
