"""Where a training process stands: the only worker, or one of an srun step's.

``distribute.strategy: multiworker`` runs pretraining and pruning under
``tf.distribute.MultiWorkerMirroredStrategy``, one worker per task of an
``srun`` step, found through ``SlurmClusterResolver``. What every stage must
respect (each learned the hard way on this stack):

- Variables are created and the model compiled inside :meth:`Worker.scope`.
- Each worker reads its own share of the training chunks
  (``loader.as_tf_dataset(shard=...)``) and all run the same number of steps.
- Saving reads every variable through the strategy, which is a collective:
  *every* worker must save, or the chief waits forever. Non-chief workers
  save into a private scratch directory (:attr:`Worker.write_dir`) that is
  removed at the end; only the chief writes the run directory.
- After training, :func:`local_copy` moves the weights into an ordinary
  model, so evaluation and export are the single-process code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hepprune.core.config import Config
from hepprune.core.errors import ConfigError, RunError

log = logging.getLogger(__name__)

PORT_BASE = 20000
PORTS_PER_JOB = 16


@dataclass
class Worker:
    """This process's rank among ``workers`` and the strategy (None: single process)."""

    index: int = 0
    workers: int = 1
    strategy: Any = None  # a tf.distribute.MultiWorkerMirroredStrategy
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.strategy is not None

    def scope(self) -> AbstractContextManager[Any]:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def write_dir(self, stage: Path) -> Path:
        """Where this worker writes ``stage``'s files: the stage itself for the
        chief, a private scratch copy for the others."""
        if self.is_chief:
            return stage
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"hepprune-worker{self.index}-"))
        return self._scratch / stage.name

    def barrier(self) -> None:
        """Wait for every worker. Non-chief workers call it when done and the
        chief after writing the artifacts: a worker that just exits looks
        crashed to the others' heartbeat checks."""
        if self.strategy is None:
            return
        from hepprune.core.backend import tf  # noqa: PLC0415 - deferred: TensorFlow, only under a strategy

        s = self.strategy
        s.reduce(tf.distribute.ReduceOp.SUM, s.run(lambda: tf.constant(1.0)), axis=None)

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _slurm_env() -> dict[str, str]:
    keys = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_TASKS_PER_NODE")
    missing = [k for k in keys if k not in os.environ]
    if missing:
        raise ConfigError("distribute.strategy=multiworker needs an srun step with one task per worker "
                          f"({missing[0]} is not set); run it as `srun python ...` inside a SLURM job "
                          "(slurm/submit.py writes such jobs) or set distribute.strategy=single")
    return {k: os.environ[k] for k in keys}


_STRATEGY: dict[str, Worker] = {}  # a process can join its step's collective only once


def start(cfg: Config) -> Worker:
    """This process's :class:`Worker`; with ``multiworker`` the first call
    joins the other tasks of the srun step, which TensorFlow allows only
    before it has run anything (so commands call it first thing)."""
    if cfg.distribute.strategy == "single":
        return Worker()
    if "worker" not in _STRATEGY:
        _STRATEGY["worker"] = _join()
    known = _STRATEGY["worker"]
    if cfg.data.batch_size % known.workers:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} is not divisible by the {known.workers} "
                          "workers; choose a batch size that is")
    return Worker(index=known.index, workers=known.workers, strategy=known.strategy)


def _join() -> Worker:
    env = _slurm_env()
    from hepprune.core.backend import quiet_stderr, tf  # noqa: PLC0415 - deferred: TensorFlow, after the srun check

    # The resolver zips tasks with "GPUs"; one pseudo-GPU per task keeps it
    # working on CPU nodes (gpus_per_node=0 crashes it), and auto_set_gpu=False
    # leaves CUDA_VISIBLE_DEVICES alone. Ports: a block per job id, so array
    # tasks sharing a node do not collide.
    tasks_per_node = max(int(x.split("(")[0]) for x in env["SLURM_STEP_TASKS_PER_NODE"].split(","))
    port = PORT_BASE + (int(env["SLURM_JOB_ID"]) * PORTS_PER_JOB) % 40000
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
        port_base=port, gpus_per_node=tasks_per_node, gpus_per_task=1, auto_set_gpu=False)
    try:
        with quiet_stderr():  # device probing prints CUDA errors on CPU nodes
            strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as exc:  # "Collective ops must be configured at program startup"
        raise RunError(f"cannot join the other workers: {exc} (start() must run before TensorFlow "
                       "does anything else)") from None
    worker = Worker(index=resolver.task_id, workers=resolver.cluster_spec().num_tasks("worker"),
                    strategy=strategy)
    log.info("worker %d of %d (%s)", worker.index, worker.workers, "chief" if worker.is_chief else "non-chief")
    return worker


def local_copy(model: Any, rebuild: Callable[[], Any]) -> Any:
    """``model``'s weights in an ordinary (non-distributed) model from ``rebuild()``."""
    twin = rebuild()
    twin.set_weights(model.get_weights())
    return twin
