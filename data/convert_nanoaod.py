"""Convert CMS NanoAOD ROOT files to the hepprune HDF5 schema for jet energy regression.

One output row per reconstructed AK4 jet (``Jet_*``) that is matched to a
generator-level jet (``GenJet_*``):

* selection: ``0 <= Jet_genJetIdx < nGenJet`` (NanoAOD stores only GenJets above
  a pT threshold, so an index can point past the stored collection; those jets
  have no target and are dropped), optionally ``GenJet_pt >= --min-genjet-pt``;
* target: ``GenJet_pt[Jet_genJetIdx]`` (GeV);
* reference: the raw jet pT ``Jet_pt * (1 - Jet_rawFactor)``, the estimator the
  network has to beat;
* inputs: :data:`FEATURE_DEFINITIONS`; ``aux/Jet_pt`` keeps the official CMS
  correction for comparison.

Files are read in steps (``tree.iterate``) and written as shards of about
``--events-per-shard`` rows, so neither input nor output has to fit in memory.
"""

from __future__ import annotations

if __package__ in (None, ""):  # `python data/convert_nanoaod.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import argparse
import contextlib
import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepprune.core.cli import ArgumentParser, run
from hepprune.core.errors import DataError
from hepprune.data.schema import check_out_dir, write_shard

log = logging.getLogger("data.convert_nanoaod")  # same name when run as a script

DEFAULT_TREE = "Events"
DEFAULT_EVENTS_PER_SHARD = 1_000_000
#: uproot step size: bounded memory per step, large enough for fast basket reads.
STEP_SIZE = "100 MB"
SOURCE = "hepprune NanoAOD converter"
TARGET_NAME = "GenJet_pt"
REFERENCE_NAME = "Jet_rawPt"
SHARD_PATTERN = "shard_{:05d}.h5"

#: Input features, in column order, and how each is computed from the branches.
#: Raw (uncorrected) pT and mass: NanoAOD's Jet_pt *and* Jet_mass already carry
#: the CMS jet energy correction, the very thing the network should learn.
#: Jet_phi is left out: the response is (to first order) phi-symmetric.
FEATURE_DEFINITIONS: dict[str, str] = {
    "Jet_rawPt": "Jet_pt * (1 - Jet_rawFactor)",
    "Jet_eta": "Jet_eta",
    "Jet_rawMass": "Jet_mass * (1 - Jet_rawFactor)",
    "Jet_area": "Jet_area",
    "Jet_chHEF": "Jet_chHEF",
    "Jet_neHEF": "Jet_neHEF",
    "Jet_chEmEF": "Jet_chEmEF",
    "Jet_neEmEF": "Jet_neEmEF",
    "Jet_muEF": "Jet_muEF",
    "Jet_nConstituents": "Jet_nConstituents",
    "fixedGridRhoFastjetAll": "fixedGridRhoFastjetAll (per event, copied to each jet)",
    "PV_npvs": "PV_npvs (per event, copied to each jet)",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_DEFINITIONS)

#: Per-jet branches copied to the inputs unchanged.
_PLAIN_JET_FEATURES = ("Jet_eta", "Jet_area", "Jet_chHEF", "Jet_neHEF", "Jet_chEmEF",
                       "Jet_neEmEF", "Jet_muEF", "Jet_nConstituents")
#: Per-event branches broadcast to every jet of the event.
_EVENT_FEATURES = ("fixedGridRhoFastjetAll", "PV_npvs")

#: Every branch the converter reads: the one place that says what a file must hold.
BRANCHES: tuple[str, ...] = (
    "Jet_pt", "Jet_rawFactor", "Jet_mass", *_PLAIN_JET_FEATURES,  # reconstructed jets
    "Jet_genJetIdx", "nGenJet", "GenJet_pt",                       # matching and target
    *_EVENT_FEATURES,                                              # event level
)
SELECTION = "Jet_genJetIdx >= 0 && Jet_genJetIdx < nGenJet && GenJet_pt[Jet_genJetIdx] >= min_genjet_pt"

AUX_NAMES = ("Jet_pt", "event", "jet_index", "file")


