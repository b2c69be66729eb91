"""The frontier search on a cluster: ``python slurm/frontier_jobs.py --config FILE --run-dir RUN``.

prune/frontier.py, with each round's candidates trained as a SLURM job array
(one task per candidate, ``slurm.prune`` resources) instead of one after
the other in this process; this process judges them and picks the next
round. ``slurm.frontier: true`` makes slurm/submit.py run it as a job after
the pretraining. After a preemption it picks up where it was: finished
candidates are not trained again, and an array still running from before
is waited for, not submitted twice.
"""

if __package__ in (None, ""):  # `python slurm/frontier_jobs.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import artifacts
from hepprune.core.cli import run
from hepprune.core.config import Config
from hepprune.core.runs import SLURM, config_text, prune_stage
from hepprune.prune import frontier
from hepprune.prune.search import FRONTIER, Failures, Pair
from hepprune.slurm.scripts import Paths, render_candidates
from hepprune.slurm.submit import PROJECT, _submit, sbatch_command

log = logging.getLogger("hepprune.frontier")

POLL_SECONDS = 2.0


def _running(job_id: str) -> bool:
    """Whether the job (an array: any of its tasks) is still pending or running."""
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if proc.returncode != 0:  # a busy controller is not a finished job; an unknown id is
        return "Invalid job id" not in proc.stderr
    return bool(proc.stdout.strip())


def _wait(job_id: str) -> None:
    while _running(job_id):
        time.sleep(POLL_SECONDS)


def train_on_slurm(cfg: Config, run_dir: Path, pairs: list[Pair]) -> Failures:
    """Train a round's unfinished candidates as one job array and wait for it;
    a task that ends without finishing its stage fails only its candidate."""
    out = run_dir.absolute() / SLURM / FRONTIER  # beside the run's other jobs; the frontier stage is rewritten whole
    state = out / "round.json"
    if state.is_file():  # a requeued search: its last array may still be running
        _wait(artifacts.read_json(state)["job"])
    pending = [(t, b) for t, b in pairs if not artifacts.is_complete(run_dir / prune_stage(t, b))]
    if not pending:
        return {}
    paths = Paths(project=PROJECT, run_dir=run_dir.absolute(), config=out / "config.yaml")
    paths.logs.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(paths.config, config_text(cfg))
    names = [prune_stage(t, b) for t, b in pending]
    script = out / f"{names[0]}.sbatch"
    artifacts.write_text(script, render_candidates(cfg, paths, pending))
    job = _submit(sbatch_command(script, []))
    artifacts.write_json(state, {"job": job, "candidates": names})
    log.info("frontier: candidates %s as job array %s", ", ".join(names), job)
    _wait(job)
    return {n: f"task {k} of job array {job} did not finish it; see {paths.logs}/hepprune-prune-{job}_{k}.out"
            for k, n in enumerate(names) if not artifacts.is_complete(run_dir / n)}


def main(argv: Sequence[str] | None = None) -> int:
    return frontier.main(argv, trainer=train_on_slurm, prog="frontier_jobs.py")


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
