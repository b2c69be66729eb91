"""The streamed loader: schema checks, splits, exactly-once epochs, bounded memory."""

import tracemalloc

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, make_shard

from hepprune.core import targets
from hepprune.core.config import DataConfig
from hepprune.core.errors import DataError
from hepprune.data import layout, loader
from hepprune.data.schema import open_dataset


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """Three shards in 4096-byte chunks, read one chunk per block (no grouping
    of small chunks), so the block machinery works on many small blocks."""
    monkeypatch.setattr(layout, "MIN_BLOCK_BYTES", 1)
    for k in range(3):
        make_shard(tmp_path / f"shard_{k}.h5", n=1500 + 100 * k, seed=k)
    return open_dataset(tmp_path / "shard_*.h5")


def _targets(reader, blocks, **kw):
    return np.concatenate([t for _, t, _ in loader.iter_batches(reader, blocks, 64, **kw)])


def test_open_dataset_reads_metadata(dataset):
    assert len(dataset.shards) == 3 and dataset.n_events == 1500 + 1600 + 1700
    assert dataset.feature_names == ("f0", "f1", "f2", "f3")
    assert all(s.chunk_rows == 256 for s in dataset.shards)  # 4096-byte chunks of 4 float32


def test_splits_are_disjoint_deterministic_and_complete(dataset):
    splits = loader.split_blocks(dataset, 0.1, 0.2)
    with loader.Reader(dataset) as reader:
        ids = {s: _targets(reader, b) for s, b in splits.items()}
    assert sum(map(len, ids.values())) == dataset.n_events
    assert len(np.unique(np.concatenate(list(ids.values())))) == dataset.n_events
    assert abs(len(ids["test"]) / dataset.n_events - 0.2) < 0.01
    assert splits == loader.split_blocks(dataset, 0.1, 0.2)
    for blocks in splits.values():  # blocks never straddle a chunk boundary
        assert all(b.start // 256 == (b.stop - 1) // 256 for b in blocks)


def test_each_training_event_exactly_once_per_epoch(dataset):
    train = loader.split_blocks(dataset, 0.1, 0.1)["train"]
    with loader.Reader(dataset) as reader:
        expected = np.sort(_targets(reader, train))
        epochs = [_targets(reader, train, shuffle_buffer=500, rng=loader.epoch_rng(7, e)) for e in range(3)]
        sizes = [len(t) for _, t, _ in loader.iter_batches(reader, train, 64, shuffle_buffer=500,
                                                            rng=loader.epoch_rng(7, 0))]
    for ids in epochs:
        np.testing.assert_array_equal(np.sort(ids), expected)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch...
    assert not np.array_equal(epochs[0], expected)
    np.testing.assert_array_equal(epochs[2], _again(dataset, train, 2))  # ...reproducibly
    assert all(s == 64 for s in sizes[:-1]) and 0 < sizes[-1] <= 64  # only the last batch is short


def test_workers_read_disjoint_shares_in_equal_steps(dataset):
    """Multi-worker training: each worker reads only its own share, the
    shares cover the split, and every worker yields the same number of full
    batches (each step is a collective, so unequal counts would hang)."""
    train = loader.split_blocks(dataset, 0.1, 0.1)["train"]
    n_train, workers, local = loader.n_events(train), 3, 32
    n_batches = loader.steps(n_train, local * workers)
    shares = [loader.worker_blocks(train, w, workers, loader.epoch_rng(7, 0)) for w in range(workers)]
    sizes = [loader.n_events(s) for s in shares]
    assert sum(sizes) == n_train and max(sizes) - min(sizes) <= 1
    with loader.Reader(dataset) as reader:
        everything = np.sort(_targets(reader, train))
        ids = []
        for w in range(workers):
            windows = list(loader.iter_worker_windows(reader, train, local, n_batches, worker=w, workers=workers,
                                                      rng=loader.epoch_rng(7, 0), shuffle_buffer=300))
            assert all(len(t) % local == 0 for _, t, _ in windows)
            got = np.concatenate([t for _, t, _ in windows])
            assert len(got) == n_batches * local
            mine = _targets(reader, shares[w])
            assert set(got) == set(mine)  # its whole share and nothing from another worker's
            assert len(got) - len(mine) < local  # repeats only to fill the last batch
            ids.append(mine)
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), everything)


