"""ATLAS PHYSLITE to hepprune HDF5 shards, for jet energy regression:
``python data/convert_physlite.py --input FILE_OR_GLOB --out DIR``.

PHYSLITE stores its event data as an RNTuple (``EventData``); uproot reads it
in steps, as the NanoAOD converter reads CMS files (and with its checks,
sharding and one-line errors). Each reconstructed jet (``AnalysisJets``) is
matched to the nearest truth jet (``AntiKt4TruthDressedWZJets``) within
ΔR < 0.3, the usual ATLAS jet-calibration matching; unmatched jets are
dropped. Momenta are converted from MeV to GeV.

inputs     the jet at constituent scale (before calibration: what the network
           should learn to correct) and its shape: pT, mass, eta, detector eta,
           EM fraction, width, JVF
target     the matched truth jet's pT
reference  the constituent-scale pT (the raw estimate the network must beat)
aux        the ATLAS-calibrated pT, the event's entry, the jet's index, the file
"""

if __package__ in (None, ""):  # `python data/convert_physlite.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from hepprune.core.cli import run
from hepprune.core.errors import DataError
from hepprune.data import convert_nanoaod as nano
from hepprune.data.convert_nanoaod import ConversionResult, JetRows
from hepprune.data.schema import check_out_dir

log = logging.getLogger("data.convert_physlite")

DEFAULT_TREE = "EventData"
SOURCE = "hepprune PHYSLITE converter"
MEV = 1e-3  # PHYSLITE momenta are in MeV
MATCH_DR = 0.3
JETS = "AnalysisJetsAuxDyn:"
TRUTH = "AntiKt4TruthDressedWZJetsAux:"  # a record field: pt, eta, phi, m
TARGET_NAME = "TruthJet_pt"
REFERENCE_NAME = "Jet_constitPt"

#: Input features, in column order, and what each is in PHYSLITE.
FEATURE_DEFINITIONS: dict[str, str] = {
    "Jet_constitPt": f"{JETS}JetConstitScaleMomentum_pt / 1000 (GeV)",
    "Jet_constitM": f"{JETS}JetConstitScaleMomentum_m / 1000 (GeV)",
    "Jet_constitEta": f"{JETS}JetConstitScaleMomentum_eta",
    "Jet_detectorEta": f"{JETS}DetectorEta",
    "Jet_EMFrac": f"{JETS}EMFrac",
    "Jet_width": f"{JETS}Width",
    "Jet_JVFCorr": f"{JETS}JVFCorr",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_DEFINITIONS)
_JET_FIELDS = ("pt", "eta", "phi", "JetConstitScaleMomentum_pt", "JetConstitScaleMomentum_m",
               "JetConstitScaleMomentum_eta", "DetectorEta", "EMFrac", "Width", "JVFCorr")
#: Every field the converter reads.
FIELDS: tuple[str, ...] = (*(JETS + f for f in _JET_FIELDS), TRUTH)
SELECTION = f"nearest truth jet within ΔR < {MATCH_DR}"


def _flat(array: ak.Array, dtype: type) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=1)).astype(dtype, copy=False)


def match_to_truth(eta: ak.Array, phi: ak.Array, t_eta: ak.Array, t_phi: ak.Array) -> tuple[ak.Array, ak.Array]:
    """(index of the nearest truth jet, its ΔR) for every reconstructed jet; -1 and inf without truth jets."""
    reco = ak.zip({"eta": eta, "phi": phi})
    truth = ak.zip({"eta": t_eta, "phi": t_phi})
    r, t = ak.unzip(ak.cartesian([reco, truth], axis=1, nested=True))  # per reco jet, every truth jet
    dphi = (r.phi - t.phi + np.pi) % (2 * np.pi) - np.pi
    dr = np.sqrt((r.eta - t.eta) ** 2 + dphi ** 2)
    best = ak.argmin(dr, axis=2, keepdims=True)
    index = ak.fill_none(ak.firsts(best, axis=2), -1)
    distance = ak.fill_none(ak.firsts(dr[best], axis=2), np.inf)
    return index, distance


