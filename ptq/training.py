"""Baseline pretraining: streamed HDF5 in, ``RUN/baseline/`` out, resumable.

Resume contract: a checkpoint (weights, optimizer state, learning-rate and
early-stopping counters, history) is committed after every epoch by writing
``checkpoint/state.json`` atomically *after* the TensorFlow checkpoint files
it points to. Killing the process at any moment leaves the previous commit
intact, and because each epoch's data order depends only on ``(seed, epoch)``
and ops run deterministically, the resumed run ends with the same result as
an uninterrupted one.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from hepprune.data import loader
from hepprune.data.schema import open_dataset

from hepprune.core import artifacts, distribute, targets
from hepprune.core.classification import classification_metrics, headline
from hepprune.core.config import Config
from hepprune.core.distribute import Worker
from hepprune.core.errors import ConfigError, DataError, RunError
from hepprune.core.metrics import response_metrics

log = logging.getLogger(__name__)

BASELINE = "baseline"
CONFIG_FILE = "config.yaml"
STANDARDIZATION_FILE = "standardization.json"
MODEL_FILE = "model.h5"
HISTORY_FILE = "history.csv"
CKPT_DIR = "checkpoint"
STATE_FILE = "state.json"
BEST_WEIGHTS = "best_weights.h5"  # not *.weights.h5: tf_keras reads that suffix as the Keras 3 format


def resolve_config(cfg: Config, data: str | None = None, epochs: int | None = None) -> Config:
    """Apply command-line overrides; the result is what gets saved and compared on resume."""
    path = data if data is not None else cfg.data.path
    if not path:
        raise ConfigError("no dataset given: set data.path in the config or pass --data GLOB")
    cfg = replace(cfg, data=replace(cfg.data, path=os.path.abspath(os.path.expanduser(path))))
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        cfg = replace(cfg, train=replace(cfg.train, epochs=epochs))
    return cfg


def config_text(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=True)


@dataclass
class Prepared:
    """The opened dataset, its splits and its standardisation."""

    reader: loader.Reader
    splits: dict[str, list[loader.Block]]
    standardization: loader.Standardization

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.reader.info.class_names

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) or 1


def _check_same_inputs(std: loader.Standardization, reader: loader.Reader, saved: Path) -> None:
    """A dataset given to a later stage (``--data``) must have the inputs the
    run's model was trained on, or the model would fail deep inside TensorFlow."""
    info = reader.info
    if reader.key == "inputs":
        have, want = tuple(info.feature_names), tuple(std.feature_names)
        if have != want:
            diff = next((f"'{w}' vs '{h}'" for w, h in zip(want, have) if w != h), "")
            raise DataError(f"{info.shards[0].path} has {len(have)} input features, the run was trained on "
                            f"{len(want)} ({saved}){'; first difference: ' + diff if diff else ''}; "
                            "use the baseline's dataset or one with the same features")
    elif np.shape(std.mean) != tuple(info.image_shape or ()):
        raise DataError(f"{info.shards[0].path} has images of shape {info.image_shape}, which the run's "
                        f"standardisation ({saved}) does not fit; use the baseline's dataset")


def prepare_data(cfg: Config, stage_dir: Path | None = None) -> Prepared:
    """Validate the dataset, split it, and scan it once for NaN/Inf and the
    standardisation (reused from ``stage_dir`` when a run already computed it)."""
    info = open_dataset(cfg.data.path)
    if cfg.task == "classification" and not info.class_names:
        raise DataError(f"task=classification needs the dataset's class_names file attribute (the target is an "
                        f"index into it); {info.shards[0].path} has none")
    view = "image" if cfg.model.type == "cnn" else "flat"
    reader = loader.Reader(info, view)
    splits = loader.split_blocks(info, cfg.data.val_fraction, cfg.data.test_fraction)
    saved = stage_dir / STANDARDIZATION_FILE if stage_dir else None
    if saved is not None and saved.is_file():
        std = loader.Standardization.from_dict(artifacts.read_json(saved))
        _check_same_inputs(std, reader, saved)
    else:
        log.info("scanning %d events in %d shard(s) for NaN/Inf and input statistics",
                 info.n_events, len(info.shards))
        std = loader.scan(reader, splits, cfg.data,
                          len(info.class_names) if cfg.task == "classification" else None)
    log.info("split: %s events", ", ".join(f"{s} {loader.n_events(b)}" for s, b in splits.items()))
    return Prepared(reader, splits, std)


