"""Post-training quantisation scan: ``python ptq/bitwidth_scan.py --config FILE --run-dir RUN``.

For each model (the baseline, a pruned model, or every finished one), C-simulates
hls4ml ap_fixed<W,I> at every width W in ``ptq.widths`` on the held-out test
events, with I per layer from the weight and activation ranges, and picks the
smallest W within ``ptq.tolerance`` of the float model. Writes
RUN/ptq/<model>/: scan.json, scan.csv, scan.png, hls4ml/ (the project at the
chosen width, ready for synthesis) and metrics.json.
"""

if __package__ in (None, ""):  # `python ptq/bitwidth_scan.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import sys
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import config as config_mod
from hepprune.core.cli import ArgumentParser, parse_models, parse_samples, run
from hepprune.core.errors import ConfigError
from hepprune.core.runs import finished_models, resolve_config
from hepprune.core.task import task_of


def _widths(text: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"--widths expects comma-separated integers like 8,10,12, got '{text}'") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="bitwidth_scan.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--models", help="comma-separated model names, e.g. prune_0.75 (default: ptq.models, or all)")
    p.add_argument("--widths", help="comma-separated total widths W (default: ptq.widths)")
    p.add_argument("--samples", help="test events, or 'all' (default: analysis.samples)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    if args.widths:  # validated with the config's own rules
        overrides.append(f"ptq.widths=[{','.join(map(str, _widths(args.widths)))}]")
    cfg = config_mod.load(args.config, overrides)

    names = parse_models(args.models) or cfg.ptq.models or None
    run_dir = Path(args.run_dir)
    samples = parse_samples(args.samples, cfg.analysis.samples)
    finished_models(run_dir, names)  # refuse an empty run or unknown name before loading anything
    cfg = resolve_config(cfg, "scan", run_dir=run_dir, data=args.data)
    from hepprune.ptq import quantization  # noqa: PLC0415 - deferred: hls4ml, TensorFlow: after every cheap check

    task_of(cfg).refuse_pred_true("bitwidth_scan.py")
    results = quantization.scan_models(cfg, run_dir, samples=samples, names=names)
    print(f"\n{'model':<15}{'float resp.':>12}{'float res.':>11}  " + "".join(f"{'W=' + str(w):>9}" for w in
                                                                             cfg.ptq.widths) + f"{'chosen W':>10}")
    for name, r in results.items():
        if "qat_bits" in r:
            print(f"{name:<15}trained with {r['qat_bits']}-bit quantisers (QAT): its firmware types are the "
                  "trained ones, no scan needed")
            continue
        cells = "".join(("aborted" if row["resolution_q68"] is None else f"{row['resolution_q68']:.4f}"
                         + ("" if row["within_tolerance"] else "*")).rjust(9) for row in r["widths"])
        print(f"{name:<15}{r['float']['response_median']:>12.4f}{r['float']['resolution_q68']:>11.4f}  {cells}"
              f"{r['chosen_width'] or 'none':>10}")
    print(f"\nresolution (q68) per width; * = outside tolerance {cfg.ptq.tolerance:g} of float. "
          f"Wrote {run_dir / quantization.STAGE}/<model>/ (scan.json, scan.csv, scan.png, hls4ml/)")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