@dataclass(frozen=True)
class JetRows:
    """Matched jets of one step, flat numpy columns ready for a shard."""

    inputs: np.ndarray             # (n, len(FEATURE_NAMES)) float32
    target: np.ndarray             # (n,) float32
    reference: np.ndarray          # (n,) float32
    aux: dict[str, np.ndarray]     # AUX_NAMES -> (n,)

    def __len__(self) -> int:
        return len(self.target)

    @staticmethod
    def concatenate(parts: Sequence[JetRows]) -> JetRows:
        return JetRows(
            inputs=np.concatenate([p.inputs for p in parts]),
            target=np.concatenate([p.target for p in parts]),
            reference=np.concatenate([p.reference for p in parts]),
            aux={k: np.concatenate([p.aux[k] for p in parts]) for k in parts[0].aux},
        )

    def take(self, index: slice | np.ndarray) -> JetRows:
        """Rows selected by a slice or a boolean mask."""
        return JetRows(self.inputs[index], self.target[index], self.reference[index],
                       {k: v[index] for k, v in self.aux.items()})


@dataclass(frozen=True)
class ConversionResult:
    shards: tuple[Path, ...]
    n_jets: int
    n_events: int
    n_dropped_nonfinite: int


# ----------------------------------------------------------------------------- inputs

def resolve_inputs(patterns: Sequence[str]) -> list[str]:
    """Expand paths/globs (each sorted, order of ``patterns`` kept, duplicates dropped).

    Every pattern must match a file: a typo in one of several inputs would
    otherwise silently shrink the dataset.
    """
    files: list[str] = []
    for pattern in patterns:
        matches = [f for f in sorted(glob.glob(os.path.expanduser(pattern))) if os.path.isfile(f)]
        if not matches:
            if any(c in pattern for c in "*?["):  # a glob: say so, else name the file
                raise DataError(f"no input file matches '{pattern}'")
            what = "is a directory, not a file" if os.path.isdir(pattern) else "does not exist"
            raise DataError(f"input file '{pattern}' {what}")
        files.extend(f for f in matches if f not in files)
    return files


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


TREE_CLASSES = ("TTree", "ROOT::RNTuple")  # NanoAOD moves to RNTuple; uproot reads both the same way


def is_tree(obj: object) -> bool:
    """A TTree or an RNTuple (both read by name, iterated in steps, by uproot)."""
    return isinstance(obj, uproot.TTree) or getattr(obj, "classname", None) == "ROOT::RNTuple"


def open_tree(path: str, tree_name: str) -> Any:
    """Open the TTree or RNTuple ``tree_name`` in ``path`` (whichever it is),
    turning uproot's errors into one-line DataErrors."""
    try:
        root_file = uproot.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except ValueError as exc:  # uproot: "not a ROOT file: first four bytes are ..."
        raise DataError(f"{path}: not a readable ROOT file ({_first_line(exc)})") from None
    except OSError:  # uproot: a header shorter than ROOT's ("expected Chunk of length ...")
        size = os.path.getsize(path)
        raise DataError(f"{path}: not a readable ROOT file (truncated or not ROOT; "
                        f"{size} bytes)") from None
    try:
        tree = root_file[tree_name]
    except KeyError:
        found = root_file.classnames(cycle=False)
        trees = sorted(f"{name} ({'RNTuple' if kind == 'ROOT::RNTuple' else kind})"
                       for name, kind in found.items() if kind in TREE_CLASSES)
        raise DataError(f"{path}: no tree '{tree_name}' (TTrees and RNTuples in the file: "
                        f"{', '.join(trees) or 'none'}); choose one with --tree") from None
    if not is_tree(tree):
        kind = getattr(tree, "classname", type(tree).__name__)  # e.g. TH1F
        raise DataError(f"{path}: '{tree_name}' is a {kind}, not a TTree or RNTuple")
    return tree


def check_branches(tree: Any, path: str) -> None:
    """All of :data:`BRANCHES` must exist: name the missing ones and list what is expected."""
    missing = [b for b in BRANCHES if b not in tree]
    if missing:
        raise DataError(f"{path}: tree '{tree.name}' has no branch {', '.join(missing)} "
                        f"(the converter needs: {', '.join(BRANCHES)}); is this a NanoAOD file "
                        "with generator information (simulation)?")


# ----------------------------------------------------------------------------- selection

def _flat(array: ak.Array, dtype: type) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=1)).astype(dtype, copy=False)