def predict(model, prepared: Prepared, split: str, cfg: Config, batch_size: int = 8192):
    """Predicted and true target values (target units; class probabilities
    for classification) and the reference, unshuffled."""
    preds, trues, refs = [], [], []
    for x, true, ref in loader.iter_batches(prepared.reader, prepared.splits[split], batch_size,
                                            standardization=prepared.standardization):
        t = model.predict_on_batch(x)
        preds.append(np.asarray(t) if cfg.task == "classification" else targets.decode(t, ref, cfg.data))
        trues.append(true)
        refs.append(ref)
    return np.concatenate(preds), np.concatenate(trues), np.concatenate(refs)


def evaluate_test(model, prepared: Prepared, cfg: Config) -> tuple[dict, dict | None]:
    """(network, raw reference) response metrics on the held-out test split;
    (accuracy and AUC, None) for classification."""
    pred, true, ref = predict(model, prepared, "test", cfg)
    if cfg.task == "classification":
        return classification_metrics(pred, true, prepared.class_names), None
    return response_metrics(pred, true), response_metrics(ref, true)


HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "learning_rate")


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    artifacts.write_text(path, buf.getvalue())


def check_same_config(stage_dir: Path, cfg: Config) -> None:
    saved = stage_dir / CONFIG_FILE
    if saved.is_file() and saved.read_text() != config_text(cfg):
        raise RunError(f"{stage_dir} was started with a different config (see {saved}); "
                       "rerun with the same settings to resume, or use another --run-dir or --overwrite")


@dataclass(frozen=True)
class EpochPolicy:
    """What happens at the end of each epoch besides the checkpoint.

    Pretraining keeps the best-validation weights and may stop early; the
    pruning stage keeps the last weights (the pruned ones) and never stops.
    """

    early_stopping_patience: int = 0
    reduce_lr_patience: int = 0
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    keep_best: bool = True

    @classmethod
    def from_train(cls, t) -> "EpochPolicy":
        return cls(t.early_stopping_patience, t.reduce_lr_patience, t.reduce_lr_factor, t.min_learning_rate)


