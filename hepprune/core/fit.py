"""The resumable fit loop under every training stage, and saving what it trains.

Resume contract: a checkpoint (weights, optimizer state, learning-rate and
early-stopping counters, history) is committed after every epoch by writing
``checkpoint/state.json`` atomically *after* the TensorFlow checkpoint files
it points to. Killing the process at any moment leaves the previous commit
intact, and because each epoch's data order depends only on ``(seed, epoch)``
and ops run deterministically, the resumed run ends with the same result as
an uninterrupted one.

HDF5 files (model.h5, the best weights) are built in memory and written as
bytes: on a full disk that is one clean ``OSError``, where HDF5 writing to
the disk itself fails half-way, prints "Exception ignored" tracebacks and
can crash the process.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepprune.core import artifacts
from hepprune.core.distribute import Worker
from hepprune.core.errors import RunError
from hepprune.core.results import Size
from hepprune.core.runs import HISTORY_FILE

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoint"
STATE_FILE = "state.json"
BEST_WEIGHTS = "best_weights.h5"  # not *.weights.h5: tf_keras reads that suffix as the Keras 3 format
HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "learning_rate")


@dataclass
class FitData:
    """What one fit needs from the data layer: datasets from the start epoch on."""

    train: Any
    val: Any
    steps_per_epoch: int
    fit_kwargs: dict[str, Any] = field(default_factory=dict)


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
    # The learning rate of each epoch, set as it begins (empty: the optimizer's own). A
    # function of the epoch alone, so a resumed run sets exactly what a straight one did.
    learning_rates: tuple[float, ...] = ()

    @classmethod
    def from_train(cls, t: Any) -> EpochPolicy:
        return cls(t.early_stopping_patience, t.reduce_lr_patience, t.reduce_lr_factor, t.min_learning_rate)


class TrainingDiverged(RunError):
    """The loss stopped being finite; nothing of that epoch was committed."""


@dataclass
class FitState:
    """The training state committed with every checkpoint (checkpoint/state.json)."""

    epochs_done: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    wait_stop: int = 0
    wait_lr: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    last_val_loss: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["best_val_loss"] = None if math.isinf(self.best_val_loss) else self.best_val_loss
        d["last_val_loss"] = None if math.isnan(self.last_val_loss) else self.last_val_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitState:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if known.get("best_val_loss") is None:
            known["best_val_loss"] = math.inf
        if known.get("last_val_loss") is None:
            known["last_val_loss"] = math.nan
        return cls(**known)


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    artifacts.write_text(path, buf.getvalue())


def _in_memory_h5(write: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file that ``write`` fills, built in memory. HDF5's
    core driver lays the file out exactly as on disk (same bytes, same sizes
    in metrics.json), but never touches the disk."""
    with h5py.File(f"hepprune-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as f:
        write(f)
        f.flush()
        return bytes(f.id.get_file_image())


def h5_image(model: Any) -> bytes:
    """The tf_keras HDF5 file of ``model`` (without optimizer state)."""
    def write(f: h5py.File) -> None:
        with warnings.catch_warnings():
            # HDF5 is "legacy" to Keras but it is what hls4ml and the design card expect.
            warnings.simplefilter("ignore", UserWarning)
            model.save(f, save_format="h5", include_optimizer=False)

    return _in_memory_h5(write)


def weights_h5_image(model: Any) -> bytes:
    """What ``model.save_weights(path, save_format="h5")`` writes (tf_keras's
    own writer; its public call only takes a path)."""
    from tf_keras.src.saving.legacy import hdf5_format  # noqa: PLC0415 - deferred: TensorFlow; tf_keras is pinned <2.22

    return _in_memory_h5(lambda f: hdf5_format.save_weights_to_hdf5_group(f, model))


def save_model_h5(model: Any, path: Path) -> bytes:
    """Atomic tf_keras HDF5 save, without optimizer state; returns the file's bytes."""
    image = h5_image(model)
    artifacts.write_bytes(path, image)
    return image


def size_metrics(model: Any, h5: bytes) -> Size:
    """Parameter counts and file sizes of a model saved as ``h5``."""
    return Size(params=int(model.count_params()),
                nonzero_params=int(sum(np.count_nonzero(w) for w in model.get_weights())),
                h5_bytes=len(h5), gzip_bytes=len(gzip.compress(h5, compresslevel=9, mtime=0)))


def _diverged(epoch: int, logs: dict[str, Any], lr: float) -> str | None:
    for key in ("loss", "val_loss"):
        value = float(logs.get(key, math.nan))
        if not math.isfinite(value):
            return (f"epoch {epoch}: the {'training' if key == 'loss' else 'validation'} loss is {value} (not "
                    f"finite); the learning rate {lr:.3g} is likely too high or the inputs or targets hold extreme "
                    "values; lower the learning rate or check the data. Epochs before it are kept for a resume")
    return None


def _make_callback(keras: Any, tf: Any) -> type:
    """The checkpoint/plateau callback, built lazily so tf is imported only here."""

    class ResumableTraining(keras.callbacks.Callback):  # type: ignore[misc]
        """Commits a resumable checkpoint every epoch and owns early stopping and
        learning-rate reduction, so their counters survive a kill too."""

        def __init__(self, ckpt_dir: Path, policy: EpochPolicy, state: FitState, history_path: Path):
            super().__init__()
            self.dir, self.policy, self.state, self.history_path = ckpt_dir, policy, state, history_path

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            rates = self.policy.learning_rates
            if rates:
                self.model.optimizer.learning_rate.assign(rates[min(epoch, len(rates) - 1)])

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs or {}
            s, c = self.state, self.policy
            opt = self.model.optimizer
            lr = float(keras.backend.get_value(opt.learning_rate))
            problem = _diverged(epoch + 1, logs, lr)
            if problem:  # before anything of this epoch is committed
                raise TrainingDiverged(problem)
            val = float(logs["val_loss"])
            s.history.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": val,
                              "learning_rate": lr})
            if val < s.best_val_loss:
                s.best_val_loss, s.best_epoch, s.wait_stop, s.wait_lr = val, epoch + 1, 0, 0
                if c.keep_best:
                    artifacts.write_bytes(self.dir / BEST_WEIGHTS, weights_h5_image(self.model))
            else:
                s.wait_stop += 1
                s.wait_lr += 1
            if c.reduce_lr_patience and s.wait_lr >= c.reduce_lr_patience:
                new_lr = max(lr * c.reduce_lr_factor, c.min_learning_rate)
                if new_lr < lr:
                    opt.learning_rate.assign(new_lr)
                    log.info("epoch %d: val_loss plateau, learning rate %.3g -> %.3g", epoch + 1, lr, new_lr)
                s.wait_lr = 0
            if c.early_stopping_patience and s.wait_stop >= c.early_stopping_patience:
                s.stopped_early = True
                self.model.stop_training = True
                log.info("epoch %d: early stopping, best val_loss %.5g at epoch %d",
                         epoch + 1, s.best_val_loss, s.best_epoch)
            s.epochs_done = epoch + 1
            s.last_val_loss = val
            # Commit order matters: TF checkpoint files first, then the state
            # that names them, then drop older checkpoints.
            name = f"epoch_{epoch + 1:04d}"
            tf.train.Checkpoint(model=self.model, optimizer=opt).write(str(self.dir / name / "ckpt"))
            s.checkpoint = f"{name}/ckpt"
            artifacts.write_json(self.dir / STATE_FILE, s.to_dict())
            for old in self.dir.glob("epoch_*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
            write_history(self.history_path, s.history)

    return ResumableTraining


def fit_resumable(model: Any, stage: Path, data: Callable[[int, int], FitData], *, epochs: int,
                  policy: EpochPolicy, callbacks: list[Any], verbose: int | None = None,
                  worker: Worker | None = None, resume: bool = True) -> FitState:
    """Fit ``model`` (compiled) for ``epochs``, resuming from ``stage/checkpoint``
    if a previous process committed one; return the training state.

    ``data(start, epochs)`` gives the datasets from the first epoch still to
    run. ``callbacks`` run before the checkpoint callback, so a kill between
    an epoch's logging and its commit repeats that epoch rather than losing
    it. With a distributed ``worker`` every worker resumes from the chief's
    checkpoint, reads its own share of the data, and commits its checkpoints
    to :meth:`Worker.write_dir` (saving is a collective, so all must).
    """
    from hepprune.core.backend import keras, tf  # noqa: PLC0415 - deferred: TensorFlow loads only where a model trains

    worker = worker or Worker()
    read_dir = stage / CKPT_DIR
    ckpt_dir = worker.write_dir(stage) / CKPT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = FitState()
    optimizer = model.optimizer
    if resume and (read_dir / STATE_FILE).is_file():
        state = FitState.from_dict(artifacts.read_json(read_dir / STATE_FILE))
        with worker.scope():
            optimizer.build(model.trainable_variables)
        tf.train.Checkpoint(model=model, optimizer=optimizer).read(
            str(read_dir / str(state.checkpoint))).assert_existing_objects_matched()
        log.info("resuming %s after epoch %d", stage, state.epochs_done)
    start = state.epochs_done
    if start < epochs and not state.stopped_early:
        fit = data(start, epochs)
        checkpoint = _make_callback(keras, tf)(ckpt_dir, policy, state, ckpt_dir.parent / HISTORY_FILE)
        model.fit(fit.train, validation_data=fit.val, epochs=epochs, initial_epoch=start,
                  steps_per_epoch=fit.steps_per_epoch, callbacks=[*callbacks, checkpoint],
                  verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose, **fit.fit_kwargs)
    if policy.keep_best:
        # A worker's own copy if it saved one in this process; else the one
        # committed before the resume (the chief's may still be being written).
        best = ckpt_dir / BEST_WEIGHTS
        model.load_weights(str(best if best.is_file() else read_dir / BEST_WEIGHTS))
    return state
