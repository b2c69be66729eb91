"""The pruning sweep: from ``RUN/baseline`` to one ``RUN/prune_<target>`` per target.

Each target is independent (its own directory, seed and checkpoint), so a
SLURM array task can run one target alone and get the same result as the
sweep. Training never stops early here: a study this project descends from
lost its 0.5 target to early stopping firing before the schedule finished.
After training, every pruned layer's fraction of zero weights is measured
and the run fails if any layer misses its target by more than
``prune.tolerance``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hepprune.core import artifacts, distribute, fit, hparams, lifecycle, qat
from hepprune.core.backend import keras, tf
from hepprune.core.config import Config, PruneConfig
from hepprune.core.errors import RunError
from hepprune.core.evaluation import evaluate
from hepprune.core.models import load_model, output_layers
from hepprune.core.results import Evaluation, PruneResult
from hepprune.core.runs import BASELINE, MODEL_FILE, format_target, prune_config_text, prune_stage, setting_label
from hepprune.core.task import task_of
from hepprune.data.prepare import prepare_data
from hepprune.prune import plan
from hepprune.prune.plan import PRUNABLE_TYPES, LayerSpec, ModelSpec
from hepprune.prune.schedule import Schedule
from hepprune.ptq.firmware import firmware_cost

log = logging.getLogger(__name__)

WRAPPED_MODEL_FILE = "model_pruning_wrappers.h5"


def is_custom_prunable(layer) -> bool:
    """A user layer implementing tfmot's PrunableLayer (get_prunable_weights)."""
    from hepprune.core.backend import tfmot  # noqa: PLC0415 - deferred: tfmot (~1 s), only where a model is pruned

    return isinstance(layer, tfmot.sparsity.keras.PrunableLayer)


def can_prune(layer) -> bool:
    """A built-in kernel, or a PrunableLayer with weights to prune (QKeras'
    QActivation is a PrunableLayer with none)."""
    return type(layer).__name__ in PRUNABLE_TYPES or (is_custom_prunable(layer) and bool(layer.get_prunable_weights()))


def prunable_weights(layer) -> list:
    """The weights the pruner masks: a custom layer says which; else the kernel."""
    return list(layer.get_prunable_weights()) if is_custom_prunable(layer) else [layer.kernel]


def describe_layer(layer) -> LayerSpec:
    """One live layer as :mod:`prune.plan` decides on it."""
    custom = is_custom_prunable(layer) and bool(layer.get_prunable_weights())  # QActivation: nothing to prune
    shapes = (tuple(tuple(int(d) for d in w.shape) for w in prunable_weights(layer))
              if custom or type(layer).__name__ in PRUNABLE_TYPES else ())
    return LayerSpec(layer.name, type(layer).__name__, bool(layer.weights), custom, shapes)


def describe(model) -> ModelSpec:
    """A live model as :mod:`prune.plan` decides on it."""
    return ModelSpec(type(model).__name__, isinstance(model, keras.Sequential),
                     tuple(describe_layer(layer) for layer in model.layers), tuple(output_layers(model)))


def prunable_layers(model) -> list[str]:
    """Every prunable layer except those producing the output (plan.prunable_layers)."""
    return plan.prunable_layers(describe(model))


def select_layers(model, include: list[str], exclude: list[str]) -> list[str]:
    """Layer names to prune; unknown names or patterns are an error (plan.select_layers)."""
    return plan.select_layers(describe(model), include, exclude)


