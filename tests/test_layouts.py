"""Your own HDF5 files read in place (data.layout): every layout class gives
the events hepprune's own schema gives, bad mappings are one line, a slow
layout is named with its read rate, and data/repack.py rewrites it."""

import json
import textwrap
import tracemalloc

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error

from hepprune.core.config import DataConfig, LayoutConfig
from hepprune.core.errors import DataError
from hepprune.data import layout as layout_mod
from hepprune.data import loader
from hepprune.data.repack import repack
from hepprune.data.schema import open_dataset, write_shard

N = 3000
NAMES = ["pt", "eta", "phi", "width"]


def _events(n=N, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    true = rng.uniform(20, 200, n).astype(np.float32)
    raw = (true * rng.normal(0.9, 0.1, n)).astype(np.float32)
    return x, true, raw


def write_layout(kind, path, x, true, raw):
    """``kind``'s file holding these events, and its data.layout."""
    if kind == "hepprune":
        write_shard(path, inputs=x, target=true, reference=raw, feature_names=NAMES, target_name="true",
                    reference_name="raw", source="test", parameters={})
        return {}
    if kind == "array":  # float64, names in an attribute of the dataset, h5py's default (contiguous) layout
        with h5py.File(path, "w") as f:
            f["X"] = x.astype(np.float64)
            f["X"].attrs["feature_names"] = NAMES
            f["y"], f["raw"] = true, raw
        return {"format": "array", "inputs": "X", "target": "y", "reference": "raw"}
    if kind == "array_named":  # names given in the config, truth in a group
        with h5py.File(path, "w") as f:
            f.create_dataset("X", data=x, chunks=(100, 4))
            f["truth/pt"], f["raw"] = true, raw
        return {"format": "array", "inputs": "X", "columns": NAMES, "target": "`truth/pt`", "reference": "raw"}
    if kind == "columns":  # one gzip dataset per feature, in h5py's small chunks
        with h5py.File(path, "w") as f:
            for j, name in enumerate(NAMES):
                f.create_dataset(f"jets/{name}", data=x[:, j], chunks=(64,), compression="gzip")
            f["jets/true_pt"], f["jets/raw_pt"] = true, raw
        return {"format": "columns", "inputs": "jets", "features": NAMES, "target": "true_pt", "reference": "raw_pt"}
    if kind == "compound":  # named fields, a string among them
        rec = np.zeros(len(true), dtype=[("label", "S8"), *[(n, "f4") for n in NAMES], ("true_pt", "f8"),
                                          ("raw_pt", "f4")])
        for j, name in enumerate(NAMES):
            rec[name] = x[:, j]
        rec["true_pt"], rec["raw_pt"], rec["label"] = true, raw, b"jet"
        with h5py.File(path, "w") as f:
            f.create_dataset("events", data=rec, chunks=(500,), compression="lzf")
        return {"format": "compound", "inputs": "events", "features": NAMES, "target": "true_pt",
                "reference": "raw_pt"}
    frame = pd.DataFrame({**{n: x[:, j] for j, n in enumerate(NAMES)}, "true_pt": true.astype(np.float64),
                          "raw_pt": raw, "n_const": np.arange(len(true)) % 7})
    fmt, extra = {"pandas_table": ("table", {}), "pandas_fixed": ("fixed", {}),
                  "pandas_columns": ("table", {"data_columns": True})}[kind]
    frame.to_hdf(path, key="jets", format=fmt, **extra)
    return {"format": "pandas", "inputs": "jets", "features": NAMES, "target": "true_pt", "reference": "raw_pt"}


KINDS = ["array", "array_named", "columns", "compound", "pandas_table", "pandas_fixed", "pandas_columns"]


def _read_all(info):
    with loader.Reader(info) as reader:
        parts = [reader.read(b) for b in loader.all_blocks(info)]
    return [np.concatenate([p[k] for p in parts]) for k in range(3)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_layout_reads_the_events_hepprunes_schema_holds(tmp_path, kind):
    """Two shards of each layout, globbed: the same events as two shards of hepprune's schema."""
    for k in range(2):
        x, true, raw = _events(seed=k)
        write_layout("hepprune", tmp_path / f"own_{k}.h5", x, true, raw)
        layout = LayoutConfig(**write_layout(kind, tmp_path / f"{kind}_{k}.h5", x, true, raw))
    info = open_dataset(tmp_path / f"{kind}_*.h5", layout)
    assert info.feature_names == tuple(NAMES) and info.n_events == 2 * N and len(info.shards) == 2
    for got, want in zip(_read_all(info), _read_all(open_dataset(tmp_path / "own_*.h5")), strict=True):
        np.testing.assert_array_equal(got, want)
    # The same split rules: by position, chunk-aligned blocks, the same event counts.
    own = loader.split_blocks(open_dataset(tmp_path / "own_*.h5"), 0.1, 0.1)
    mapped = loader.split_blocks(info, 0.1, 0.1)
    assert {s: loader.n_events(b) for s, b in mapped.items()} == {s: loader.n_events(b) for s, b in own.items()}


def test_target_and_reference_can_be_arithmetic_of_columns(tmp_path):
    x, true, raw = _events()
    rec = np.zeros(N, dtype=[*[(n, "f4") for n in NAMES], ("e_em", "f4"), ("e_had", "f4"), ("response", "f4")])
    for j, name in enumerate(NAMES):
        rec[name] = x[:, j]
    rec["e_em"], rec["e_had"], rec["response"] = 0.3 * raw, 0.7 * raw, raw / true
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["events"] = rec
    layout = LayoutConfig(format="compound", inputs="events", target="(e_em + e_had) / response",
                          reference="e_em + e_had")
    info = open_dataset(tmp_path / "c.h5", layout)
    assert info.feature_names == tuple(NAMES)  # the columns the target and reference use are not inputs
    assert info.target_name == "(e_em + e_had) / response" and info.reference_name == "e_em + e_had"
    _, t, r = _read_all(info)
    np.testing.assert_allclose(t, true, rtol=1e-5)
    np.testing.assert_allclose(r, rec["e_em"].astype(np.float64) + rec["e_had"], rtol=1e-6)


def _config(tmp_path, data, layout, **extra):
    cfg = {"data": {"path": str(data), "layout": layout}, **extra}
    (tmp_path / "config.yaml").write_text(json.dumps(cfg))
    return tmp_path / "config.yaml"


def test_validate_dataset_checks_a_mapped_layout(tmp_path, run_cli):
    x, true, raw = _events()
    x[17, 2] = 1e30
    layout = write_layout("compound", tmp_path / "c.h5", x, true, raw)
    proc = run_cli("data/validate_dataset.py", "--config", _config(tmp_path, tmp_path / "c.h5", layout),
                   "--values", check_ok=True)
    assert proc.stdout.splitlines()[0].startswith(f"ok: 1 shard(s), {N} events, layout compound")
    assert "inputs: 4 features (pt, eta, phi, width)" in proc.stdout
    assert "target: true_pt [GeV]   reference: raw_pt" in proc.stdout
    assert "warning: feature phi: 1 extreme value(s)" in proc.stdout


def _two_files(tmp_path, second):
    x, true, raw = _events()
    layout = write_layout("array", tmp_path / "a_0.h5", x, true, raw)
    with h5py.File(tmp_path / "a_1.h5", "w") as f:
        second(f, x, true, raw)
    return layout


@pytest.mark.parametrize("case, fragments", [
    ("missing dataset", ("data.layout.inputs 'Xs' is not in the file", "the file holds: X (3000, 4) float64",
                         "raw (3000,) float32", "y (3000,) float32")),
    ("missing column", ("data.layout.features 'mass' is neither a column of 'X' (pt, eta, phi, width)",)),
    ("lengths disagree", ("'/raw' holds 2999 events, '/X' holds 3000",)),
    ("string field", ("data.layout.features 'label' has dtype |S8, not a number", "numeric columns in 'events'")),
    ("shards disagree", ("shards disagree on feature_names", "a_1.h5 has ('a', 'b', 'c', 'd')")),
    ("not pandas", ("'X' is not a DataFrame written by pandas to_hdf",)),
    ("too many names", ("data.layout.columns names 5 columns, 'X' has 4",)),
    ("everything used", ("no input feature left",)),
    ("feature is the target", ("data.layout.features lists 'pt', which the target or reference is made of",)),
    ("duplicate names", ("'X' names two columns 'pt'",)),
])
def test_a_bad_mapping_is_one_line_listing_what_the_file_holds(tmp_path, run_cli, case, fragments):
    x, true, raw = _events()
    path = tmp_path / "a_0.h5"
    layout = write_layout("array", path, x, true, raw)
    if case == "missing dataset":
        layout["inputs"] = "Xs"
    elif case == "missing column":
        layout["features"] = ["pt", "mass"]
    elif case == "lengths disagree":
        with h5py.File(path, "a") as f:
            del f["raw"]
            f["raw"] = raw[:-1]
    elif case == "string field":
        layout = write_layout("compound", path, x, true, raw)
        layout["features"] = ["pt", "label"]
    elif case == "shards disagree":
        write_layout("array", tmp_path / "a_1.h5", x, true, raw)
        with h5py.File(tmp_path / "a_1.h5", "a") as f:
            f["X"].attrs["feature_names"] = ["a", "b", "c", "d"]
        path = tmp_path / "a_*.h5"
    elif case == "not pandas":
        layout["format"] = "pandas"
    elif case == "too many names":
        layout["columns"] = [*NAMES, "mass"]
    elif case == "everything used":
        layout.update(columns=NAMES, target="pt * eta * phi", reference="width")
    elif case == "feature is the target":
        layout.update(features=["pt", "eta"], target="pt * 2")
    elif case == "duplicate names":
        with h5py.File(path, "a") as f:
            f["X"].attrs["feature_names"] = ["pt", "pt", "phi", "width"]
    proc = run_cli("data/validate_dataset.py", "--config", _config(tmp_path, path, layout))
    assert_one_line_error(proc, *fragments)


@pytest.mark.parametrize("layout, fragments", [
    ({"format": "array", "target": "y", "reference": "r"}, ("data.layout.inputs",)),
    ({"format": "columns", "target": "__import__('os')", "reference": "r"}, ("data.layout.target", "call")),
    ({"format": "columns", "target": "y"}, ("data.layout.reference", "regression needs")),
    ({"format": "columns", "target": "y", "reference": "r", "columns": ["a"]}, ("data.layout.columns",)),
    ({"format": "xlsx"}, ("data.layout.format", "hepprune, array, columns, compound, pandas")),
])
def test_a_bad_layout_config_is_refused_at_the_door(tmp_path, run_cli, layout, fragments):
    proc = run_cli("data/validate_dataset.py", "--config", _config(tmp_path, tmp_path / "none.h5", layout))
    assert_one_line_error(proc, *fragments)


def _slow_file(path, n=120_000, features=40):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, features)).astype(np.float32)
    true = rng.uniform(20, 200, n).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x, chunks=(64, features), compression="gzip")
        f.create_dataset("y", data=true, chunks=(64,), compression="gzip")
        f.create_dataset("raw", data=true * 0.9, chunks=(64,), compression="gzip")
    return {"format": "array", "inputs": "X", "target": "y", "reference": "raw"}


