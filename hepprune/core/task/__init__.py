"""What the network is for, and everything that follows from it.

A *regression* predicts a value and is judged by pred/true (response and
resolution, beside a raw reference estimator); a *classification* predicts
class probabilities and is judged by accuracy and ROC AUC. Each is a
:class:`Task`, chosen once from ``cfg.task`` by :func:`task_of`; it owns the
loss, the output layer, the target checks, the metrics, the analysis tables
and plots and the firmware-agreement check. No other module tests the
task's name.
"""

from __future__ import annotations

from hepprune.core.config import Config
from hepprune.core.task.base import Analysis, Task
from hepprune.core.task.classification import Classification
from hepprune.core.task.regression import Regression

TASKS: dict[str, type[Task]] = {"regression": Regression, "classification": Classification}


def task_of(cfg: Config) -> Task:
    return TASKS[cfg.task](cfg)


__all__ = ["TASKS", "Analysis", "Classification", "Regression", "Task", "task_of"]
