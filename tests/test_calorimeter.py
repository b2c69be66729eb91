"""Tests of the calorimeter generator (data/calorimeter.py) and its CLI (data/make_dataset.py).

Sizes are tiny so the whole file runs in a few seconds; the statistical
tolerances are several standard errors wide at these sizes, and the seeds are
fixed, so the tests are deterministic.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error

from hepprune.core.errors import ConfigError
from hepprune.data import calorimeter as cal
from hepprune.data import make_dataset
from hepprune.data.calorimeter import CalorimeterParams, generate_events
from hepprune.data.schema import open_dataset

# No pileup, no electronics: the tower sum is then shower physics only.
QUIET = dict(pileup_mu=0.0, ecal_noise=0.0, hcal_noise=0.0, ecal_zs_threshold=0.0,
             hcal_zs_threshold=0.0)


def _events(n: int, seed: int = 0, image: bool = False, **overrides) -> dict:
    params = CalorimeterParams(**overrides)
    return generate_events(n, params, np.random.default_rng(seed), image=image)


def _response(events: dict) -> np.ndarray:
    return events["reference"].astype(np.float64) / events["target"]


def test_erf_matches_math_erf():
    x = np.linspace(-6, 6, 2001)
    expected = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(cal.erf(x) - expected)) < 2e-7


def test_power_law_spectrum_bounds_and_slope():
    rng = np.random.default_rng(0)
    log_uniform = cal.sample_power_law(rng, 20000, 1.0, 500.0, 1.0)
    assert log_uniform.min() >= 1.0 and log_uniform.max() <= 500.0
    # log-uniform: the median is the geometric mean of the edges
    assert np.median(log_uniform) == pytest.approx(math.sqrt(500.0), rel=0.05)
    steep = cal.sample_power_law(rng, 20000, 1.0, 500.0, 2.0)
    # p(E) ~ E^-2 on [1, 500]: CDF(E) = (1 - 1/E) / (1 - 1/500), median ~ 2
    assert np.median(steep) == pytest.approx(1.0 / (1.0 - 0.5 * (1 - 1 / 500)), rel=0.05)


def test_event_layout_and_invariants():
    ev = _events(2000, image=True)
    n, towers = 2000, cal.N_TOWERS
    assert ev["inputs"].shape == (n, 52) and ev["inputs"].dtype == np.float32
    assert len(cal.FEATURE_NAMES) == 52
    assert cal.FEATURE_NAMES[0] == "ecal_r0c0" and cal.FEATURE_NAMES[49] == "hcal_r4c4"
    assert cal.FEATURE_NAMES[-2:] == ("eta", "npv")
    ecal, hcal = ev["inputs"][:, :towers], ev["inputs"][:, towers:2 * towers]
    assert (ecal >= 0).all() and (hcal >= 0).all()
    # zero suppression: nothing survives between 0 and the threshold
    p = CalorimeterParams()
    assert not ((ecal > 0) & (ecal < p.ecal_zs_threshold)).any()
    assert not ((hcal > 0) & (hcal < p.hcal_zs_threshold)).any()
    np.testing.assert_allclose(ev["reference"], ev["inputs"][:, :2 * towers].sum(axis=1), rtol=1e-5)
    assert np.abs(ev["inputs"][:, -2]).max() <= 2.5
    npv = ev["inputs"][:, -1]
    assert (npv >= 1).all() and (npv - 1 <= ev["aux"]["n_pileup"]).all()
    assert ev["aux"]["pid"].dtype == np.int8 and set(np.unique(ev["aux"]["pid"])) == {0, 1}
    # the image is the same towers viewed as rows x columns x [ecal, hcal]
    assert ev["image"].shape == (n, 5, 5, 2)
    np.testing.assert_array_equal(ev["image"][:, :, :, 0].reshape(n, -1), ecal)
    np.testing.assert_array_equal(ev["image"][:, :, :, 1].reshape(n, -1), hcal)
    column = cal.FEATURE_NAMES.index("ecal_r2c3")
    np.testing.assert_array_equal(ev["image"][:, 2, 3, 0], ev["inputs"][:, column])


def test_hadron_response_below_one_and_below_em():
    ev = _events(20000, seed=1, pileup_mu=0.0)
    r, pid, e = _response(ev), ev["aux"]["pid"], ev["target"]
    em, had = np.median(r[pid == cal.PID_EM]), np.median(r[pid == cal.PID_HADRON])
    assert 0.93 < em < 1.0
    assert had < 0.9
    assert em - had > 0.1
    # non-compensation: the hadron response rises with energy as f_em does
    low = np.median(r[(pid == 1) & (e > 5) & (e < 20)])
    high = np.median(r[(pid == 1) & (e > 150)])
    assert low < high < 1.0


def _em_only(a: float, c: float, energy: float) -> CalorimeterParams:
    """e/gamma at a fixed energy with every effect but ECAL sampling switched off."""
    return CalorimeterParams(**QUIET, em_fraction_of_particles=1.0, e_min=energy, e_max=energy,
                             em_hcal_leak_base=0.0, em_hcal_leak_slope=0.0, ecal_halo_fraction=0.0,
                             width_fluctuation=0.0, ecal_stochastic=a, ecal_constant=c)


@pytest.mark.parametrize("a", [0.03, 0.10])
def test_em_resolution_follows_stochastic_term(a):
    c = 0.003
    for i, energy in enumerate((2.0, 20.0, 200.0)):
        ev = generate_events(4000, _em_only(a, c, energy), np.random.default_rng(10 + i))
        r = _response(ev)
        expected = math.sqrt(a**2 / energy + c**2)
        assert np.median(r) == pytest.approx(1.0, abs=3 * expected / math.sqrt(4000) + 1e-3)
        assert np.std(r) == pytest.approx(expected, rel=0.1), f"E={energy} GeV"


def test_resolution_scales_with_stochastic_term():
    # the same random stream with a doubled: the spread must double too
    widths = [np.std(_response(generate_events(4000, _em_only(a, 0.0, 5.0),
                                               np.random.default_rng(3))))
              for a in (0.03, 0.06)]
    assert widths[1] / widths[0] == pytest.approx(2.0, rel=0.05)


def _hadron_hcal_only(a: float, c: float, energy: float, e_over_h: float = 1.4) -> CalorimeterParams:
    """Pions at a fixed energy and a fixed electromagnetic fraction (its mean), all
    visible energy in the HCAL (MIP of 0 GeV through the ECAL), no lateral leakage
    (centred, narrow, no halo): the only fluctuation left is HCAL sampling."""
    return CalorimeterParams(**QUIET, em_fraction_of_particles=0.0, e_min=energy, e_max=energy,
                             hadron_em_fraction_std=0.0, hadron_ecal_start_prob=0.0, hadron_mip_energy=0.0,
                             e_over_h=e_over_h, impact_offset_max=0.0, hcal_core_width=0.3,
                             hcal_halo_fraction=0.0, width_fluctuation=0.0, hcal_stochastic=a, hcal_constant=c,
                             ecal_stochastic=0.5, ecal_constant=0.5)  # ECAL terms must not matter


@pytest.mark.parametrize("a", [0.5, 1.0])
def test_hadron_resolution_follows_hcal_stochastic_term(a):
    c = 0.05
    for i, energy in enumerate((20.0, 200.0)):
        params = _hadron_hcal_only(a, c, energy)
        ev = generate_events(4000, params, np.random.default_rng(20 + i))
        ecal, hcal = ev["inputs"][:, :cal.N_TOWERS], ev["inputs"][:, cal.N_TOWERS:2 * cal.N_TOWERS]
        assert (ecal == 0).all() and (ev["aux"]["pid"] == cal.PID_HADRON).all()
        # the deposit is E times the non-compensated response R = f_em + (1 - f_em) / (e/h)
        f_em = float(cal.hadron_em_fraction_mean(np.array([energy]), params)[0])
        response = f_em + (1.0 - f_em) / params.e_over_h
        deposit = energy * response
        expected = math.sqrt(a**2 / deposit + c**2)  # sigma / D of the HCAL deposit
        measured = hcal.sum(axis=1, dtype=np.float64) / deposit
        assert np.mean(measured) == pytest.approx(1.0, abs=4 * expected / math.sqrt(4000))
        assert np.std(measured) == pytest.approx(expected, rel=0.06), f"E={energy} GeV"
        assert np.median(_response(ev)) == pytest.approx(response, rel=0.02)


def test_hadron_resolution_scales_with_hcal_stochastic_term():
    # the same random stream with a doubled and no constant term: the spread doubles
    # (e/h = 1, so the deposit is E itself)
    widths = [np.std(_response(generate_events(4000, _hadron_hcal_only(a, 0.0, 50.0, e_over_h=1.0),
                                               np.random.default_rng(5))))
              for a in (0.5, 1.0)]
    assert widths[0] == pytest.approx(0.5 / math.sqrt(50.0), rel=0.06)
    assert widths[1] / widths[0] == pytest.approx(2.0, rel=0.02)


def test_pileup_raises_the_raw_sum_and_npv_tracks_it():
    base = dict(em_fraction_of_particles=1.0, e_min=50.0, e_max=50.0)
    quiet = _response(_events(3000, seed=4, **base, pileup_mu=0.0))
    ev = _events(3000, seed=4, **base, pileup_mu=40.0)
    noisy = _response(ev)
    assert np.median(noisy) > np.median(quiet) + 0.2
    n_pu, npv = ev["aux"]["n_pileup"], ev["inputs"][:, -1]
    assert n_pu.mean() == pytest.approx(40.0, rel=0.03)
    assert (npv - 1).mean() == pytest.approx(0.7 * 40.0, rel=0.03)
    forward = np.abs(ev["inputs"][:, -2]) > 1.5
    central = np.abs(ev["inputs"][:, -2]) < 0.5
    assert np.median(noisy[forward]) > np.median(noisy[central])


def test_same_seed_same_events_different_seed_different():
    a, b = _events(500, seed=7, image=True), _events(500, seed=7, image=True)
    c = _events(500, seed=8)
    for key in ("inputs", "target", "reference", "image"):
        np.testing.assert_array_equal(a[key], b[key])
    for key in ("pid", "n_pileup"):
        np.testing.assert_array_equal(a["aux"][key], b["aux"][key])
    assert not np.array_equal(a["inputs"], c["inputs"])


def test_generate_shard_batches_into_one_array():
    params = CalorimeterParams()
    ss = np.random.SeedSequence(1)
    shard = cal.generate_shard(700, params, ss, image=True, batch_events=256)
    assert shard["inputs"].shape == (700, 52) and shard["image"].shape == (700, 5, 5, 2)
    first = generate_events(256, params, np.random.default_rng(np.random.SeedSequence(1)),
                            image=True)
    np.testing.assert_array_equal(shard["inputs"][:256], first["inputs"])
    np.testing.assert_array_equal(shard["aux"]["pid"][:256], first["aux"]["pid"])
    assert np.isfinite(shard["inputs"]).all() and (shard["target"] > 0).all()


def test_split_events_and_default_shards():
    assert cal.split_events(10, 3) == [4, 3, 3]
    assert cal.split_events(5, 5) == [1] * 5
    assert cal.default_shards(1) == 1
    assert cal.default_shards(1_000_000) == 1
    assert cal.default_shards(1_000_001) == 2


def test_parameter_validation_and_overrides():
    p = cal.params_with_overrides(["ecal_stochastic=0.05", "pileup_mu=0"])
    assert p.ecal_stochastic == 0.05 and p.pileup_mu == 0.0
    with pytest.raises(ConfigError, match="hcal_constant=-0.1 must be >= 0"):
        CalorimeterParams(hcal_constant=-0.1)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
        CalorimeterParams(hadron_ecal_start_prob=1.2)
    with pytest.raises(ConfigError, match="e_max"):
        CalorimeterParams(e_min=10.0, e_max=5.0)
    with pytest.raises(ConfigError, match="not finite"):
        cal.params_with_overrides(["e_over_h=nan"])


def _read_all(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        out.update({f"@{k}": v for k, v in f.attrs.items()})
    return out


def test_cli_writes_valid_shards_identical_for_any_jobs(tmp_path, run_cli):
    out = tmp_path / "cli"
    proc = run_cli("data/make_dataset.py", "--out", out, "--events", 1000, "--seed", 5, "--shards", 3,
                   "--image", "--pileup", 5, "--set", "hcal_noise=0.2", "--jobs", 2,
                   timeout=120, check_ok=True)
    assert "wrote 1000 events in 3 shard(s)" in proc.stderr
    info = open_dataset(str(out) + "/*.h5")
    assert info.n_events == 1000
    assert [s.n_events for s in info.shards] == [334, 333, 333]
    assert info.image_shape == (5, 5, 2)
    assert info.feature_names == cal.FEATURE_NAMES
    assert (info.target_name, info.target_unit, info.reference_name) == (
        "E_true", "GeV", "raw_tower_sum")
    assert info.parameters["pileup_mu"] == 5.0 and info.parameters["hcal_noise"] == 0.2
    assert info.parameters["seed"] == 5 and info.parameters["shard_index"] == 0
    with h5py.File(info.shards[0].path, "r") as f:
        assert list(f["image"].attrs["layers"]) == ["ecal", "hcal"]
        assert f.attrs["source"] == cal.SOURCE

    # The same request in-process with one job must give byte-identical contents.
    params = CalorimeterParams(pileup_mu=5.0, hcal_noise=0.2)
    paths = cal.write_dataset(tmp_path / "serial", 1000, seed=5, n_shards=3, params=params,
                              image=True, jobs=1)
    for path in paths:
        a, b = _read_all(path), _read_all(out / path.name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("args, fragment", [
    (["--events", "0"], "--events must be an integer >= 1, got 0"),
    (["--events", "many"], "invalid int value: 'many'"),
    (["--events", "10", "--set", "hcal_stochastic=-1"], "hcal_stochastic=-1.0 must be >= 0"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, run_cli, args, fragment):
    proc = run_cli("data/make_dataset.py", "--out", tmp_path / "x", *args, timeout=60)
    assert_one_line_error(proc, fragment)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, match", [
    (["--events", "10", "--shards", "11"], "--shards must be between 1 and"),
    (["--events", "10", "--shards", "0"], "--shards must be between 1 and"),
    (["--events", "10", "--jobs", "0"], "--jobs must be >= 1"),
    (["--events", "10", "--seed", "-1"], "--seed must be >= 0"),
    (["--events", "10", "--pileup", "-1"], "pileup_mu=-1.0 must be >= 0"),
    (["--events", "10", "--set", "ecal_stochastic=-0.1"], "ecal_stochastic=-0.1 must be >= 0"),
    (["--events", "10", "--set", "em_fraction_of_particles=1.5"], r"must be in \[0, 1\]"),
    (["--events", "10", "--set", "ecal_stochastc=0.1"],
     "unknown generator parameter 'ecal_stochastc'; valid: em_fraction_of_particles, e_min"),
    (["--events", "10", "--set", "e_min=abc"], "not a valid float"),
    (["--events", "10", "--set", "e_min"], "expects name=value"),
])
def test_main_rejects_bad_input_with_config_error(tmp_path, args, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_dataset.main(["--out", str(tmp_path / "x"), *args])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_refuses_to_mix_with_stale_shards(tmp_path):
    cal.write_dataset(tmp_path, 30, n_shards=3, jobs=1)
    cal.write_dataset(tmp_path, 30, seed=1, n_shards=3, jobs=1)  # same layout: overwritten
    with pytest.raises(ConfigError, match="already holds 1 shard"):
        cal.write_dataset(tmp_path, 30, n_shards=2, jobs=1)


def test_docs_describe_every_parameter():
    text = (ROOT / "docs" / "generator.md").read_text()
    missing = [f.name for f in dataclasses.fields(CalorimeterParams) if f"`{f.name}`" not in text]
    assert not missing, f"docs/generator.md does not document: {missing}"