def test_a_slow_layout_is_named_with_its_rate_and_repack_makes_it_fast(tmp_path, caplog):
    """gzip in h5py-sized chunks: the statistics pass measures the read rate
    and says so in one line, with the repack command. data/repack.py rewrites
    it in bounded memory, event for event, and the rewritten file is fast."""
    layout = LayoutConfig(**_slow_file(tmp_path / "slow.h5"))
    info = open_dataset(tmp_path / "slow.h5", layout)
    splits = loader.split_blocks(info, 0.1, 0.1)
    with loader.Reader(info) as reader, caplog.at_level("WARNING"):
        loader.scan(reader, splits, DataConfig())
    (line,) = [r.getMessage() for r in caplog.records if "slow layout" in r.getMessage()]
    rate = float(line.split(" decodes at ")[1].split(" MB/s")[0])
    assert 0 < rate < loader.SLOW_READ_MB_S
    assert "X: gzip, chunks of 64 events (10 KiB)" in line and "python data/repack.py" in line

    tracemalloc.start()
    result = repack(info, tmp_path / "fast")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.n_events == 120_000 and result.bytes_read == 120_000 * 42 * 4
    assert peak < result.bytes_read / 4  # streamed: a block at a time, not the file
    fast = open_dataset(tmp_path / "fast/shard_*.h5")
    for got, want in zip(_read_all(fast), _read_all(info), strict=True):
        np.testing.assert_array_equal(got, want)
    with h5py.File(tmp_path / "fast/shard_00000.h5") as f:
        assert f["inputs"].compression is None and f["inputs"].chunks[0] * 160 >= 1 << 20
    caplog.clear()
    with loader.Reader(fast) as reader, caplog.at_level("WARNING"):
        loader.scan(reader, loader.split_blocks(fast, 0.1, 0.1), DataConfig())
    assert not [r for r in caplog.records if "slow layout" in r.getMessage()]


