"""Baseline pretraining: streamed HDF5 in, ``RUN/baseline/`` out, resumable.

The stage lifecycle (lock, refuse or resume, frozen config, metrics.json
last) is :mod:`hepprune.core.lifecycle`; the resumable fit loop is
:mod:`hepprune.core.fit`. This module decides what the baseline is: a
network trained here, or the user's ``model.from_file`` adopted as it is.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hepprune.core import artifacts, distribute, fit, lifecycle
from hepprune.core.config import Config
from hepprune.core.evaluation import evaluate
from hepprune.core.results import BaselineResult
from hepprune.core.runs import BASELINE, HISTORY_FILE, MODEL_FILE, STANDARDIZATION_FILE, config_text
from hepprune.core.task import task_of
from hepprune.data.prepare import Prepared, prepare_data

log = logging.getLogger(__name__)


def train_baseline(cfg: Config, run_dir: str | os.PathLike, *, overwrite: bool = False) -> dict | None:
    """Train (or resume, or recognise as finished) ``RUN/baseline``; return its
    metrics (None on a non-chief worker, which writes nothing)."""
    worker = distribute.start(cfg)
    with lifecycle.stage(Path(run_dir) / BASELINE, config_text(cfg), overwrite=overwrite,
                         chief=worker.is_chief) as stage:
        done = stage.finished()
        if done is not None:
            return done
        # Every bad-data error happens here, before anything is written or removed.
        with prepare_data(cfg, None if overwrite else stage.path) as prepared:
            if cfg.model.from_file:
                return _adopt(cfg, prepared, stage, worker)
            return _train(cfg, prepared, stage, worker)


def _train(cfg: Config, prepared: Prepared, stage: lifecycle.Stage, worker: distribute.Worker) -> dict | None:
    from hepprune.core.backend import keras, tf  # noqa: PLC0415 - deferred: TensorFlow, after the config is checked
    from hepprune.core.models import new_model  # noqa: PLC0415 - deferred: TensorFlow, after the config is checked

    task = task_of(cfg)
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()

    def build() -> Any:
        return new_model(cfg, prepared.reader.input_shape, len(prepared.class_names))

    with worker.scope():  # built before the stage is written: a bad builder or custom object writes nothing
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.train.learning_rate),
                      loss=task.loss(cfg.train))
    stage.begin()
    if worker.is_chief:
        artifacts.write_json(stage.path / STANDARDIZATION_FILE, prepared.standardization.to_dict())

    t0 = time.time()
    tensorboard = keras.callbacks.TensorBoard(str(stage.path / "tensorboard"), write_graph=False, profile_batch=0)
    state = fit.fit_resumable(model, stage.path, prepared.fit_data(cfg, worker), epochs=cfg.train.epochs,
                              policy=fit.EpochPolicy.from_train(cfg.train),
                              callbacks=[tensorboard] if worker.is_chief else [], worker=worker,
                              resume=worker.is_chief or not stage.overwrite)
    if worker.distributed:
        model = distribute.local_copy(model, build)
    if not worker.is_chief:  # the chief writes the artifacts
        worker.barrier()
        worker.close()
        return None
    test, reference = evaluate(model, prepared.batches("test"), task, prepared.class_names)
    stage.check_metrics({"val_loss": state.best_val_loss, "test": test, "reference": reference})
    h5 = fit.save_model_h5(model, stage.path / MODEL_FILE)
    fit.write_history(stage.path / HISTORY_FILE, state.history)
    metrics = stage.finish(BaselineResult(
        val_loss=state.best_val_loss, epochs_run=state.epochs_done, evaluation=task.evaluation(test, reference),
        size=fit.size_metrics(model, h5), events=prepared.events(), best_epoch=state.best_epoch,
        stopped_early=state.stopped_early, train_seconds_this_process=round(time.time() - t0, 2)))
    worker.barrier()
    log.info("baseline done: test %s%s -> %s", task.headline(test),
             f" (raw reference: {task.headline(reference)})" if reference else "", stage.path)
    return metrics


def _adopt(cfg: Config, prepared: Prepared, stage: lifecycle.Stage, worker: distribute.Worker) -> dict | None:
    """``model.from_file`` as the baseline: checked against the dataset and
    the task, evaluated like a trained baseline, and written with nothing trained."""
    from hepprune.core.backend import keras  # noqa: PLC0415 - deferred: TensorFlow, after the config is checked
    from hepprune.core.models import check_model, from_file_path, load_model  # noqa: PLC0415 - deferred: TensorFlow

    task = task_of(cfg)
    path = from_file_path(cfg.model)
    model = load_model(path, cfg.model)
    check_model(model, prepared.reader.input_shape, task, len(prepared.class_names), f"model.from_file {path}")
    if not worker.is_chief:
        return None
    model.compile(loss=task.loss(cfg.train))
    val_ds = prepared.validation(cfg)
    val_loss = float(model.evaluate(val_ds, verbose=0))
    test, reference = evaluate(model, prepared.batches("test"), task, prepared.class_names)
    stage.check_metrics({"val_loss": val_loss, "test": test, "reference": reference})
    stage.begin()
    artifacts.write_json(stage.path / STANDARDIZATION_FILE, prepared.standardization.to_dict())
    h5 = fit.save_model_h5(model, stage.path / MODEL_FILE)
    fit.write_history(stage.path / HISTORY_FILE, [])
    metrics = stage.finish(BaselineResult(
        val_loss=val_loss, epochs_run=0, evaluation=task.evaluation(test, reference),
        size=fit.size_metrics(model, h5), events=prepared.events(), from_file=str(path.resolve())))
    keras.backend.clear_session()
    log.info("baseline adopted from %s: test %s -> %s", path, task.headline(test), stage.path)
    return metrics