def test_more_workers_than_events_is_refused(dataset):
    train = loader.split_blocks(dataset, 0.1, 0.1)["train"][:1]
    n = loader.n_events(train)
    with loader.Reader(dataset) as reader, pytest.raises(DataError, match="cannot be shared by"):
        next(loader.iter_worker_windows(reader, train, 8, 4, worker=0, workers=n + 1))


def _again(dataset, train, epoch):
    with loader.Reader(dataset) as reader:
        return _targets(reader, train, shuffle_buffer=500, rng=loader.epoch_rng(7, epoch))


def _peak_bytes(path, n, f):
    make_shard(path, n=n, n_features=f, chunk_bytes=64 * 1024)
    info = open_dataset(path)
    blocks = loader.split_blocks(info, 0.05, 0.05)["train"]
    with loader.Reader(info) as reader:
        tracemalloc.start()
        seen = sum(len(t) for _, t, _ in loader.iter_batches(reader, blocks, 256, shuffle_buffer=2048,
                                                             rng=loader.epoch_rng(0, 0)))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert seen == loader.n_events(blocks)
    return peak


def test_memory_is_bounded_by_the_shuffle_buffer(tmp_path, monkeypatch):
    """A pass holds the shuffle window and a block (a chunk here: the files are
    smaller than the 2 MiB a block of small chunks would otherwise group)."""
    monkeypatch.setattr(layout, "MIN_BLOCK_BYTES", 1)
    f = 32
    small = _peak_bytes(tmp_path / "small.h5", 20000, f)
    large = _peak_bytes(tmp_path / "large.h5", 80000, f)
    assert large < 1.1 * small, (small, large)  # 4x the data, the same memory
    assert large < 80000 * f * 4 / 8  # and far below the dataset's size


def test_standardization_matches_numpy_on_the_training_split(dataset):
    splits = loader.split_blocks(dataset, 0.1, 0.1)
    with loader.Reader(dataset) as reader:
        stats = loader.scan(reader, splits, DataConfig())
        x = np.concatenate([reader.read(b)[0] for b in splits["train"]])
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.std, x.std(0), rtol=1e-5)
    assert stats.n_events == len(x)
    restored = loader.Standardization.from_dict(stats.to_dict())
    np.testing.assert_array_equal(restored.mean, stats.mean)


def test_a_constant_feature_is_named_and_passes_through_centred(tmp_path, caplog):
    x = np.random.default_rng(2).normal(size=(3000, 4)).astype(np.float32)
    x[:, 2] = 7.5  # e.g. a tower that is always zero-suppressed, or a fixed run condition
    make_shard(tmp_path / "c.h5", n=3000, inputs=x, feature_names=["e0", "e1", "dead_tower", "e3"])
    info = open_dataset(tmp_path / "c.h5")
    with loader.Reader(info) as reader, caplog.at_level("WARNING"):
        stats = loader.scan(reader, loader.split_blocks(info, 0.1, 0.1), DataConfig())
    assert "1 input feature(s) never vary" in caplog.text and "dead_tower" in caplog.text
    assert "e0" not in caplog.text.split("never vary", 1)[1]
    assert stats.std[2] == 1.0 and stats.mean[2] == 7.5
    assert np.isfinite(stats.apply(x.copy())).all() and (stats.apply(x.copy())[:, 2] == 0).all()


def test_tf_dataset_streams_the_same_events(dataset):
    cfg = DataConfig(batch_size=128, shuffle_buffer=300)
    splits = loader.split_blocks(dataset, 0.1, 0.1)
    with loader.Reader(dataset) as reader:
        stats = loader.scan(reader, splits, cfg)
        ds = loader.as_tf_dataset(reader, splits["train"], cfg, stats, seed=3, epochs=range(2))
        batches = [(x.numpy(), t.numpy()) for x, t in ds]
    n = sum(len(t) for _, t in batches)
    assert n == 2 * loader.n_events(splits["train"])
    # The events themselves: each epoch is exactly the train split as the files hold
    # it (inputs standardised, target encoded), every event once, none from val/test.
    x_file, t_file = [], []
    for block in splits["train"]:
        with h5py.File(dataset.shards[block.shard].path, "r") as f:
            x_file.append(f["inputs"][block.start:block.stop].astype(np.float32))
            true, ref = f["target"][block.start:block.stop], f["reference"][block.start:block.stop]
            t_file.append(targets.encode(true.astype(np.float32), ref.astype(np.float32), cfg))
    expected = _sorted_rows(stats.apply(np.concatenate(x_file)), np.concatenate(t_file))
    x_all = np.concatenate([x for x, _ in batches])
    t_all = np.concatenate([t for _, t in batches])
    assert x_all.dtype == np.float32 and t_all.dtype == np.float32
    half = n // 2
    epochs = [(x_all[:half], t_all[:half]), (x_all[half:], t_all[half:])]
    for x, t in epochs:
        np.testing.assert_array_equal(_sorted_rows(x, t), expected)
    assert not np.array_equal(epochs[0][1], epochs[1][1])  # the same events, in a new order