def test_repack_cli_writes_nothing_on_bad_input(tmp_path, run_cli):
    x, true, raw = _events()
    layout = write_layout("pandas_table", tmp_path / "p.h5", x, true, raw)
    cfg = _config(tmp_path, tmp_path / "p.h5", layout)
    ok = run_cli("data/repack.py", "--config", cfg, "--out", tmp_path / "fast", check_ok=True)
    assert f"repacked {N} events from 1 shard(s)" in ok.stdout
    again = run_cli("data/repack.py", "--config", cfg, "--out", tmp_path / "fast")
    assert_one_line_error(again, "already holds 1 shard file(s)")
    bad = run_cli("data/repack.py", "--config", cfg, "--set", "data.layout.target=nothing", "--out",
                  tmp_path / "other")
    assert_one_line_error(bad, "data.layout.target 'nothing'")
    assert not (tmp_path / "other").exists() or not list((tmp_path / "other").iterdir())


CONFIG = textwrap.dedent("""
    seed: 3
    data: {{path: {path}, batch_size: 64, shuffle_buffer: 1000, layout: {layout}}}
    model: {{hidden_units: [16, 8]}}
    train: {{epochs: 2, early_stopping_patience: 0}}
    prune: {{targets: [0.5], epochs: 3, warmup_epochs: 0, pruning_epochs: 2}}
""")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["array", "columns", "compound", "pandas_table"])
def test_pretraining_and_pruning_run_on_each_layout_class_in_place(tmp_path, run_cli, kind):
    x, true, raw = _events()
    layout = write_layout(kind, tmp_path / "data.h5", x, true, raw)
    (tmp_path / "config.yaml").write_text(CONFIG.format(path=tmp_path / "data.h5", layout=json.dumps(layout)))
    args = ["--config", tmp_path / "config.yaml", "--run-dir", tmp_path / "run"]
    run_cli("ptq/trainModel.py", *args, check_ok=True)
    run_cli("prune/train_model_prune.py", *args, check_ok=True)
    std = json.loads((tmp_path / "run/baseline/standardization.json").read_text())
    assert std["feature_names"] == NAMES and std["n_events"] == 2400  # the first 80 %: the training split
    np.testing.assert_allclose(std["mean"], x[:2400].astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    pruned = json.loads((tmp_path / "run/prune_0.50/metrics.json").read_text())
    assert abs(pruned["achieved_sparsity"] - 0.5) <= 0.01
    assert pruned["test"]["n_events"] == 300 and np.isfinite(pruned["test"]["resolution_q68"])


def test_repack_that_fails_midway_leaves_nothing(tmp_path, monkeypatch):
    """The second input shard cannot be read: the first shard's output, already
    written, is removed, so a glob over --out never sees half a dataset."""
    x, true, raw = _events()
    for k in range(2):
        layout = write_layout("compound", tmp_path / f"in_{k}.h5", x, true, raw)
    info = open_dataset(tmp_path / "in_*.h5", LayoutConfig(**layout))
    real = loader.Reader.read_into

    def failing(self, block, out, at):
        if block.shard == 1:
            raise OSError("Can't read data (inflate() failed)")
        return real(self, block, out, at)

    monkeypatch.setattr(loader.Reader, "read_into", failing)
    with pytest.raises(OSError, match="inflate"):
        repack(info, tmp_path / "fast")
    assert list((tmp_path / "fast").iterdir()) == []


def test_integer_columns_are_arithmetic_in_float(tmp_path):
    """uint32 3 - 5 is -2, not 4294967294; int8 100 * 1000 is 1e5, not an overflow."""
    x, _, _ = _events()
    with h5py.File(tmp_path / "i.h5", "w") as f:
        f["X"] = x
        f["hits"] = np.full(N, 3, np.uint32)
        f["holes"] = np.full(N, 5, np.uint32)
        f["q"] = np.full(N, 100, np.int8)
    info = open_dataset(tmp_path / "i.h5", LayoutConfig(format="array", inputs="X", columns=NAMES,
                                                         target="hits - holes", reference="q * 1000"))
    _, t, r = _read_all(info)
    assert (t == -2).all() and (r == 100_000).all()


def test_pandas_columns_come_in_the_dataframes_order_without_index_levels_or_dates(tmp_path):
    x, true, raw = _events()
    frame = pd.DataFrame({"when": pd.date_range("2026-01-01", periods=N, freq="s"), "eta": x[:, 1],
                          "n_const": np.arange(N) % 7, "pt": x[:, 0], "true_pt": true, "raw_pt": raw})
    frame.index = pd.MultiIndex.from_arrays([np.arange(N) // 4, np.arange(N) % 4], names=["event", "jet"])
    frame.to_hdf(tmp_path / "t.h5", key="jets", format="table")
    frame.reset_index(drop=True).to_hdf(tmp_path / "f.h5", key="jets", format="fixed")
    for name in ("t.h5", "f.h5"):
        layout = LayoutConfig(format="pandas", inputs="jets", target="true_pt", reference="raw_pt")
        info = open_dataset(tmp_path / name, layout)
        assert info.feature_names == ("eta", "n_const", "pt"), name  # pandas stores them by dtype: f8, i8, f4
        x_read, t, _ = _read_all(info)
        np.testing.assert_array_equal(x_read[:, 2], x[:, 0])
        np.testing.assert_array_equal(t, true)
    bad = LayoutConfig(format="pandas", inputs="jets", features=["when"], target="true_pt", reference="raw_pt")
    with pytest.raises(DataError, match="'when' is a datetime64"):
        open_dataset(tmp_path / "t.h5", bad)


def test_shards_may_differ_in_float_width(tmp_path):
    x, true, raw = _events()
    for k, dtype in enumerate((np.float32, np.float64)):
        with h5py.File(tmp_path / f"s_{k}.h5", "w") as f:
            f["X"], f["y"], f["raw"] = x.astype(dtype), true, raw
    info = open_dataset(tmp_path / "s_*.h5", LayoutConfig(format="array", inputs="X", columns=NAMES, target="y",
                                                            reference="raw"))
    got = _read_all(info)[0]
    np.testing.assert_array_equal(got[:N], x)
    np.testing.assert_array_equal(got[N:], x)


def test_a_block_stays_bounded_when_chunks_run_along_every_event(tmp_path, monkeypatch):
    """Chunks of (N, 1), one per feature: a block would be the whole file;
    it is cut at MAX_BLOCK_BYTES instead, and still reads every event."""
    monkeypatch.setattr(layout_mod, "MAX_BLOCK_BYTES", 64 * 1024)
    x, true, raw = _events()
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("X", data=x, chunks=(N, 1))
        f["y"], f["raw"] = true, raw
    info = open_dataset(tmp_path / "c.h5", LayoutConfig(format="array", inputs="X", columns=NAMES, target="y",
                                                         reference="raw"))
    assert info.shards[0].chunk_rows == 64 * 1024 // 24
    np.testing.assert_array_equal(_read_all(info)[0], x)


def test_images_count_in_the_block_size(tmp_path):
    """A CNN shard's read block is sized by its images too, not its flat inputs alone."""
    n, image = 2000, np.zeros((2000, 16, 16, 4), np.float32)
    x, true, raw = _events(n)
    write_shard(tmp_path / "img.h5", inputs=x, target=true, reference=raw, feature_names=NAMES, target_name="t",
                reference_name="r", source="test", parameters={}, image=image, chunk_bytes=4096)
    rows = open_dataset(tmp_path / "img.h5").shards[0].chunk_rows
    assert rows * (16 * 16 * 4 * 4) <= 2 * layout_mod.MIN_BLOCK_BYTES and rows < n


def test_an_unreadable_chunk_is_one_line_naming_the_file(tmp_path):
    x, true, raw = _events()
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("X", data=x, chunks=(500, 4), compression="gzip")
        f["y"], f["raw"] = true, raw
        offset = f["X"].id.get_chunk_info(1).byte_offset
    with open(tmp_path / "d.h5", "r+b") as raw_file:  # a damaged chunk: gzip cannot inflate it
        raw_file.seek(offset)
        raw_file.write(b"\xff" * 64)
    info = open_dataset(tmp_path / "d.h5", LayoutConfig(format="array", inputs="X", columns=NAMES, target="y",
                                                         reference="raw"))
    with pytest.raises(DataError, match=r"d\.h5: cannot read events 0-3000 \(.*\); a filter other than gzip"):
        _read_all(info)


def test_repack_of_a_compressed_hepprune_file_keeps_its_image_view_and_extras(tmp_path):
    x, true, raw = _events(600)
    image = np.random.default_rng(0).normal(size=(600, 4, 4, 2)).astype(np.float32)
    pid = np.arange(600) % 3
    write_shard(tmp_path / "own.h5", inputs=x, target=true, reference=raw, feature_names=NAMES, target_name="t",
                reference_name="r", source="test", parameters={}, image=image, image_layers=["ecal", "hcal"],
                aux={"pid": pid}, chunk_bytes=4096)
    repack(open_dataset(tmp_path / "own.h5"), tmp_path / "fast")
    with h5py.File(tmp_path / "fast/shard_00000.h5") as f:
        np.testing.assert_array_equal(f["image"][()], image)
        assert list(f["image"].attrs["layers"]) == ["ecal", "hcal"]
        np.testing.assert_array_equal(f["aux/pid"][()], pid)
    assert open_dataset(tmp_path / "fast/shard_*.h5").image_shape == (4, 4, 2)