def _make_callback(keras, tf):
    """The checkpoint/plateau callback, built lazily so tf is imported only here."""

    class ResumableTraining(keras.callbacks.Callback):
        """Commits a resumable checkpoint every epoch and owns early stopping and
        learning-rate reduction, so their counters survive a kill too."""

        def __init__(self, ckpt_dir: Path, policy: EpochPolicy, state: dict, history_path: Path):
            super().__init__()
            self.dir, self.policy, self.state, self.history_path = ckpt_dir, policy, state, history_path

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            s, c = self.state, self.policy
            opt = self.model.optimizer
            lr = float(keras.backend.get_value(opt.learning_rate))
            val = float(logs["val_loss"])
            s["history"].append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": val,
                                 "learning_rate": lr})
            if val < s["best_val_loss"]:
                s.update(best_val_loss=val, best_epoch=epoch + 1, wait_stop=0, wait_lr=0)
                if c.keep_best:
                    with artifacts.atomic_path(self.dir / BEST_WEIGHTS) as tmp:
                        self.model.save_weights(str(tmp), save_format="h5")
            else:
                s["wait_stop"] += 1
                s["wait_lr"] += 1
            if c.reduce_lr_patience and s["wait_lr"] >= c.reduce_lr_patience:
                new_lr = max(lr * c.reduce_lr_factor, c.min_learning_rate)
                if new_lr < lr:
                    opt.learning_rate.assign(new_lr)
                    log.info("epoch %d: val_loss plateau, learning rate %.3g -> %.3g", epoch + 1, lr, new_lr)
                s["wait_lr"] = 0
            if c.early_stopping_patience and s["wait_stop"] >= c.early_stopping_patience:
                s["stopped_early"] = True
                self.model.stop_training = True
                log.info("epoch %d: early stopping, best val_loss %.5g at epoch %d",
                         epoch + 1, s["best_val_loss"], s["best_epoch"])
            s["epochs_done"] = epoch + 1
            s["last_val_loss"] = val
            # Commit order matters: TF checkpoint files first, then the state
            # that names them, then drop older checkpoints.
            name = f"epoch_{epoch + 1:04d}"
            tf.train.Checkpoint(model=self.model, optimizer=opt).write(str(self.dir / name / "ckpt"))
            s["checkpoint"] = f"{name}/ckpt"
            artifacts.write_json(self.dir / STATE_FILE, s)
            for old in self.dir.glob("epoch_*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
            write_history(self.history_path, s["history"])

    return ResumableTraining


def fit_resumable(model, prepared: Prepared, cfg: Config, stage: Path, *, epochs: int, policy: EpochPolicy,
                  callbacks: list, verbose: int | None = None, worker: Worker | None = None,
                  resume: bool = True) -> dict:
    """Fit ``model`` (compiled) for ``epochs``, resuming from ``stage/checkpoint``
    if a previous process committed one; return the training state.

    ``callbacks`` run before the checkpoint callback, so a kill between an
    epoch's logging and its commit repeats that epoch rather than losing it.
    With a distributed ``worker`` every worker resumes from the chief's
    checkpoint, reads its own share of the data, and commits its checkpoints
    to :meth:`Worker.write_dir` (saving is a collective, so all must).
    """
    from hepprune.core.backend import keras, tf

    worker = worker or Worker()
    read_dir = stage / CKPT_DIR
    ckpt_dir = worker.write_dir(stage) / CKPT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {"epochs_done": 0, "best_val_loss": float("inf"), "best_epoch": 0, "wait_stop": 0,
             "wait_lr": 0, "stopped_early": False, "history": [], "checkpoint": None}
    optimizer = model.optimizer
    if resume and (read_dir / STATE_FILE).is_file():
        state = artifacts.read_json(read_dir / STATE_FILE)
        with worker.scope():
            optimizer.build(model.trainable_variables)
        tf.train.Checkpoint(model=model, optimizer=optimizer).read(
            str(read_dir / state["checkpoint"])).assert_existing_objects_matched()
        log.info("resuming %s after epoch %d", stage, state["epochs_done"])
    start = state["epochs_done"]
    if start < epochs and not state["stopped_early"]:
        train_blocks, val_blocks = prepared.splits["train"], prepared.splits["val"]
        steps = steps_per_epoch(prepared, cfg)
        extra = {}
        if worker.distributed:  # fixed step counts on every worker: each step is a collective
            val_steps = loader.steps(loader.n_events(val_blocks), cfg.data.batch_size)
            shards = ((worker.index, worker.workers, steps), (worker.index, worker.workers, val_steps))
            extra["validation_steps"] = val_steps
        else:
            shards = (None, None)
        train_ds = loader.as_tf_dataset(prepared.reader, train_blocks, cfg.data, prepared.standardization,
                                        seed=cfg.seed, epochs=range(start, epochs), shard=shards[0],
                                        task=cfg.task)
        val_ds = loader.as_tf_dataset(prepared.reader, val_blocks, cfg.data, prepared.standardization,
                                      shard=shards[1], task=cfg.task)
        checkpoint = _make_callback(keras, tf)(ckpt_dir, policy, state, ckpt_dir.parent / HISTORY_FILE)
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start,
                  steps_per_epoch=steps, callbacks=[*callbacks, checkpoint],
                  verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose, **extra)
    if policy.keep_best:
        # A worker's own copy if it saved one in this process; else the one
        # committed before the resume (the chief's may still be being written).
        best = ckpt_dir / BEST_WEIGHTS
        model.load_weights(str(best if best.is_file() else read_dir / BEST_WEIGHTS))
    return state


def steps_per_epoch(prepared: Prepared, cfg: Config) -> int:
    return loader.steps(loader.n_events(prepared.splits["train"]), cfg.data.batch_size)


def size_metrics(model, h5_path: Path) -> dict:
    """Parameter counts and file sizes; gzip bytes is what pruning studies compare."""
    h5 = Path(h5_path).read_bytes()
    return {"params": int(model.count_params()),
            "nonzero_params": int(sum(np.count_nonzero(w) for w in model.get_weights())),
            "h5_bytes": len(h5), "gzip_bytes": len(gzip.compress(h5, compresslevel=9, mtime=0))}


def save_model_h5(model, path: Path) -> None:
    """Atomic tf_keras HDF5 save, without optimizer state."""
    with artifacts.atomic_path(path) as tmp, warnings.catch_warnings():
        # HDF5 is "legacy" to Keras but it is what hls4ml and the design card expect.
        warnings.simplefilter("ignore", UserWarning)
        model.save(str(tmp), save_format="h5", include_optimizer=False)


