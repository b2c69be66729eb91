"""Check HDF5 files against the hepprune schema: ``python data/validate_dataset.py GLOB [--values]``.

With ``--config`` (and ``--set``), files of your own are checked against the
config's ``data.layout`` instead, and GLOB defaults to its ``data.path``.
Prints a one-screen summary on success; a one-line error and exit 2 otherwise.
``--values`` also reads every event once to refuse NaN or Inf, and reports
finite values absurdly far outside each feature's bulk (name and count).
"""

if __package__ in (None, ""):  # `python data/validate_dataset.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import sys
from collections.abc import Sequence

from hepprune.core import config as config_mod
from hepprune.core.cli import ArgumentParser, run
from hepprune.core.errors import ConfigError
from hepprune.data import loader
from hepprune.data.schema import open_dataset


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="validate_dataset.py", description=__doc__.splitlines()[0])
    p.add_argument("pattern", nargs="?", help="HDF5 file or glob of shards (quote it); default: the config's data.path")
    p.add_argument("--values", action="store_true", help="also check every value is finite, and report extreme values")
    p.add_argument("--config", help="experiment YAML whose data.layout maps your own files")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set data.layout.target=true_pt (repeatable)")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides) if args.config or args.overrides else None
    pattern = args.pattern or (cfg.data.path if cfg else "")
    if not pattern:
        raise ConfigError("give the files to check (GLOB), or a --config whose data.path names them")
    info = open_dataset(pattern, cfg.data.layout if cfg else None)
    found: dict[str, tuple[int, float]] = {}
    if args.values:
        with loader.Reader(info) as reader:
            names = info.feature_names if reader.key == "inputs" else ("image",)
            extremes = loader.ExtremeValues(names)
            for block in loader.all_blocks(info):
                arrays = reader.read(block)
                loader.check_finite(reader, block, arrays)
                extremes.update(arrays[0])
            found = extremes.found()
    print(f"ok: {len(info.shards)} shard(s), {info.n_events} events, layout {info.layout.format}, read in blocks of "
          f"{info.shards[0].chunk_rows} events")
    for name, (n, example) in found.items():
        print(f"warning: feature {name}: {n} extreme value(s) far outside its bulk (e.g. {example:.3g}); "
              "they would dominate its standardisation")
    print(f"inputs: {len(info.feature_names)} features ({', '.join(info.feature_names[:6])}"
          f"{', ...' if len(info.feature_names) > 6 else ''})")
    print(f"image: {info.image_shape or 'none'}")
    print(f"target: {info.target_name} [{info.target_unit}]   reference: {info.reference_name}")
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
