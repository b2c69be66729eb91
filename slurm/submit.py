"""Submit the workflow as dependent SLURM jobs: ``python slurm/submit.py --config FILE --run-dir RUN``.

pretrain -> prune (a job array, one task per target) -> analyze and scan (each
after the whole array) -> synth (with slurm.synth) and rtl (with slurm.rtl,
after analyze and scan). Every dependency is
``afterok`` with ``--kill-on-invalid-dep=yes``, so a failing stage cancels
what depends on it. ``--dry-run`` prints the exact sbatch commands and scripts
and submits nothing; ``--tensorboard`` submits only a TensorBoard job.
"""

if __package__ in (None, ""):  # `python slurm/submit.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from hepprune.core import artifacts
from hepprune.core import config as config_mod
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.config import Config
from hepprune.core.errors import ConfigError, RunError
from hepprune.core.runs import resolve_config
from hepprune.data.schema import open_dataset
from hepprune.slurm.scripts import Paths, render, render_tensorboard

log = logging.getLogger("hepprune.submit")

PROJECT = Path(__file__).resolve().parents[1]
DEPENDS_ON = {"prune": ["pretrain"], "analyze": ["prune"], "scan": ["prune"], "synth": ["analyze"],
              "rtl": ["scan", "analyze"],  # rtl needs the scan's width, and re-runs the analysis at its end
              "frontier": ["prune", "scan"]}  # its candidates may be the sweep's; its cost uses the scan's width
# slurm.<key> of a stage's resources
JOB_KEYS = {"synth": "synth_job", "rtl": "rtl_job", "frontier": "frontier_job"}
RUN_SECTIONS = ("data", "model", "train")  # what the baseline fixes for every later stage


def check_run_dir(cfg: Config, run_dir: Path) -> None:
    """Refuse a config whose data/model/train disagree with a baseline already
    in the run directory: the pretraining job would refuse to resume, and the
    later stages would silently use the baseline's settings."""
    saved = run_dir / "baseline" / "config.yaml"
    if not saved.is_file():
        return
    base = config_mod.load(saved).to_dict()
    mine = cfg.to_dict()
    if base["task"] != mine["task"]:
        raise ConfigError(f"the config disagrees with {saved} about task ({mine['task']!r} vs {base['task']!r}); "
                          "use another --run-dir or the same settings")
    for section in RUN_SECTIONS:
        for key, value in mine[section].items():
            if base[section].get(key) != value:
                raise ConfigError(f"the config disagrees with {saved} about {section}.{key} "
                                  f"({value!r} vs {base[section].get(key)!r}); use another --run-dir or the same "
                                  "settings")


def _sbatch_time_minutes(text: str) -> float | None:
    """Minutes of an sbatch --time value (None for infinite)."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-HH[:MM[:SS]]
        h, m, s = (parts + [0, 0])[:3]
        return int(days) * 1440 + h * 60 + m + s / 60
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60


def check_partition(cfg: Config, stages: list[str]) -> None:
    """The partition must exist, and each stage's time must fit its MaxTime."""
    part = cfg.slurm.partition
    if not part:
        return
    proc = subprocess.run(["scontrol", "show", "partition", part], capture_output=True, text=True)
    if proc.returncode != 0:
        names = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split()
        raise ConfigError(f"slurm.partition '{part}' does not exist on this cluster; partitions: "
                          f"{', '.join(sorted(set(names))) or 'none found'}")
    max_time = next((f.split("=", 1)[1] for f in proc.stdout.split() if f.startswith("MaxTime=")), "UNLIMITED")
    limit = _sbatch_time_minutes(max_time)
    for name in stages:
        key = JOB_KEYS.get(name, name)
        wanted = _sbatch_time_minutes(getattr(cfg.slurm, key).time)
        if limit is not None and (wanted is None or wanted > limit):
            raise ConfigError(f"slurm.{key}.time exceeds partition {part}'s MaxTime {max_time}")


def sbatch_command(script: Path, dependencies: list[str]) -> list[str]:
    cmd = ["sbatch", "--parsable"]
    if dependencies:
        cmd += [f"--dependency=afterok:{':'.join(dependencies)}", "--kill-on-invalid-dep=yes"]
    return [*cmd, str(script)]


def _submit(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
        raise RunError(f"sbatch refused {cmd[-1]}: {why}")
    return proc.stdout.strip().split(";")[0]


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="submit.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", help="HDF5 file or glob, overriding data.path")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch commands and scripts; submit nothing")
    p.add_argument("--stages", help="comma-separated subset of pretrain,prune,analyze,scan,synth,rtl,frontier "
                   "(default: all); dependencies link only the stages submitted together")
    p.add_argument("--tensorboard", action="store_true", help="submit only a TensorBoard job for the run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    run_dir = Path(args.run_dir).expanduser().absolute()
    for what, path in (("--run-dir", run_dir), ("the checkout", PROJECT)):
        if any(c.isspace() for c in str(path)):  # #SBATCH --output cannot carry it safely
            raise ConfigError(f"{what} {path} contains whitespace; SLURM job scripts need a path without it")
    if not args.tensorboard:
        cfg = resolve_config(cfg, "submit", data=args.data)  # an absolute data path: jobs run from the checkout
        check_run_dir(cfg, run_dir)
    paths = Paths(project=PROJECT, run_dir=run_dir, config=run_dir / "slurm" / "config.yaml")
    scripts = {"tensorboard": render_tensorboard(cfg, paths)} if args.tensorboard else render(cfg, paths)
    if args.stages and not args.tensorboard:
        wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in scripts]
        if unknown or not wanted:
            raise ConfigError(f"--stages: unknown stage '{unknown[0] if unknown else args.stages}'; stages: "
                              f"{', '.join(scripts)}")
        scripts = {name: text for name, text in scripts.items() if name in wanted}
    if not args.dry_run:
        if shutil.which("sbatch") is None:
            raise RunError("sbatch not found: this machine has no SLURM client; run the stages locally in order "
                           "(as `make demo` does) or submit from a cluster login node")
        check_partition(cfg, list(scripts))
        if not args.tensorboard:  # the jobs would fail minutes or hours later, in the queue
            open_dataset(cfg.data.path, cfg.data.layout)
    slurm_dir = run_dir / "slurm"
    if not args.dry_run:
        paths.logs.mkdir(parents=True, exist_ok=True)
        artifacts.write_text(paths.config, yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    ids: dict[str, str] = {}
    for name, text in scripts.items():
        script = slurm_dir / f"{name}.sbatch"
        deps = [ids.get(d, f"<{d}>") for d in DEPENDS_ON.get(name, []) if d in scripts]
        cmd = sbatch_command(script, deps)
        if args.dry_run:
            print(f"# {' '.join(cmd)}\n{text}")
            ids[name] = f"<{name}>"
            continue
        artifacts.write_text(script, text)
        ids[name] = _submit(cmd)
        print(f"{name:<12} job {ids[name]}  ({' '.join(cmd)})")
    if args.dry_run:
        print(f"# dry run: nothing submitted; the scripts would be written to {slurm_dir}/")
        return 0
    artifacts.write_json(slurm_dir / ("tensorboard.json" if args.tensorboard else "jobs.json"), ids)
    print(f"\nrun directory: {run_dir}\nlogs: {paths.logs}/")
    if args.tensorboard:
        print(f"the ssh -L command appears in {paths.logs}/hepprune-tensorboard-{ids['tensorboard']}.out "
              "once the job starts")
    else:
        print(f"watch: squeue -u $USER; monitor: python slurm/submit.py --config {args.config} --run-dir "
              f"{args.run_dir} --tensorboard")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