def select_matched_jets(events: ak.Array, *, entry_start: int = 0, file_index: int = 0) -> JetRows:
    """Flat rows for the truth-matched jets of a step of ``events`` (a record of FIELDS)."""
    def jet(name: str) -> ak.Array:
        return events[JETS + name]

    truth = events[TRUTH]
    index, distance = match_to_truth(jet("eta"), jet("phi"), truth.eta, truth.phi)
    matched = distance < MATCH_DR
    columns = {
        "Jet_constitPt": jet("JetConstitScaleMomentum_pt") * MEV,
        "Jet_constitM": jet("JetConstitScaleMomentum_m") * MEV,
        "Jet_constitEta": jet("JetConstitScaleMomentum_eta"),
        "Jet_detectorEta": jet("DetectorEta"),
        "Jet_EMFrac": jet("EMFrac"),
        "Jet_width": jet("Width"),
        "Jet_JVFCorr": jet("JVFCorr"),
    }
    inputs = np.stack([_flat(columns[name][matched], np.float32) for name in FEATURE_NAMES], axis=1)
    target = _flat(truth.pt[index[matched]] * MEV, np.float32)
    entry = np.arange(entry_start, entry_start + len(events), dtype=np.int64)
    return JetRows(
        inputs=inputs, target=target, reference=inputs[:, 0].copy(),
        aux={"Jet_pt": _flat(jet("pt")[matched] * MEV, np.float32),
             "event": _flat(ak.broadcast_arrays(entry, jet("pt"))[0][matched], np.int64),
             "jet_index": _flat(ak.local_index(jet("pt"))[matched], np.int32),
             "file": np.full(len(target), file_index, dtype=np.int32)})


def check_fields(tree, path: str) -> None:
    missing = [f for f in FIELDS if f not in tree]
    if missing:
        raise DataError(f"{path}: '{tree.name}' has no field {', '.join(missing)} (the converter needs: "
                        f"{', '.join(FIELDS)}); is this a PHYSLITE file from simulation (with truth jets)?")


def convert(inputs: Sequence[str], out_dir: str | os.PathLike, *,
            events_per_shard: int = nano.DEFAULT_EVENTS_PER_SHARD, tree: str = DEFAULT_TREE,
            step_size: int | str = nano.STEP_SIZE) -> ConversionResult:
    """Convert PHYSLITE files/globs ``inputs`` into shards in ``out_dir``; every input is
    checked before the first shard is written."""
    if events_per_shard < 1:
        raise DataError(f"events_per_shard must be >= 1, got {events_per_shard}")
    out = Path(out_dir)
    check_out_dir(out)
    files = nano.resolve_inputs(inputs)
    for path in files:
        with nano.opened_tree(path, tree) as t:
            check_fields(t, path)
    parameters = {"inputs": files, "tree": tree, "fields": list(FIELDS), "features": FEATURE_DEFINITIONS,
                  "selection": SELECTION, "target": f"{TRUTH}pt of the matched truth jet / 1000 (GeV)",
                  "reference": FEATURE_DEFINITIONS["Jet_constitPt"],
                  "aux": {"Jet_pt": "ATLAS-calibrated jet pT (GeV)", "event": "entry number in its input file",
                          "jet_index": "index of the jet in the event's AnalysisJets",
                          "file": "index into parameters.inputs"},
                  "events_per_shard": events_per_shard}
    writer = nano.ShardWriter(out, events_per_shard, parameters, feature_names=FEATURE_NAMES,
                              target_name=TARGET_NAME, reference_name=REFERENCE_NAME, source=SOURCE)
    n_events = n_dropped = 0
    for file_index, path in enumerate(files):
        with nano.opened_tree(path, tree) as t:
            for entry_start, events in nano.iterate(t, path, step_size, FIELDS):
                rows, dropped = nano.drop_nonfinite(select_matched_jets(events, entry_start=entry_start,
                                                                        file_index=file_index))
                writer.add(rows)
                n_events += len(events)
                n_dropped += dropped
    return nano.finish(writer, n_events, n_dropped, f"of {len(files)} file(s) is matched to a truth jet ({SELECTION})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = nano.build_parser()
    parser.prog = "convert_physlite.py"
    parser.description = __doc__.splitlines()[0]
    parser.set_defaults(tree=DEFAULT_TREE)
    args = parser.parse_args(argv)
    if args.min_genjet_pt:
        raise DataError("--min-genjet-pt is for NanoAOD; PHYSLITE jets are kept whenever a truth jet matches")
    convert(args.input, args.out, events_per_shard=args.events_per_shard, tree=args.tree)
    return 0


def cli() -> None:
    raise SystemExit(run(main))


if __name__ == "__main__":
    cli()
