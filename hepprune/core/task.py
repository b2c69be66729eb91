"""What the network is for: a regression (a value, judged by pred/true) or a
classification (a class index, judged by accuracy and ROC AUC).

Everything that differs between the two lives on a :class:`Task`, chosen
once from ``cfg.task`` by :func:`task_of`; no other module tests the task's
name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hepprune.core import targets
from hepprune.core.classification import classification_metrics
from hepprune.core.config import Config, DataConfig, TrainConfig
from hepprune.core.errors import ConfigError, DataError
from hepprune.core.metrics import response_metrics

if TYPE_CHECKING:  # the schema lives in the data layer, above the core
    from hepprune.data.schema import DatasetInfo


@dataclass(frozen=True)
class Task:
    """The regression task; :class:`Classification` overrides what differs."""

    name = "regression"
    data: DataConfig

    # ------------------------------------------------------------ the data
    def check_dataset(self, info: DatasetInfo) -> None:
        """Refuse a dataset the task cannot use, before anything is read."""

    def bad_targets(self, true: np.ndarray, n_classes: int) -> tuple[np.ndarray, str] | None:
        """(mask of unusable target values, why) or None: the response
        pred/true, and the log transform, need a positive target."""
        bad = ~(true > 0)
        if bad.any():
            return bad, "is not positive; the response pred/true divides by it"
        return None

    def outputs(self, n_classes: int) -> int:
        return 1

    def encode(self, true: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The training target from the true value."""
        return targets.encode(true, reference, self.data)

    def decode(self, output: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The network output in the units metrics are computed in."""
        return targets.decode(output, reference, self.data)

    # ------------------------------------------------------------ the model
    def loss(self, train: TrainConfig) -> Any:
        from hepprune.core.backend import keras  # deferred: TensorFlow loads only where a model is built

        if train.loss == "huber":
            return keras.losses.Huber(delta=train.huber_delta)
        if train.loss == "mae":
            return keras.losses.MeanAbsoluteError()
        return keras.losses.MeanSquaredError()

    def output_activation(self) -> str | None:
        """The activation layer the built-in network ends with (None: linear)."""
        return None

    def check_outputs(self, units: int, n_classes: int | None, where: str) -> None:
        if units != 1:
            raise ConfigError(f"{where} has {units} outputs; a regression model needs one")

    # ------------------------------------------------------------ the metrics
    def metrics(self, pred: np.ndarray, true: np.ndarray, class_names: tuple[str, ...]) -> dict:
        return response_metrics(pred, true)

    def reference_metrics(self, ref: np.ndarray, true: np.ndarray) -> dict | None:
        """The raw reference estimator's metrics, beside the network's."""
        return response_metrics(ref, true)

    def headline(self, test: dict) -> str:
        """One log line's worth of a model's test metrics."""
        return f"response {test['response_median']:.4f}, resolution {test['resolution_q68']:.4f}"

    def stage_metrics(self, cfg: Config, test: dict, reference: dict | None) -> dict:
        """The task's part of a model stage's metrics.json."""
        return {"task": self.name, "test": test, "reference": reference,
                "target_transform": cfg.data.target_transform, "loss": cfg.train.loss}

    def refuse_pred_true(self, command: str) -> None:
        """Commands that measure pred/true response call this first."""


@dataclass(frozen=True)
class Classification(Task):
    name = "classification"

    def check_dataset(self, info: DatasetInfo) -> None:
        if not info.class_names:
            raise DataError(f"task=classification needs the dataset's class_names file attribute (the target is "
                            f"an index into it); {info.shards[0].path} has none")

    def bad_targets(self, true: np.ndarray, n_classes: int) -> tuple[np.ndarray, str] | None:
        bad = (true != np.round(true)) | (true < 0) | (true >= n_classes)
        if bad.any():
            return bad, (f"is not a class index in 0..{n_classes - 1} (the class_names attribute lists "
                         f"{n_classes})")
        return None

    def outputs(self, n_classes: int) -> int:
        return n_classes

    def encode(self, true: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return true.astype(np.float32)  # the class index; sparse categorical cross-entropy

    def decode(self, output: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return np.asarray(output)  # class probabilities

    def loss(self, train: TrainConfig) -> Any:
        from hepprune.core.backend import keras  # deferred: TensorFlow loads only where a model is built

        return keras.losses.SparseCategoricalCrossentropy()

    def output_activation(self) -> str | None:
        return "softmax"

    def check_outputs(self, units: int, n_classes: int | None, where: str) -> None:
        if units != n_classes:
            raise ConfigError(f"{where} has {units} output(s) but the dataset has {n_classes} classes; a "
                              "classification model needs one softmax output per class")

    def metrics(self, pred: np.ndarray, true: np.ndarray, class_names: tuple[str, ...]) -> dict:
        return classification_metrics(pred, true, class_names)

    def reference_metrics(self, ref: np.ndarray, true: np.ndarray) -> dict | None:
        return None

    def headline(self, test: dict) -> str:
        return f"accuracy {test['accuracy']:.4f}, mean AUC {test['auc_mean']:.4f}"

    def stage_metrics(self, cfg: Config, test: dict, reference: dict | None) -> dict:
        return {"task": self.name, "test": test}

    def refuse_pred_true(self, command: str) -> None:
        raise ConfigError(f"{command} compares pred/true response and resolution; it does not support "
                          "task=classification yet (prune/analyze_prune.py compares classifiers)")


TASKS: dict[str, type[Task]] = {"regression": Task, "classification": Classification}


def task_of(cfg: Config) -> Task:
    return TASKS[cfg.task](cfg.data)