def wrap_for_pruning(model, layers: list[str], schedule: Schedule, cfg, *, shared_step: bool = True):
    """The model with each chosen layer wrapped: tfmot's magnitude wrapper, or
    :class:`prune.neuron.NeuronPruned` for neuron granularity.

    ``shared_step``: the model's train step does the pruning bookkeeping once
    for all layers (:mod:`prune.shared_step`, same result, less time per step);
    False keeps it in each wrapper, as tfmot does (needed under a distribution
    strategy). Either way, fit it with tfmot's ``UpdatePruningStep`` callback.
    """
    from hepprune.core.backend import tfmot  # noqa: PLC0415 - deferred: tfmot (~1 s), only where a model is pruned
    from hepprune.prune import shared_step as shared  # noqa: PLC0415 - deferred: tfmot

    if cfg.granularity == "neuron":
        from hepprune.prune.neuron import NeuronPruned, check_supported  # noqa: PLC0415 - deferred: tfmot

        check_supported(model, layers)

    def wrap(layer):
        if layer.name not in layers:
            return layer
        if cfg.granularity == "neuron":
            return NeuronPruned(layer, schedule.tfmot(), stepped_by_model=shared_step,
                                name=f"neuron_pruned_{layer.name}")
        if shared_step:
            return shared.wrap(layer, schedule.tfmot(), plan.block_size(describe_layer(layer), cfg))
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=schedule.tfmot(), block_size=plan.block_size(describe_layer(layer), cfg))

    # clone_model hands the original layer objects to `wrap`, so the wrapped
    # model shares (starts from, and trains) the baseline model's layers.
    wrapped = keras.models.clone_model(model, clone_function=wrap)
    if shared_step:
        shared.install(wrapped)
    return wrapped


def mask_sparsity(model) -> dict[str, tuple[int, int]]:
    """(masked, total) weights per wrapped layer, from the live masks."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        if hasattr(layer, "pruning_vars"):  # tfmot
            masks = [np.asarray(m.numpy()) for _, m, _ in layer.pruning_vars]
            out[inner.name] = (int(sum(m.size - m.sum() for m in masks)), int(sum(m.size for m in masks)))
        elif hasattr(layer, "mask"):  # neuron: a unit mask stands for its kernel column
            m = layer.mask.numpy()
            rows = int(np.prod(inner.kernel.shape[:-1]))
            out[inner.name] = (int((m.size - m.sum()) * rows), int(m.size * rows))
    return out


def strip(model, base_model, layers: list[str], granularity: str):
    """(plain model with the masks applied, model to export): the same model
    for weight pruning; for neuron pruning the export is physically smaller."""
    from hepprune.core.backend import tfmot  # noqa: PLC0415 - deferred: tfmot (~1 s), only where a model is pruned

    if granularity != "neuron":
        stripped = tfmot.sparsity.keras.strip_pruning(model)
        return stripped, stripped
    from hepprune.prune.neuron import apply_masks, shrink_model  # noqa: PLC0415 - deferred: tfmot

    masks = {layer.layer.name: layer.mask.numpy() > 0.5 for layer in model.layers
             if getattr(layer, "layer", None) is not None and layer.layer.name in layers}
    apply_masks(base_model, masks)  # base_model's layers are the trained ones
    return base_model, shrink_model(base_model, masks)


def kernel_sparsity(model, layers: list[str]) -> dict[str, tuple[int, int]]:
    """(zeros, size) of each named layer's pruned weights in a stripped model."""
    out = {}
    for name in layers:
        weights = [np.asarray(w.numpy()) for w in prunable_weights(model.get_layer(name))]
        out[name] = (int(sum(np.count_nonzero(w == 0) for w in weights)), int(sum(w.size for w in weights)))
    return out


def neuron_threshold(layer) -> float:
    """A neuron wrapper's threshold: the smallest kernel-column L2 norm among
    the kept units (units below it were dropped), 0 while none is masked,
    like tfmot's threshold before its first mask update."""
    mask = layer.mask.numpy() > 0.5
    if mask.all():
        return 0.0
    kernel = layer.layer.kernel.numpy()
    norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]).astype(np.float64) ** 2).sum(axis=0))
    return float(norms[mask].min()) if mask.any() else 0.0


