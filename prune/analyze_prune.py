"""Compare the baseline and pruned models: ``python prune/analyze_prune.py --config FILE --run-dir RUN``.

Evaluates RUN/baseline and every finished RUN/prune_* on the same held-out
test events (1000 by default, ``--samples all`` streams the whole test
split), next to the raw reference estimator, and writes RUN/analysis/:
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


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="analyze_prune.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--samples", help="test events per model, or 'all' (default: analysis.samples)")
    p.add_argument("--models", help="comma-separated model names, e.g. baseline,prune_0.50 (default: all)")
    p.add_argument("--no-hls", action="store_true", help="skip the hls4ml export and C simulation")
    p.add_argument("--synth", action="store_true",
                   help="also C-synthesise each export with vitis_hls or vivado_hls (must be on PATH)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, [*args.overrides, *(["hls.simulate=false"] if args.no_hls else [])])

    from hepprune.prune import analysis  # deferred: hls4ml and TensorFlow load after the config is checked
    from hepprune.ptq import synthesis

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
    out = run_dir / ANALYSIS
    with lifecycle.stage(out, config_text(cfg), overwrite=True) as stage:
        if task_of(cfg).name == "classification":
            return _classification(cfg, run_dir, samples, names, synth_tool, stage)
        summary = analysis.analyse(cfg, run_dir, samples=samples, names=names, synth_tool=synth_tool)
        stage.begin()
        stage.finish(analysis.write_outputs(summary, out))
    print(f"\n{'model':<12}{'sparsity':>9}{'response':>10}{'resolution':>12}{'multipliers':>13}{'gzip bytes':>12}"
          f"{'hls max |d|':>13}{'hls response':>14}")
    for m in summary["models"]:
        hls = (f"{m['hls_max_abs_diff']:>13.4g}{m['hls_response_median']:>14.4f}" if "hls_max_abs_diff" in m
               else f"{'-':>13}{'-':>14}")
        print(f"{m['name']:<12}{m['sparsity']:>9.3f}{m['response_median']:>10.4f}{m['resolution_q68']:>12.4f}"
              f"{m['multipliers']:>13}{m['gzip_bytes']:>12}{hls}")
    ref = summary["reference"]
    print(f"{'raw ref.':<12}{'-':>9}{ref['response_median']:>10.4f}{ref['resolution_q68']:>12.4f}")
    print(f"\n{summary['samples']} test events; wrote {out}/ (summary.json, summary.csv, report.md, plots/)")
    return 0


def _classification(cfg, run_dir, samples, names, synth_tool, stage: lifecycle.Stage) -> int:
    from hepprune.prune import classification_analysis as ca  # deferred: hls4ml and TensorFlow

    out = stage.path
    summary = ca.analyse(cfg, run_dir, samples=samples, names=names, synth_tool=synth_tool)
    stage.begin()
    stage.finish(ca.write_outputs(summary, out))
    print(f"\n{'model':<12}{'sparsity':>9}{'accuracy':>10}{'mean AUC':>10}{'multipliers':>13}{'gzip bytes':>12}"
          f"{'hls accuracy':>14}{'hls agree':>11}")
    for m in summary["models"]:
        hls = (f"{m['hls_accuracy']:>14.4f}{m['hls_agreement']:>11.4f}" if "hls_accuracy" in m
               else f"{'-':>14}{'-':>11}")
        print(f"{m['name']:<12}{m['sparsity']:>9.3f}{m['accuracy']:>10.4f}{m['auc_mean']:>10.4f}"
              f"{m['multipliers']:>13}{m['gzip_bytes']:>12}{hls}")
    print(f"\n{summary['samples']} test events; wrote {out}/ (summary.json, summary.csv, report.md, plots/roc.png)")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
