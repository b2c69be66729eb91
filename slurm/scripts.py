"""The sbatch scripts of the workflow, rendered from the config.

Pure functions: the same config and paths give the same text (a golden test
holds it), so job settings come from the config, never from editing scripts.
Each script runs one stage's normal command from the checkout, inside
``hepprune_run`` (slurm/preempt.sh), which turns the USR1 warning into a
checkpoint-and-requeue.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from hepprune.core.config import Config, SlurmStage
from hepprune.core.runs import format_target, sweep

STAGES = ("pretrain", "prune", "analyze", "scan", "synth", "rtl", "frontier", "tensorboard")


@dataclass(frozen=True)
class Paths:
    project: Path  # the checkout: scripts run `python ptq/trainModel.py ...` from here
    run_dir: Path
    config: Path  # the frozen config every job reads (RUN/slurm/config.yaml)

    @property
    def logs(self) -> Path:
        return self.run_dir / "slurm" / "logs"


def _header(name: str, stage: SlurmStage, cfg: Config, paths: Paths, *, array: int = 0,
            requeue: bool = True, tasks: int = 1) -> list[str]:
    s = cfg.slurm
    log = paths.logs / ("%x-%A_%a.out" if array else "%x-%j.out")
    flags = [f"--job-name=hepprune-{name}", f"--output={log}", f"--time={stage.time}",
             f"--cpus-per-task={stage.cpus}", f"--mem={stage.mem}"]
    if s.partition:
        flags.append(f"--partition={s.partition}")
    if s.account:
        flags.append(f"--account={s.account}")
    if stage.gpus:
        flags.append(f"--gres=gpu:{stage.gpus}")
    if tasks > 1:
        flags.append(f"--ntasks={tasks}")
    if array:
        flags.append(f"--array=0-{array - 1}")
    if requeue:  # append: a requeued job continues the same log
        flags += [f"--signal=B:USR1@{s.signal_seconds}", "--requeue", "--open-mode=append"]
    flags += s.extra
    return ["#!/bin/bash", *(f"#SBATCH {f}" for f in flags)]


def _prologue(cfg: Config, paths: Paths, *, preemptible: bool = True) -> list[str]:
    setup = cfg.slurm.setup or ["if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi"]
    # The USR1 trap comes before the set-up lines: a signal during a slow `module load`
    # would otherwise kill the job instead of requeueing it.
    return ["# Written by slurm/submit.py from the experiment config; change the config, not this file.",
            "set -euo pipefail", f"cd {shlex.quote(str(paths.project))}",
            *(["source slurm/preempt.sh"] if preemptible else []), *setup,
            'PYTHON="${HEPPRUNE_PYTHON:-python}"']


def _stage_command(script: str, paths: Paths, *extra: str) -> str:
    args = ["--config", str(paths.config), "--run-dir", str(paths.run_dir), *extra]
    return f'"$PYTHON" {script} ' + " ".join(shlex.quote(a) if not a.startswith('"') else a for a in args)


MULTIWORKER_STAGES = ("pretrain", "prune")


def _tasks(cfg: Config, name: str) -> int:
    """Workers of a stage: distribute.workers for a multi-worker training stage, else 1."""
    return cfg.distribute.workers if cfg.distribute.strategy == "multiworker" and name in MULTIWORKER_STAGES else 1


def _launch(cfg: Config, name: str, stage: SlurmStage, command: str) -> str:
    """A multi-worker stage runs one worker per task under srun (which also
    stops the step when a worker fails); other stages run the command itself."""
    if cfg.distribute.strategy != "multiworker" or name not in MULTIWORKER_STAGES:
        return command
    return f"srun --kill-on-bad-exit=1 --cpus-per-task={stage.cpus} {command}"


def _prune_array(paths: Paths, pairs: list[tuple[float, int | None]], with_bits: bool) -> list[str]:
    """The body of a pruning job array: task i trains pairs[i] (target, bit setting)."""
    body = [f"TARGETS=({' '.join(format_target(t) for t, _ in pairs)})"]
    args = ["--targets", '"${TARGETS[$SLURM_ARRAY_TASK_ID]}"']
    if with_bits:  # QAT settings beside float; a float-only sweep keeps its one array
        body.append(f"BITS=({' '.join('float' if b is None else str(b) for _, b in pairs)})")
        args += ["--bits", '"${BITS[$SLURM_ARRAY_TASK_ID]}"']
    return [*body, _stage_command("prune/train_model_prune.py", paths, *args)]


def _script(cfg: Config, paths: Paths, name: str, stage: SlurmStage, array: int, body: list[str]) -> str:
    lines = [*_header(name, stage, cfg, paths, array=array, tasks=_tasks(cfg, name)), *_prologue(cfg, paths),
             *(f"hepprune_run {_launch(cfg, name, stage, line)}" if line.startswith('"$PYTHON"') else line
               for line in body)]
    return "\n".join(lines) + "\n"


def render_candidates(cfg: Config, paths: Paths, pairs: list[tuple[float, int | None]]) -> str:
    """One frontier round's candidates as a pruning job array (slurm.prune resources)."""
    return _script(cfg, paths, "prune", cfg.slurm.prune, len(pairs),
                   _prune_array(paths, pairs, True))  # always --bits: a float task must not train qat.bits too