def _sparsity_logger(keras, tf, logdir: Path):
    class SparsityLogger(keras.callbacks.Callback):
        """Per-layer sparsity and threshold, model sparsity and the learning
        rate at the *end* of each epoch: tfmot's PruningSummaries logs at
        epoch start, so it never shows the final state."""

        def __init__(self):
            super().__init__()
            self.writer = tf.summary.create_file_writer(str(logdir))

        def on_epoch_end(self, epoch, logs=None):
            step = int(keras.backend.get_value(self.model.optimizer.iterations))
            counts = mask_sparsity(self.model)
            with self.writer.as_default():
                for name, (zeros, total) in counts.items():
                    tf.summary.scalar(f"sparsity/{name}", zeros / total, step=step)
                for layer in self.model.layers:
                    for _, _, threshold in getattr(layer, "pruning_vars", []):
                        tf.summary.scalar(f"threshold/{layer.layer.name}",
                                          float(keras.backend.get_value(threshold)), step=step)
                    if hasattr(layer, "mask") and not hasattr(layer, "pruning_vars"):  # neuron
                        tf.summary.scalar(f"threshold/{layer.layer.name}", neuron_threshold(layer), step=step)
                zeros = sum(z for z, _ in counts.values())
                total = sum(t for _, t in counts.values())
                tf.summary.scalar("sparsity/model", zeros / max(1, total), step=step)
                tf.summary.scalar("learning_rate", float(keras.backend.get_value(
                    self.model.optimizer.learning_rate)), step=step)
            self.writer.flush()

    return SparsityLogger()


def plan_target(cfg: Config, target: float, model, steps_per_epoch: int) -> tuple[list[str], Schedule]:
    """The layers and schedule for one target, or the ConfigError that refuses it (plan.plan_target)."""
    return plan.plan_target(cfg, target, describe(model), steps_per_epoch)


def starting_model(cfg: Config, run_dir: Path, bits: int | None):
    """The model a sweep item starts from: the baseline, or its QKeras copy at ``bits``."""
    model = load_model(run_dir / BASELINE / MODEL_FILE, cfg.model)
    return model if bits is None else qat.quantise(model, bits, cfg.qat)


def check_sweep(cfg: Config, run_dir: Path, pairs: list[tuple[float, int | None]]) -> None:
    """Refuse the whole sweep before any model trains if any item would be refused."""
    with prepare_data(cfg, run_dir / BASELINE) as prepared:
        models = {bits: starting_model(cfg, run_dir, bits) for bits in dict.fromkeys(b for _, b in pairs)}
        for target, bits in pairs:
            if target:
                plan_target(cfg, target, models[bits], prepared.steps_per_epoch(cfg))


def prune_target(cfg: Config, run_dir: Path, target: float, bits: int | None = None, *,
                 overwrite: bool = False) -> dict | None:
    """Prune the baseline (its QKeras copy at ``bits``) to one target sparsity
    in ``RUN/prune_<target>[_q<bits>]``; target 0 trains a QAT setting's dense
    reference the same way, without pruning. Its metrics (None on a non-chief
    worker, which writes nothing)."""
    stage_cfg = replace(cfg, prune=replace(cfg.prune, targets=[target])) if target else cfg
    worker = distribute.start(cfg)
    with lifecycle.stage(run_dir / prune_stage(target, bits), prune_config_text(cfg, target, bits),
                         overwrite=overwrite, chief=worker.is_chief) as stage:
        done = stage.finished()
        if done is not None:
            return done
        with prepare_data(cfg, run_dir / BASELINE) as prepared:  # the baseline's standardisation
            return _prune(stage_cfg, run_dir, target, bits, stage, prepared, worker)