def select_matched_jets(events: ak.Array, *, entry_start: int = 0, file_index: int = 0,
                        min_genjet_pt: float = 0.0) -> JetRows:
    """Flat rows for the GenJet-matched jets of a step of ``events`` (a record of BRANCHES)."""
    idx = events["Jet_genJetIdx"]
    matched = (idx >= 0) & (idx < events["nGenJet"])
    gen_idx = idx[matched]

    def jets(name: str) -> ak.Array:
        return events[name][matched]

    def per_event(values: ak.Array | np.ndarray) -> ak.Array:
        # Broadcast an event-level value to the jet structure, then keep matched jets.
        return ak.broadcast_arrays(values, events["Jet_pt"])[0][matched]

    raw_scale = 1 - jets("Jet_rawFactor")
    columns = {
        "Jet_rawPt": jets("Jet_pt") * raw_scale,
        "Jet_rawMass": jets("Jet_mass") * raw_scale,
        **{name: jets(name) for name in _PLAIN_JET_FEATURES},
        **{name: per_event(events[name]) for name in _EVENT_FEATURES},
    }
    inputs = np.stack([_flat(columns[name], np.float32) for name in FEATURE_NAMES], axis=1)
    target = _flat(events["GenJet_pt"][gen_idx], np.float32)
    entry = np.arange(entry_start, entry_start + len(events), dtype=np.int64)
    rows = JetRows(
        inputs=inputs,
        target=target,
        reference=inputs[:, FEATURE_NAMES.index("Jet_rawPt")].copy(),
        aux={
            "Jet_pt": _flat(jets("Jet_pt"), np.float32),
            "event": _flat(per_event(entry), np.int64),
            "jet_index": _flat(ak.local_index(events["Jet_pt"])[matched], np.int32),
            "file": np.full(len(target), file_index, dtype=np.int32),
        },
    )
    keep = target >= min_genjet_pt
    return rows if keep.all() else rows.take(keep)


def drop_nonfinite(rows: JetRows) -> tuple[JetRows, int]:
    """Drop rows with NaN/Inf: one bad jet must not poison a training run's statistics."""
    ok = np.isfinite(rows.inputs).all(axis=1) & np.isfinite(rows.target) & np.isfinite(rows.reference)
    return (rows, 0) if ok.all() else (rows.take(ok), int((~ok).sum()))


# ----------------------------------------------------------------------------- sharding

class ShardWriter:
    """Buffers rows and writes ``DIR/shard_NNNNN.h5`` every ``rows_per_shard`` rows."""

    def __init__(self, out_dir: Path, rows_per_shard: int, parameters: dict, *,
                 feature_names: Sequence[str] = FEATURE_NAMES, target_name: str = TARGET_NAME,
                 reference_name: str = REFERENCE_NAME, source: str = SOURCE) -> None:
        self.out_dir, self.rows_per_shard, self.parameters = out_dir, rows_per_shard, parameters
        self.names = (list(feature_names), target_name, reference_name, source)  # another converter's schema
        self.pending: list[JetRows] = []
        self.n_pending = 0
        self.written: list[Path] = []
        self.n_written = 0

    def add(self, rows: JetRows) -> None:
        if len(rows):
            self.pending.append(rows)
            self.n_pending += len(rows)
        while self.n_pending >= self.rows_per_shard:
            buffered = JetRows.concatenate(self.pending)
            self._write(buffered.take(slice(0, self.rows_per_shard)))
            rest = buffered.take(slice(self.rows_per_shard, None))
            self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        if self.n_pending:
            self._write(JetRows.concatenate(self.pending))
            self.pending, self.n_pending = [], 0

    def _write(self, rows: JetRows) -> None:
        path = self.out_dir / SHARD_PATTERN.format(len(self.written))
        features, target, reference, source = self.names
        write_shard(path, inputs=rows.inputs, target=rows.target, reference=rows.reference,
                    feature_names=features, target_name=target, reference_name=reference, target_unit="GeV",
                    source=source, parameters=self.parameters, aux=rows.aux)
        log.debug("wrote %s (%d jets)", path, len(rows))
        self.written.append(path)
        self.n_written += len(rows)


# ----------------------------------------------------------------------------- conversion

@contextlib.contextmanager
def opened_tree(path: str, tree_name: str) -> Iterator[Any]:
    """:func:`open_tree`, closing the file afterwards (thousands of inputs, one handle)."""
    tree = open_tree(path, tree_name)
    try:
        yield tree
    finally:
        tree.file.close()


def iterate(tree: Any, path: str, step_size: int | str,
            fields: Sequence[str] = BRANCHES) -> Iterator[tuple[int, ak.Array]]:
    """(first entry, events) per step of ``fields``; read errors mid-file become DataErrors."""
    try:
        for events, report in tree.iterate(list(fields), step_size=step_size, library="ak",
                                           report=True):
            yield report.tree_entry_start, events
    except (OSError, ValueError, uproot.deserialization.DeserializationError) as exc:
        raise DataError(f"{path}: cannot read tree '{tree.name}' ({_first_line(exc)})") from None


