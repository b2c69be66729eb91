"""Compare the baseline and pruned models: ``python prune/analyze_prune.py --config FILE --run-dir RUN``.

Evaluates RUN/baseline and every finished RUN/prune_* on the same held-out
test events (the whole test split by default, streamed; ``--samples N``
takes the first N), next to the raw reference estimator, and writes RUN/analysis/:
summary.json, summary.csv, report.md, plots/*.png and metrics.json.
"""

if __package__ in (None, ""):  # `python prune/analyze_prune.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import sys
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import config as config_mod
from hepprune.core import lifecycle
from hepprune.core.cli import ArgumentParser, parse_models, parse_samples, run
from hepprune.core.errors import ConfigError
from hepprune.core.runs import ANALYSIS, config_text, finished_models, resolve_config
from hepprune.core.task import task_of
from hepprune.ptq import synthesis


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="analyze_prune.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--samples", help="test events per model, or 'all' (default: analysis.samples; 0 there = all)")
    p.add_argument("--models", help="comma-separated model names, e.g. baseline,prune_0.50 (default: all)")
    p.add_argument("--no-hls", action="store_true", help="skip the hls4ml export and C simulation")
    p.add_argument("--synth", action="store_true",
                   help="also C-synthesise each export with vitis_hls or vivado_hls (must be on PATH)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, [*args.overrides, *(["hls.simulate=false"] if args.no_hls else [])])

    names = parse_models(args.models)

    synth_tool = None
    if args.synth:  # refused before any model is loaded
        if not cfg.hls.simulate:
            raise ConfigError("--synth needs the hls4ml export; drop --no-hls (or hls.simulate=false)")
        synth_tool = synthesis.require_hls_tool()

    run_dir = Path(args.run_dir)
    samples = parse_samples(args.samples, cfg.analysis.samples)
    finished_models(run_dir, names)  # refuse an empty run or unknown name before loading anything
    cfg = resolve_config(cfg, "analysis", run_dir=run_dir, data=args.data)
    from hepprune.prune import analysis  # noqa: PLC0415 - deferred: hls4ml, TensorFlow: after every cheap check

    out = run_dir / ANALYSIS
    task = task_of(cfg)
    with lifecycle.stage(out, config_text(cfg), overwrite=True) as stage:
        stage.acquire()
        result = analysis.analyse(cfg, run_dir, samples=samples, names=names, synth_tool=synth_tool)
        stage.begin()
        stage.finish(task.write_analysis(result, out))
    summary = task.summary(result)
    print(task.table(summary))
    verdicts = task.verdicts(summary)
    if verdicts:
        print("\nAgainst the baseline (paired, tolerances analysis.response_tolerance and resolution_tolerance):")
        print("\n".join(verdicts))
    print(f"\n{result.samples} test events; wrote {out}/ (summary.json, summary.csv, report.md, plots/)")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