def render(cfg: Config, paths: Paths) -> dict[str, str]:
    """stage -> sbatch script text, for every stage the config submits
    (synth only with ``slurm.synth``, rtl only with ``slurm.rtl``, frontier
    only with ``slurm.frontier``)."""
    s = cfg.slurm
    pairs = sweep(cfg)  # one array task per model: (target, bit setting)
    bodies = {
        "pretrain": (s.pretrain, 0, [_stage_command("ptq/trainModel.py", paths)]),
        "prune": (s.prune, len(pairs), _prune_array(paths, pairs, bool(cfg.qat.bits))),
        "analyze": (s.analyze, 0, [_stage_command("prune/analyze_prune.py", paths)]),
        "scan": (s.scan, 0, [_stage_command("ptq/bitwidth_scan.py", paths)]),
    }
    if s.synth:
        bodies["synth"] = (s.synth_job, 0, [_stage_command("prune/analyze_prune.py", paths, "--synth")])
    if s.rtl:  # then the analysis again, so the report shows the synthesised figures
        bodies["rtl"] = (s.rtl_job, 0, [_stage_command("rtl/synthesize_rtl.py", paths),
                                        _stage_command("prune/analyze_prune.py", paths)])
    if s.frontier:  # the search submits its own candidate arrays from inside this job
        bodies["frontier"] = (s.frontier_job, 0, [_stage_command("slurm/frontier_jobs.py", paths)])
    return {name: _script(cfg, paths, name, stage, array, body) for name, (stage, array, body) in bodies.items()}


def render_tensorboard(cfg: Config, paths: Paths) -> str:
    """TensorBoard on a compute node, on a free port, printing the ssh -L
    command(s) that reach it from a laptop through the login node."""
    lines = [*_header("tensorboard", cfg.slurm.tensorboard, cfg, paths, requeue=False),
             *_prologue(cfg, paths, preemptible=False),
             'PORT=$("$PYTHON" -c \'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])\')',
             'NODE=$(hostname -s)',
             'LOGIN=${SLURM_SUBMIT_HOST:-login.node}',
             'ME=${SLURM_JOB_USER:-${USER:-$(id -un)}}',  # a batch job need not inherit USER
             f'echo "TensorBoard for {paths.run_dir} on $NODE:$PORT (job $SLURM_JOB_ID). From your laptop:"',
             'echo "  ssh -N -L $PORT:$NODE:$PORT $ME@$LOGIN"',
             'echo "or, where compute nodes accept ssh through the login node:"',
             'echo "  ssh -N -J $ME@$LOGIN -L $PORT:localhost:$PORT $ME@$NODE"',
             'echo "then open http://localhost:$PORT"',
             f'exec "$PYTHON" -m tensorboard.main --logdir {shlex.quote(str(paths.run_dir))} --port "$PORT" --bind_all']
    return "\n".join(lines) + "\n"
