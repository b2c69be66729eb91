"""ATLAS PHYSLITE (an RNTuple) -> HDF5 on the real 100-event sample."""

import subprocess
import sys

import numpy as np
import pytest
import uproot
from conftest import NANOAOD_SAMPLE, ROOT, _shared_data, assert_one_line_error

from hepprune.data.convert_physlite import FEATURE_NAMES, JETS, TRUTH, convert
from hepprune.data.schema import open_dataset

SAMPLE = _shared_data() / "atlas_physlite_rntuple_100events.root"
pytestmark = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"sample {SAMPLE} not available")


def test_jets_are_matched_to_the_nearest_truth_jet_and_written_in_gev(tmp_path):
    result = convert([str(SAMPLE)], tmp_path)
    info = open_dataset(tmp_path / "shard_*.h5")
    assert (result.n_events, result.n_jets, info.n_events) == (100, 632, 632)
    assert info.feature_names == FEATURE_NAMES and info.target_name == "TruthJet_pt"
    import h5py

    with h5py.File(result.shards[0]) as f:
        target, ref, x = f["target"][:], f["reference"][:], f["inputs"][:]
        calibrated, event, jet = f["aux/Jet_pt"][:], f["aux/event"][:], f["aux/jet_index"][:]
    # Physics: the constituent scale is low, ATLAS's calibration brings it near 1 (GeV, not MeV).
    assert 0.8 < np.median(ref / target) < 0.95 and 0.97 < np.median(calibrated / target) < 1.08
    assert 5 < target.min() and target.max() < 1000 and (ref == x[:, 0]).all()
    # The matching, recomputed by hand for every written jet.
    with uproot.open(SAMPLE) as f:
        a = f["EventData"].arrays([JETS + "eta", JETS + "phi", TRUTH], library="ak")
    for k in range(len(target)):
        e, j = event[k], jet[k]
        t = a[TRUTH][e]
        dphi = (a[JETS + "phi"][e][j] - np.asarray(t.phi) + np.pi) % (2 * np.pi) - np.pi
        dr = np.hypot(a[JETS + "eta"][e][j] - np.asarray(t.eta), dphi)
        assert dr.min() < 0.3 and target[k] == pytest.approx(t.pt[int(np.argmin(dr))] / 1000, rel=1e-6)


def _cli(*args):
    return subprocess.run([sys.executable, "data/convert_physlite.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_converts_and_refuses_what_is_not_physlite(tmp_path):
    proc = _cli("--input", SAMPLE, "--out", tmp_path / "jets", "--events-per-shard", "300")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "jets").glob("shard_*.h5"))) == 3
    if NANOAOD_SAMPLE.is_file():  # a CMS file: no EventData, and the message lists what there is
        line = assert_one_line_error(_cli("--input", NANOAOD_SAMPLE, "--out", tmp_path / "o"), "no tree 'EventData'")
        assert "Events (TTree)" in line
    assert_one_line_error(_cli("--input", SAMPLE, "--out", tmp_path / "o", "--tree", "EventTag"),
                          "'EventTag' has no field", "truth jets")
    assert not (tmp_path / "o").exists()
