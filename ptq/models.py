"""Model builders from config, in tf_keras (Keras 2) so tfmot can prune them.

Only layers that both tfmot prunes and hls4ml converts are used: Dense,
Conv2D, BatchNormalization, Activation, Flatten, MaxPooling2D. Layers get
stable names (``fc1``, ``conv1``, ``output``) because the pruning stage selects
layers by name.
"""

from __future__ import annotations

from data.backend import keras
from data.config import ModelConfig

OUTPUT_LAYER = "output"


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...]) -> "keras.Model":
    """An uncompiled regression network with one linear output."""
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
    model.add(layers.Dense(1, name=OUTPUT_LAYER))
    return model


def make_loss(name: str, huber_delta: float):
    if name == "huber":
        return keras.losses.Huber(delta=huber_delta)
    if name == "mae":
        return keras.losses.MeanAbsoluteError()
    return keras.losses.MeanSquaredError()