def _sorted_rows(x, t):
    """Rows (inputs..., target) in lexicographic order: a multiset of events."""
    rows = np.column_stack([x, t])
    return rows[np.lexsort(rows.T[::-1])]


# ------------------------------------------------------------------ bad input


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no dataset file matches"):
        open_dataset(tmp_path / "nothing_*.h5")


def test_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        open_dataset(tmp_path / "x.h5")


def test_missing_dataset(tmp_path):
    path = make_shard(tmp_path / "s.h5", n=100)
    with h5py.File(path, "a") as f:
        del f["reference"]
    with pytest.raises(DataError, match="missing dataset 'reference'"):
        open_dataset(path)


def test_wrong_shape(tmp_path):
    path = make_shard(tmp_path / "s.h5", n=100)
    with h5py.File(path, "a") as f:
        del f["target"]
        f["target"] = np.ones(99, np.float32)
    with pytest.raises(DataError, match=r"'target' has shape \(99,\)"):
        open_dataset(path)


def test_not_our_schema(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["inputs"] = np.ones((3, 2))
    with pytest.raises(DataError, match="missing file attribute"):
        open_dataset(tmp_path / "s.h5")


def test_shards_that_disagree(tmp_path):
    make_shard(tmp_path / "a.h5", n=100, n_features=4)
    make_shard(tmp_path / "b.h5", n=100, n_features=5)
    with pytest.raises(DataError, match="shards disagree on feature_names"):
        open_dataset(tmp_path / "*.h5")


def test_shards_in_different_units_are_refused(tmp_path):
    make_shard(tmp_path / "a.h5", n=100)
    make_shard(tmp_path / "b.h5", n=100)
    with h5py.File(tmp_path / "b.h5", "a") as f:
        f.attrs["target_unit"] = "MeV"
    with pytest.raises(DataError, match="shards disagree on target_unit"):
        open_dataset(tmp_path / "*.h5")


@pytest.mark.parametrize("name, data, message", [
    ("image", np.zeros((100, 2, 2, 1), "S1"), "'image' has dtype"),
    ("aux/pid", np.array(["e"] * 100, "S1"), "'aux/pid' has dtype"),
])
def test_non_numeric_image_or_aux_is_refused(tmp_path, name, data, message):
    path = make_shard(tmp_path / "s.h5", n=100)
    with h5py.File(path, "a") as f:
        f[name] = data
    with pytest.raises(DataError, match=message):
        open_dataset(path)


@pytest.mark.parametrize("column", ["inputs", "target", "reference"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_is_refused(tmp_path, column, value):
    path = make_shard(tmp_path / "s.h5", n=500)
    with h5py.File(path, "a") as f:
        data = f[column][...]
        data[417] = value
        f[column][...] = data
    info = open_dataset(path)
    with loader.Reader(info) as reader, pytest.raises(DataError, match=f"NaN or Inf in '{column}' at event 417"):
        loader.scan(reader, loader.split_blocks(info, 0.1, 0.1), DataConfig())


def test_empty_split(tmp_path):
    info = open_dataset(make_shard(tmp_path / "s.h5", n=4))
    with pytest.raises(DataError, match="the val split is empty"):
        loader.split_blocks(info, 0.1, 0.1)


@pytest.mark.parametrize("transform", ["ratio", "log", "none"])
def test_target_transforms_round_trip(transform):
    from hepprune.core import targets

    cfg = DataConfig(target_transform=transform)
    true = np.array([0.5, 3.0, 250.0, 480.0])
    ref = np.array([0.0, 2.5, 300.0, 480.0])  # a zero reference falls back to reference_floor
    t = targets.encode(true, ref, cfg)
    np.testing.assert_allclose(targets.decode(t, ref, cfg), true, rtol=1e-6)
    if transform == "ratio":
        assert t[3] == 1.0 and t[0] == np.float32(0.5 / cfg.reference_floor)


def test_validate_dataset_cli_reports_the_dataset_and_with_values_finds_a_nan(tmp_path, run_cli):
    """data/validate_dataset.py as a user runs it: a summary for a good
    dataset; --values also reads every value and names the first bad event."""
    for k in range(2):
        make_shard(tmp_path / f"good_{k}.h5", n=700, seed=k, n_features=8)
    ok = run_cli("data/validate_dataset.py", tmp_path / "good_*.h5", "--values", check_ok=True)
    lines = ok.stdout.splitlines()
    assert lines[0] == "ok: 2 shard(s), 1400 events, layout hepprune, read in blocks of 700 events"
    assert lines[1] == "inputs: 8 features (f0, f1, f2, f3, f4, f5, ...)"
    assert "target: E_true" in ok.stdout and "reference: raw" in ok.stdout

    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    x[123, 2] = np.nan
    bad = make_shard(tmp_path / "bad.h5", n=500, inputs=x)
    # The structure is fine, so without --values the file passes...
    assert run_cli("data/validate_dataset.py", bad, check_ok=True).stdout.startswith("ok: 1 shard(s), 500 events")
    # ...and --values reads the values and finds the NaN.
    assert_one_line_error(run_cli("data/validate_dataset.py", bad, "--values"), "NaN or Inf in 'inputs' at event 123")


def test_extreme_values_are_reported_by_name_and_count_and_warned_about_in_training(tmp_path, run_cli, caplog):
    """A 1e30 in three events of one feature (finite, so no NaN check sees it) is absurdly far outside
    the feature's bulk: validate_dataset.py --values names it with its count, and the training
    scan warns. Heavy tails (an exponential spectrum), zero-suppressed and constant features are
    physics, not flagged."""
    rng = np.random.default_rng(4)
    n = 30000
    x = np.stack([rng.normal(size=n), rng.exponential(20.0, size=n),
                  np.where(rng.uniform(size=n) < 0.97, 0.0, rng.exponential(5.0, size=n)),
                  np.full(n, 3.0), rng.normal(size=n)], axis=1).astype(np.float32)
    x[[5, 12000, 29000], 4] = 1e30
    names = ["gauss", "spectrum", "sparse_tower", "constant", "broken"]
    path = make_shard(tmp_path / "x.h5", n=n, inputs=x, feature_names=names)
    out = run_cli("data/validate_dataset.py", path, "--values", check_ok=True).stdout
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: feature broken: 3 extreme value(s) far outside its bulk (e.g. 1e+30); they "
                        "would dominate its standardisation"], out
    info = open_dataset(path)
    with loader.Reader(info) as reader, caplog.at_level("WARNING"):
        loader.scan(reader, loader.split_blocks(info, 0.1, 0.1), DataConfig())
    assert "extreme input values in the training split" in caplog.text
    assert "(broken: 2 value(s), e.g. 1e+30)" in caplog.text  # the third is in the val/test split
    clean = make_shard(tmp_path / "clean.h5", n=n, inputs=np.delete(x, 4, axis=1), feature_names=names[:4])
    assert "warning" not in run_cli("data/validate_dataset.py", clean, "--values", check_ok=True).stdout


def test_small_chunks_are_read_several_at_a_time_and_a_contiguous_file_in_slabs(tmp_path):
    """h5py's small default chunks would cost a read call per few KiB: a block
    takes whole chunks until it holds MIN_BLOCK_BYTES. A contiguous dataset is
    read in CHUNK_BYTES slabs."""
    make_shard(tmp_path / "small.h5", n=120000, n_features=8, chunk_bytes=4096)  # 128-event chunks
    small = open_dataset(tmp_path / "small.h5").shards[0].chunk_rows
    row = 8 * 4 + 4 + 4  # inputs, target, reference
    assert small == 52480  # 410 chunks: the fewest that hold 2 MiB of 40-byte rows
    assert small * row >= layout.MIN_BLOCK_BYTES > (small - 128) * row
    blocks = loader.all_blocks(open_dataset(tmp_path / "small.h5"))
    assert all(b.start % 128 == 0 for b in blocks) and len(blocks) == 3
    with h5py.File(tmp_path / "small.h5") as f, h5py.File(tmp_path / "flat.h5", "w") as g:
        for name in ("inputs", "target", "reference"):
            g.create_dataset(name, data=f[name][()])  # contiguous
        g.attrs.update(dict(f.attrs))
    flat = open_dataset(tmp_path / "flat.h5").shards[0].chunk_rows
    assert flat == layout.CHUNK_BYTES // row == 52428