def convert(
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    events_per_shard: int = DEFAULT_EVENTS_PER_SHARD,
    tree: str = DEFAULT_TREE,
    min_genjet_pt: float = 0.0,
    step_size: int | str = STEP_SIZE,
) -> ConversionResult:
    """Convert NanoAOD files/globs ``inputs`` into shards in ``out_dir``.

    Every input is opened and checked before the first shard is written, so a
    bad file late in the list does not leave a half-written dataset behind.
    """
    if events_per_shard < 1:
        raise DataError(f"events_per_shard must be >= 1, got {events_per_shard}")
    out = Path(out_dir)
    check_out_dir(out)  # before any input is read: a wrong --out costs nothing
    files = resolve_inputs(inputs)
    for path in files:
        with opened_tree(path, tree) as t:
            check_branches(t, path)

    parameters = {
        "inputs": files,
        "tree": tree,
        "branches": list(BRANCHES),
        "features": FEATURE_DEFINITIONS,
        "selection": SELECTION,
        "min_genjet_pt": min_genjet_pt,
        "target": "GenJet_pt[Jet_genJetIdx]",
        "reference": FEATURE_DEFINITIONS["Jet_rawPt"],
        "aux": {"Jet_pt": "CMS-corrected jet pT", "event": "entry number in its input file",
                "jet_index": "index of the jet in the event's Jet collection",
                "file": "index into parameters.inputs"},
        "events_per_shard": events_per_shard,
    }
    writer = ShardWriter(out, events_per_shard, parameters)
    n_events = n_dropped = 0
    for file_index, path in enumerate(files):
        n_before = writer.n_written + writer.n_pending
        with opened_tree(path, tree) as t:
            for entry_start, events in iterate(t, path, step_size):
                rows, dropped = drop_nonfinite(select_matched_jets(
                    events, entry_start=entry_start, file_index=file_index,
                    min_genjet_pt=min_genjet_pt))
                writer.add(rows)
                n_events += len(events)
                n_dropped += dropped
        log.info("%s: %d matched jets", path, writer.n_written + writer.n_pending - n_before)

    return finish(writer, n_events, n_dropped, f"of {len(files)} file(s) passes the selection ({SELECTION}, "
                                                f"min_genjet_pt={min_genjet_pt})")


def finish(writer: ShardWriter, n_events: int, n_dropped: int, no_jet: str) -> ConversionResult:
    """Write the last shard and report; a conversion that selected nothing is an error ("no jet
    in N events ``no_jet``") that leaves nothing written."""
    if writer.n_written + writer.n_pending == 0:
        raise DataError(f"no jet in {n_events} events {no_jet}; nothing written")
    writer.close()
    if n_dropped:
        log.warning("dropped %d matched jets with NaN/Inf inputs or target", n_dropped)
    log.info("wrote %d jets from %d events in %d shard(s) to %s",
             writer.n_written, n_events, len(writer.written), writer.out_dir / "shard_*.h5")
    return ConversionResult(shards=tuple(writer.written), n_jets=writer.n_written,
                            n_events=n_events, n_dropped_nonfinite=n_dropped)


# ----------------------------------------------------------------------------- CLI

def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hepprune-convert-nanoaod",
        description="Convert CMS NanoAOD ROOT files to hepprune HDF5 shards for jet energy "
                    "regression (target GenJet_pt of the matched GenJet, reference raw jet pT).")
    parser.add_argument("--input", action="append", required=True, metavar="FILE_OR_GLOB",
                        help="NanoAOD file or glob (quote it); repeat for more")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory for shard_00000.h5, ... (must hold no shards yet)")
    parser.add_argument("--events-per-shard", type=_positive_int, default=DEFAULT_EVENTS_PER_SHARD,
                        metavar="N", help="jets per output shard (default %(default)d)")
    parser.add_argument("--tree", default=DEFAULT_TREE,
                        help="TTree or RNTuple name, whichever the file holds (default %(default)s)")
    parser.add_argument("--min-genjet-pt", type=float, default=0.0, metavar="GEV",
                        help="keep only jets whose matched GenJet has pT >= this (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    convert(args.input, args.out, events_per_shard=args.events_per_shard, tree=args.tree,
            min_genjet_pt=args.min_genjet_pt)
    return 0


def cli() -> None:
    raise SystemExit(run(main))


if __name__ == "__main__":
    cli()