def train_baseline(cfg: Config, run_dir: str | os.PathLike, *, overwrite: bool = False) -> dict | None:
    """Train (or resume, or recognise as finished) ``RUN/baseline``; return its
    metrics (None on a non-chief worker, which writes nothing)."""
    stage = Path(run_dir) / BASELINE
    if not overwrite:
        check_same_config(stage, cfg)
        if artifacts.is_complete(stage):
            log.info("%s is already complete; nothing to do", stage)
            return artifacts.read_json(stage / artifacts.METRICS_FILE)

    # Every bad-data error happens here, before anything is written or removed.
    prepared = prepare_data(cfg, None if overwrite else stage)

    from hepprune.core.backend import keras, tf
    from hepprune.core.models import make_loss, new_model

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    worker = distribute.start(cfg)
    if cfg.model.from_file:
        return adopt_baseline(cfg, prepared, stage, overwrite=overwrite, chief=worker.is_chief)
    def build():
        return new_model(cfg, prepared.reader.input_shape, prepared.n_outputs)

    with worker.scope():  # built before the stage is written: a bad builder or custom object writes nothing
        model = build()
        optimizer = keras.optimizers.Adam(learning_rate=cfg.train.learning_rate)
        model.compile(optimizer=optimizer, loss=make_loss(cfg.train.loss, cfg.train.huber_delta, cfg.task))
    if worker.is_chief:
        if overwrite and stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True, exist_ok=True)
        artifacts.write_text(stage / CONFIG_FILE, config_text(cfg))
        artifacts.write_json(stage / STANDARDIZATION_FILE, prepared.standardization.to_dict())

    t0 = time.time()
    tensorboard = keras.callbacks.TensorBoard(str(stage / "tensorboard"), write_graph=False, profile_batch=0)
    state = fit_resumable(model, prepared, cfg, stage, epochs=cfg.train.epochs,
                          policy=EpochPolicy.from_train(cfg.train),
                          callbacks=[tensorboard] if worker.is_chief else [], worker=worker,
                          resume=worker.is_chief or not overwrite)
    if worker.distributed:
        model = distribute.local_copy(model, build)
    if not worker.is_chief:  # the chief writes the artifacts
        worker.barrier()
        worker.close()
        prepared.reader.close()
        return None
    test, reference = evaluate_test(model, prepared, cfg)
    save_model_h5(model, stage / MODEL_FILE)
    write_history(stage / HISTORY_FILE, state["history"])
    metrics = {
        "stage": BASELINE,
        "val_loss": state["best_val_loss"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epochs_done"],
        "stopped_early": state["stopped_early"],
        **_task_metrics(cfg, test, reference),
        **size_metrics(model, stage / MODEL_FILE),
        "events": {s: loader.n_events(b) for s, b in prepared.splits.items()},
        "train_seconds_this_process": round(time.time() - t0, 2),
    }
    artifacts.write_metrics(stage, metrics)
    prepared.reader.close()
    worker.barrier()
    log.info("baseline done: test %s%s -> %s", headline(test),
             f" (raw reference: {headline(reference)})" if reference else "", stage)
    return metrics


def _task_metrics(cfg: Config, test: dict, reference: dict | None) -> dict:
    if cfg.task == "classification":
        return {"task": cfg.task, "test": test}
    return {"task": cfg.task, "test": test, "reference": reference,
            "target_transform": cfg.data.target_transform, "loss": cfg.train.loss}


def adopt_baseline(cfg: Config, prepared: Prepared, stage: Path, *, overwrite: bool, chief: bool = True) -> dict | None:
    """``model.from_file`` as the baseline: checked against the dataset and
    the task, evaluated like a trained baseline, and written to ``stage``
    with nothing trained."""
    from hepprune.core.backend import keras
    from hepprune.core.models import check_model, from_file_path, load_model, make_loss

    path = from_file_path(cfg.model)
    model = load_model(path, cfg.model)
    check_model(model, prepared.reader.input_shape, cfg.task, len(prepared.class_names) or None,
                f"model.from_file {path}")
    if not chief:
        prepared.reader.close()
        return None
    model.compile(loss=make_loss(cfg.train.loss, cfg.train.huber_delta, cfg.task))
    val_ds = loader.as_tf_dataset(prepared.reader, prepared.splits["val"], cfg.data, prepared.standardization,
                                  task=cfg.task)
    val_loss = float(model.evaluate(val_ds, verbose=0))
    test, reference = evaluate_test(model, prepared, cfg)
    if overwrite and stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(stage / CONFIG_FILE, config_text(cfg))
    artifacts.write_json(stage / STANDARDIZATION_FILE, prepared.standardization.to_dict())
    save_model_h5(model, stage / MODEL_FILE)
    write_history(stage / HISTORY_FILE, [])
    metrics = {"stage": BASELINE, "from_file": str(path.resolve()), "val_loss": val_loss, "epochs_run": 0,
               **_task_metrics(cfg, test, reference), **size_metrics(model, stage / MODEL_FILE),
               "events": {s: loader.n_events(b) for s, b in prepared.splits.items()}}
    artifacts.write_metrics(stage, metrics)
    prepared.reader.close()
    keras.backend.clear_session()
    log.info("baseline adopted from %s: test %s -> %s", path, headline(test), stage)
    return metrics