def log_hparams(cfg: Config, run_dir: Path, stage_dir: Path, target: float, bits: int | None,
                schedule: Schedule | None, test: dict, achieved: float, cost: dict) -> None:
    """The run on TensorBoard's HParams dashboard: its settings and final
    metrics, shifts against the baseline's test metrics and estimated cost."""
    p = cfg.prune
    base = artifacts.read_json(run_dir / BASELINE / artifacts.METRICS_FILE).get("test")
    hparams.log_session(stage_dir / "tensorboard", stage_dir.name, {
        "target": float(target), "bits": int(bits or 0), "granularity": p.granularity,
        "schedule": schedule.kind if schedule else "dense", "epochs": p.epochs, "warmup_epochs": p.warmup_epochs,
        "pruning_epochs": p.pruning_epochs, "learning_rate": float(p.learning_rate), "finetune_lr": p.finetune_lr,
        "batch_size": int(cfg.data.batch_size), "distill": float(p.distill),
    }, hparams.final_metrics(test, base, achieved, cost))


def distilled(make_data, cfg: Config, run_dir: Path):
    """With ``prune.distill`` = a > 0, the training target becomes (1 - a) x
    the true target + a x the baseline's output for the same inputs: the
    pruned (or quantised) model is taught to reproduce the float baseline,
    whose response and resolution it is judged against, bin by bin.
    Validation keeps the true target."""
    a = cfg.prune.distill
    if not a:
        return make_data
    teacher = load_model(run_dir / BASELINE / MODEL_FILE, cfg.model)

    def blend(x, y):
        t = tf.reshape(tf.cast(teacher(x, training=False), y.dtype), tf.shape(y))
        return x, (1 - a) * y + a * t

    def make(start: int, epochs: int) -> fit.FitData:
        data = make_data(start, epochs)
        return replace(data, train=data.train.map(blend, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

    return make


def finetune_learning_rates(p: PruneConfig) -> tuple[float, ...]:
    """Per-epoch learning rates of a pruning run: ``learning_rate`` through warm-up
    and ramp, then (``finetune_lr: cosine``) a half cosine over the fine-tuning
    epochs that ends near 0. Without early stopping the last weights are the
    model, and a decayed rate stops Adam's noise from deciding them."""
    if p.finetune_lr == "constant":
        return ()
    ramp = p.warmup_epochs + p.pruning_epochs
    tail = p.epochs - ramp
    return (p.learning_rate,) * ramp + tuple(p.learning_rate * 0.5 * (1 + math.cos(math.pi * (k + 1) / (tail + 1)))
                                             for k in range(tail))


def _prune(cfg: Config, run_dir: Path, target: float, bits: int | None, stage: lifecycle.Stage, prepared,
           worker) -> dict | None:
    from hepprune.core.backend import tfmot  # noqa: PLC0415 - deferred: tfmot (~1 s), only where a model is pruned

    task = task_of(cfg)
    if not worker.distributed:  # a strategy outlives Keras' session state, so keep it then
        keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()

    def load_base():
        return starting_model(cfg, run_dir, bits)

    with worker.scope():
        base_model = load_base()
    dense = not target  # a QAT setting's dense reference: the same training, nothing pruned
    layers, schedule = ([], None) if dense else plan_target(cfg, target, base_model, prepared.steps_per_epoch(cfg))
    # Everything above can refuse; only now is anything written.
    stage.begin()
    if schedule is None:
        log.info("%s: training the %s model dense (the reference of its bit setting)", stage.path.name,
                 setting_label(bits))
    else:
        if worker.is_chief:
            artifacts.write_json(stage.path / "schedule.json", {"layers": layers, **schedule.to_dict()})
        log.info("%s: pruning %s to %s, %s schedule, mask updates at steps %d..%d every %d "
                 "(%d updates, %d steps per epoch)", stage.path.name, ", ".join(layers), format_target(target),
                 schedule.kind,
                 schedule.begin_step, schedule.end_step, schedule.frequency, schedule.mask_updates,
                 schedule.steps_per_epoch)

    with worker.scope():
        model = base_model if schedule is None else \
            wrap_for_pruning(base_model, layers, schedule, cfg.prune, shared_step=not worker.distributed)
        model.compile(optimizer=keras.optimizers.Adam(cfg.prune.learning_rate), loss=task.loss(cfg.train))
    t0 = time.time()
    tb = stage.path / "tensorboard"
    callbacks: list = []
    if schedule is not None:
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())  # every worker: it advances the schedule
    if worker.is_chief and schedule is not None:
        callbacks += [tfmot.sparsity.keras.PruningSummaries(log_dir=str(tb), write_graph=False, profile_batch=0),
                      _sparsity_logger(keras, tf, tb / "sparsity")]
    elif worker.is_chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tb), write_graph=False, profile_batch=0))
    state = fit.fit_resumable(
        model, stage.path, distilled(prepared.fit_data(cfg, worker), cfg, run_dir), epochs=cfg.prune.epochs,
        # never early stopping, keep the pruned weights
        policy=fit.EpochPolicy(keep_best=False, learning_rates=finetune_learning_rates(cfg.prune)),
        callbacks=callbacks, worker=worker, resume=worker.is_chief or not stage.overwrite)
    if worker.distributed:  # the rest is the single-process code, on an ordinary copy
        weights = model.get_weights()
        base_model = load_base()
        model = base_model if schedule is None else \
            wrap_for_pruning(base_model, layers, schedule, cfg.prune, shared_step=False)
        model.set_weights(weights)
    if not worker.is_chief:
        worker.barrier()
        worker.close()
        return None

    masked, export = (model, model) if schedule is None else strip(model, base_model, layers, cfg.prune.granularity)
    counts = kernel_sparsity(masked, layers)
    per_layer = {n: {"target": target, "achieved": z / s, "weights": s} for n, (z, s) in counts.items()}
    achieved = sum(z for z, _ in counts.values()) / max(1, sum(s for _, s in counts.values()))
    missed = {n: v["achieved"] for n, v in per_layer.items() if abs(v["achieved"] - target) > cfg.prune.tolerance}
    if missed:
        raise RunError(f"{stage.path.name}: sparsity target {format_target(target)} missed by more than "
                       f"{cfg.prune.tolerance:g} "
                       f"in {', '.join(f'{n} ({a:.3f})' for n, a in missed.items())}; see {stage.path}/schedule.json")

    test, reference = evaluate(export, prepared.batches("test"), task, prepared.class_names)
    stage.check_metrics({"val_loss": state.last_val_loss, "test": test, "reference": reference})
    if cfg.prune.granularity != "neuron" and schedule is not None:  # neuron: the wrapper is in the checkpoint
        with tfmot.sparsity.keras.prune_scope():
            fit.save_model_h5(model, stage.path / WRAPPED_MODEL_FILE)
    h5 = fit.save_model_h5(export, stage.path / MODEL_FILE)
    evaluation = task.evaluation(test, reference)
    try:  # optional monitoring: never lose a finished training to it
        log_hparams(cfg, run_dir, stage.path, target, bits, schedule, test, achieved, firmware_cost(export, cfg.hls))
    except Exception as exc:  # any failure of TensorBoard's writer is only a warning
        log.warning("%s: the HParams summary was not written (%s)", stage.path.name, exc)
    metrics = stage.finish(PruneResult(
        stage=stage.path.name, target_sparsity=target, achieved_sparsity=achieved, layers=per_layer,
        granularity=cfg.prune.granularity, schedule=schedule.to_dict() if schedule else {},
        val_loss=state.last_val_loss, bits=bits, quantisers=qat.describe(export) if bits is not None else None,
        epochs_run=state.epochs_done,
        # The pruning stage records the test metrics and reference alone, as it always has.
        evaluation=Evaluation(evaluation.task, evaluation.test, evaluation.reference),
        size=fit.size_metrics(export, h5),
        units={n: int(export.get_layer(n).get_config().get("units", export.get_layer(n).get_config()
                                                            .get("filters", 0))) for n in layers},
        train_seconds_this_process=round(time.time() - t0, 2)))
    worker.barrier()
    log.info("%s done: sparsity %.4f (target %s), test %s", stage.path.name, achieved, format_target(target),
             task.headline(test))
    return metrics
