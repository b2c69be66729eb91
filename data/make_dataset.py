"""Generate a calorimeter energy-regression dataset as HDF5 shards.

    python data/make_dataset.py --out DIR --events N [--seed S] [--shards K]
        [--image] [--pileup MU] [--jobs J] [--set name=value ...]

The physics and every parameter are described in docs/generator.md.
"""

if __package__ in (None, ""):  # `python data/make_dataset.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import argparse
import logging
import time
from collections.abc import Sequence

from hepprune.core.cli import ArgumentParser, run
from hepprune.data.calorimeter import (
    EVENTS_PER_SHARD,
    CalorimeterParams,
    params_with_overrides,
    write_dataset,
)

log = logging.getLogger("hepprune.make_dataset")


def build_parser() -> ArgumentParser:
    defaults = CalorimeterParams().to_dict()
    parser = ArgumentParser(
        prog="make_dataset",
        description="Generate a toy calorimeter energy-regression dataset "
                    "(5x5 ECAL + HCAL towers, eta, npv -> E_true) as HDF5 shards.",
        epilog="generator parameters for --set (default; units and meaning in docs/generator.md):\n"
               + "\n".join(f"  {name} = {value}" for name, value in defaults.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory for shard_NNNNN.h5")
    parser.add_argument("--events", type=int, required=True, help="total number of events")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--shards", type=int, default=None,
                        help=f"number of shards (default: one per {EVENTS_PER_SHARD:,} events)")
    parser.add_argument("--image", action="store_true",
                        help="also write the (N, 5, 5, 2) 'image' view for CNNs")
    parser.add_argument("--pileup", type=float, default=None, metavar="MU",
                        help="mean number of pileup interactions (default: 20; 0 = none); "
                             "same as --set pileup_mu=MU and takes precedence over it")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel worker processes (default: min(2, shards))")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="NAME=VALUE", help="override a generator parameter; repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.pileup is not None:
        overrides.append(f"pileup_mu={args.pileup}")
    params = params_with_overrides(overrides)
    start = time.perf_counter()
    paths = write_dataset(args.out, args.events, seed=args.seed, n_shards=args.shards,
                          params=params, image=args.image, jobs=args.jobs)
    seconds = time.perf_counter() - start
    total_bytes = sum(p.stat().st_size for p in paths)
    log.info("wrote %d events in %d shard(s) to %s (%s ... %s), %.1f MB, in %.1f s (%.0f events/s)",
             args.events, len(paths), args.out, paths[0].name, paths[-1].name,
             total_bytes / 1e6, seconds, args.events / max(seconds, 1e-9))
    return 0


def cli() -> None:
    raise SystemExit(run(main))


if __name__ == "__main__":
    cli()
