"""NanoAOD -> HDF5 conversion on the real CMS Open Data sample (200 events, 362 matched jets)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot
from conftest import NANOAOD_SAMPLE

from hepprune.core.errors import DataError
from hepprune.data.convert_nanoaod import BRANCHES, FEATURE_NAMES, convert
from hepprune.data.schema import open_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLE = NANOAOD_SAMPLE
N_MATCHED = 362

pytestmark = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"sample {SAMPLE} not available")


def _read(pattern: str | Path) -> dict[str, np.ndarray]:
    """All shards matching ``pattern`` concatenated in shard order."""
    info = open_dataset(pattern)
    parts: dict[str, list[np.ndarray]] = {}
    for shard in info.shards:
        with h5py.File(shard.path, "r") as f:
            for name in ("inputs", "target", "reference", "aux/Jet_pt", "aux/event",
                         "aux/jet_index", "aux/file"):
                parts.setdefault(name, []).append(f[name][:])
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nano")
    convert([str(SAMPLE)], out)
    return out


@pytest.fixture(scope="module")
def events():
    with uproot.open(SAMPLE) as f:
        return f["Events"].arrays(list(BRANCHES), library="ak")


def test_schema_features_and_row_count(converted):
    info = open_dataset(converted / "shard_*.h5")
    assert info.n_events == N_MATCHED
    assert info.feature_names == FEATURE_NAMES
    assert info.feature_names == (
        "Jet_rawPt", "Jet_eta", "Jet_rawMass", "Jet_area", "Jet_chHEF", "Jet_neHEF", "Jet_chEmEF",
        "Jet_neEmEF", "Jet_muEF", "Jet_nConstituents", "fixedGridRhoFastjetAll", "PV_npvs")
    assert (info.target_name, info.target_unit, info.reference_name) == ("GenJet_pt", "GeV", "Jet_rawPt")
    assert info.parameters["tree"] == "Events"
    assert info.parameters["inputs"] == [str(SAMPLE)]
    assert set(info.parameters["branches"]) == set(BRANCHES)
    with h5py.File(info.shards[0].path, "r") as f:
        assert f.attrs["source"] == "hepprune NanoAOD converter"
        assert json.loads(f.attrs["parameters"])["selection"].startswith("Jet_genJetIdx >= 0")


def test_values_match_an_independent_read(converted, events):
    d = _read(converted / "shard_*.h5")
    assert all(np.isfinite(v).all() for k, v in d.items() if v.dtype.kind == "f")
    ev, jet = d["aux/event"], d["aux/jet_index"]
    # Every matched jet, looked up by (event, jet index) in the uproot arrays.
    for i in range(len(ev)):
        e, j = int(ev[i]), int(jet[i])
        g = int(events.Jet_genJetIdx[e][j])
        assert 0 <= g < int(events.nGenJet[e])
        assert d["target"][i] == np.float32(events.GenJet_pt[e][g])
        assert d["aux/Jet_pt"][i] == np.float32(events.Jet_pt[e][j])
        assert d["inputs"][i, FEATURE_NAMES.index("PV_npvs")] == events.PV_npvs[e]
        assert d["inputs"][i, FEATURE_NAMES.index("fixedGridRhoFastjetAll")] == \
            np.float32(events.fixedGridRhoFastjetAll[e])
        assert d["inputs"][i, FEATURE_NAMES.index("Jet_eta")] == np.float32(events.Jet_eta[e][j])
    # Reference = raw pT = Jet_pt * (1 - Jet_rawFactor), also the Jet_rawPt input column.
    raw_factor = np.array([events.Jet_rawFactor[int(e)][int(j)] for e, j in zip(ev, jet, strict=True)], np.float32)
    expected = d["aux/Jet_pt"] * (np.float32(1) - raw_factor)
    np.testing.assert_allclose(d["reference"], expected, rtol=1e-6)
    np.testing.assert_array_equal(d["reference"], d["inputs"][:, FEATURE_NAMES.index("Jet_rawPt")])
    assert (d["reference"] < d["aux/Jet_pt"]).mean() > 0.9  # corrections mostly scale up


def test_matched_jets_are_exactly_the_selection(converted, events):
    d = _read(converted / "shard_*.h5")
    idx = events.Jet_genJetIdx
    expected = {(e, j) for e in range(len(idx)) for j in range(len(idx[e]))
                if 0 <= idx[e][j] < events.nGenJet[e]}
    assert len(expected) == N_MATCHED
    assert set(zip(d["aux/event"].tolist(), d["aux/jet_index"].tolist(), strict=True)) == expected


def test_physics_response_above_60_gev(converted):
    """README: median Jet_pt/GenJet_pt ~ 1.03 above 60 GeV, only true if the matching is right."""
    d = _read(converted / "shard_*.h5")
    high = d["target"] > 60
    assert high.sum() > 20
    assert np.median(d["aux/Jet_pt"][high] / d["target"][high]) == pytest.approx(1.03, abs=0.05)


def test_small_shards_and_small_steps_give_the_same_rows(converted, tmp_path):
    paths = convert([str(SAMPLE)], tmp_path, events_per_shard=100, step_size=7).shards
    assert [p.name for p in paths] == [f"shard_0000{i}.h5" for i in range(4)]
    assert open_dataset(tmp_path / "shard_*.h5").n_events == N_MATCHED
    assert [open_dataset(p).n_events for p in paths] == [100, 100, 100, 62]
    small, whole = _read(tmp_path / "shard_*.h5"), _read(converted / "shard_*.h5")
    for name in whole:
        np.testing.assert_array_equal(small[name], whole[name], err_msg=name)


def test_min_genjet_pt_cut(tmp_path):
    result = convert([str(SAMPLE)], tmp_path, min_genjet_pt=60)
    d = _read(tmp_path / "shard_*.h5")
    assert result.n_jets == len(d["target"]) and 20 < result.n_jets < N_MATCHED
    assert (d["target"] >= 60).all()


def test_refuses_out_dir_with_shards(converted):
    with pytest.raises(DataError, match="already holds"):
        convert([str(SAMPLE)], converted)


def test_no_matched_jet_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no jet in 200 events"):
        convert([str(SAMPLE)], tmp_path / "out", min_genjet_pt=1e9)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- CLI

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "data/convert_nanoaod.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


def test_cli_converts(tmp_path):
    proc = _cli("--input", str(SAMPLE), "--out", str(tmp_path), "--events-per-shard", "200")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 362 jets" in proc.stderr
    assert open_dataset(tmp_path / "shard_*.h5").n_events == N_MATCHED
    assert len(list(tmp_path.glob("shard_*.h5"))) == 2


def test_cli_missing_file(tmp_path):
    line = _one_line_error(_cli("--input", str(tmp_path / "nope.root"), "--out", str(tmp_path / "o")))
    assert "nope.root" in line


def test_cli_not_a_root_file(tmp_path):
    bogus = tmp_path / "bogus.root"
    bogus.write_text("this is not ROOT\n")
    line = _one_line_error(_cli("--input", str(bogus), "--out", str(tmp_path / "o")))
    assert "not a readable ROOT file" in line


def test_cli_empty_file(tmp_path):
    empty = tmp_path / "empty.root"
    empty.touch()
    assert "not a readable ROOT file" in _one_line_error(
        _cli("--input", str(empty), "--out", str(tmp_path / "o")))


def test_cli_wrong_tree(tmp_path):
    line = _one_line_error(_cli("--input", str(SAMPLE), "--out", str(tmp_path / "o"), "--tree", "Evnts"))
    assert "no tree 'Evnts'" in line and "Events" in line
    assert not (tmp_path / "o").exists()


def test_cli_missing_branch(tmp_path):
    partial = tmp_path / "partial.root"
    with uproot.open(SAMPLE) as f:
        arrays = f["Events"].arrays([b for b in BRANCHES if b not in ("Jet_rawFactor", "nGenJet",
                                                                      "GenJet_pt")], library="ak")
    with uproot.recreate(partial) as out:  # mktree: plain assignment writes an RNTuple
        tree = out.mktree("Events", {name: arrays[name].type.content for name in arrays.fields})
        tree.extend({name: arrays[name] for name in arrays.fields})
        out["ntuple"] = {"PV_npvs": arrays["PV_npvs"]}  # an RNTuple
        out["hist"] = np.histogram(np.asarray(arrays["PV_npvs"]), bins=5)
    line = _one_line_error(_cli("--input", str(partial), "--out", str(tmp_path / "o")))
    assert "Jet_rawFactor" in line and "GenJet_pt" in line and "needs:" in line
    line = _one_line_error(_cli("--input", str(partial), "--out", str(tmp_path / "o"), "--tree", "ntuple"))
    assert "tree 'ntuple' has no branch" in line and "Jet_rawFactor" in line  # an RNTuple is read, and checked
    assert "is a TH1D, not a TTree or RNTuple" in _one_line_error(
        _cli("--input", str(partial), "--out", str(tmp_path / "o"), "--tree", "hist"))
    line = _one_line_error(_cli("--input", str(partial), "--out", str(tmp_path / "o"), "--tree", "Evnts"))
    assert "TTrees and RNTuples in the file: Events (TTree), ntuple (RNTuple)" in line, line


def test_an_rntuple_converts_to_the_same_shards_as_the_ttree(converted, tmp_path):
    """CMS NanoAOD moves to RNTuple: the shared TTree sample rewritten as an RNTuple by uproot's
    writer converts to exactly the same rows, selected automatically (the same --tree name)."""
    rntuple = tmp_path / "nano_rntuple.root"
    with uproot.open(SAMPLE) as f:
        arrays = f["Events"].arrays(list(BRANCHES), library="ak")
    with uproot.recreate(rntuple) as out:
        out.mkrntuple("Events", {name: arrays[name] for name in BRANCHES})
    with uproot.open(rntuple) as f:
        assert f.classnames() == {"Events;1": "ROOT::RNTuple"}
    proc = _cli("--input", str(rntuple), "--out", str(tmp_path / "out"), "--events-per-shard", "50")
    assert proc.returncode == 0, proc.stderr
    a, b = _read(tmp_path / "out" / "shard_*.h5"), _read(converted / "shard_*.h5")
    for name in ("inputs", "target", "reference", "aux/Jet_pt", "aux/event", "aux/jet_index"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_an_unusable_out_is_refused_before_any_input_is_read(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    line = _one_line_error(_cli("--input", str(tmp_path / "missing.root"), "--out", str(blocker / "sub")))
    assert line.startswith("error: --out") and "is a file, not a directory" in line  # not the missing input


def test_cli_bad_events_per_shard(tmp_path):
    _one_line_error(_cli("--input", str(SAMPLE), "--out", str(tmp_path), "--events-per-shard", "0"))


def test_several_inputs_by_glob(converted, tmp_path):
    for name in ("a.root", "b.root"):
        shutil.copy(SAMPLE, tmp_path / name)
    result = convert([str(tmp_path / "*.root"), str(tmp_path / "a.root")], tmp_path / "out",
                     events_per_shard=500)
    assert (result.n_jets, result.n_events, len(result.shards)) == (2 * N_MATCHED, 400, 2)
    info = open_dataset(tmp_path / "out" / "shard_*.h5")
    assert info.parameters["inputs"] == [str(tmp_path / "a.root"), str(tmp_path / "b.root")]
    d, one = _read(tmp_path / "out" / "shard_*.h5"), _read(converted / "shard_*.h5")
    np.testing.assert_array_equal(d["aux/file"], np.repeat([0, 1], N_MATCHED))
    for name in ("target", "aux/event", "aux/jet_index"):  # event numbers restart per file
        np.testing.assert_array_equal(d[name], np.tile(one[name], 2), err_msg=name)
