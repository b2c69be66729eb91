import pytest

from hepprune.core import config
from hepprune.core.errors import ConfigError


def test_defaults_are_valid_and_documented():
    cfg = config.load(None)
    assert cfg.data.target_transform in ("ratio", "log", "none")
    keys = [k for k, _, _ in config.describe()]
    assert "train.epochs" in keys and "data.batch_size" in keys
    assert all(doc for _, _, doc in config.describe())


@pytest.mark.parametrize("raw, fragments", [
    ({"trian": {}}, ["'trian'", "seed, task, data, model, train"]),
    ({"train": {"epohcs": 3}}, ["'train.epohcs'", "epochs", "learning_rate"]),
    ({"train": {"epochs": 0}}, ["train.epochs", ">= 1"]),
    ({"train": {"epochs": "ten"}}, ["train.epochs", "integer"]),
    ({"train": {"learning_rate": float("nan")}}, ["train.learning_rate", "finite"]),
    ({"model": {"type": "rnn"}}, ["model.type", "mlp, cnn"]),
    ({"model": {"hidden_units": [8, -1]}}, ["model.hidden_units"]),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, ["no training events"]),
    ({"data": {"batch_size": True}}, ["data.batch_size"]),
    ({"data": 3}, ["data must be a mapping"]),
    ({"hls": {"precision": "float32"}}, ["hls.precision", "ap_fixed<W,I>"]),
    ({"hls": {"precision": "ap_fixed<16,6,AP_RDN,AP_SAT>"}}, ["hls.precision", "'AP_RDN'", "AP_RND, AP_RND_ZERO"]),
    ({"hls": {"precision": "ap_fixed<16,6,AP_RND,AP_SATURATE>"}}, ["'AP_SATURATE'", "AP_SAT, AP_SAT_ZERO"]),
    ({"hls": {"precision": "ap_fixed<16,6,>"}}, ["hls.precision", "unknown mode ''"]),
    ({"hls": {"strategy": "distributed_arithmetic"}}, ["hls.strategy", "latency, resource_unrolled, resource"]),
    ({"ptq": {"widths": [12, 8]}}, ["ptq.widths", "increasing"]),
    ({"prune": {"tolerance": 0.05}}, ["prune.tolerance", "<= 0.01"]),
    ({"slurm": {"prune": {"time": "4h"}}}, ["slurm.prune.time", "sbatch --time"]),
    ({"slurm": {"analyze": {"mem": "lots"}}}, ["slurm.analyze.mem", "8G"]),
    ({"slurm": {"pretrain": {"gpu": 1}}}, ["'slurm.pretrain.gpu'", "time, cpus, mem, gpus"]),
    ({"slurm": {"extra": ["qos=high"]}}, ["slurm.extra", "--"]),
    ({"analysis": {"bins": [10, 5]}}, ["analysis.bins", "increasing"]),
])
def test_bad_configs_name_the_key(raw, fragments):
    with pytest.raises(ConfigError) as exc:
        config.from_dict(raw)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_set_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 5}\nmodel: {hidden_units: [4]}\n")
    cfg = config.load(path, ["train.epochs=7", "model.hidden_units=[8, 4]", "data.target_transform=log"])
    assert cfg.train.epochs == 7 and cfg.model.hidden_units == [8, 4]
    assert cfg.data.target_transform == "log"
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        config.load(path, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        config.load(path, ["train.epochs"])


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(scalar)


def test_precision_modes_are_accepted_and_carried_to_sized_types():
    """A rounded, saturating default (the default) and hls4ml's plain one are
    both valid; types sized per layer take the default's modes, and the
    accumulators wrap (a partial sum may leave the range and come back)."""
    from hepprune.core.fixedpoint import accumulator_precision, with_modes

    assert config.from_dict({}).hls.precision == "ap_fixed<16,6,AP_RND,AP_SAT>"
    for ok in ("ap_fixed<16,6>", "ap_fixed<16, 6, AP_RND_CONV, AP_SAT_SYM>", "ap_ufixed<8,0,AP_TRN,AP_SAT,2>"):
        assert config.from_dict({"hls": {"precision": ok}}).hls.precision == ok
    rnd = "ap_fixed<16,6,AP_RND,AP_SAT>"
    assert with_modes("ap_fixed<18,8>", rnd) == "ap_fixed<18,8,AP_RND,AP_SAT>"
    assert with_modes("ap_fixed<12,-3>", rnd) == "ap_fixed<12,-3,AP_RND,AP_SAT>"
    assert with_modes("ap_fixed<18,8,AP_TRN>", rnd) == "ap_fixed<18,8,AP_TRN>"  # names its own
    assert with_modes("auto", rnd) == "auto" and with_modes("ap_fixed<18,8>", "ap_fixed<16,6>") == "ap_fixed<18,8>"
    assert accumulator_precision(rnd) == "ap_fixed<16,6,AP_RND,AP_WRAP>"
    assert accumulator_precision("ap_fixed<16,6>") == "ap_fixed<16,6>"


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    """PyYAML keeps the last of two `train:` sections and silently drops the first."""
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\ntrain:\n  epochs: 5\ndata: {batch_size: 64}\ntrain:\n  learning_rate: 0.01\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'train' on lines 2 and 5"):
        config.load(path)
    path.write_text("train: {epochs: 5, epochs: 6}\n")  # inside a section too
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs' on lines 1 and 1"):
        config.load(path)


def test_exponent_notation_is_a_number_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {learning_rate: 1e-3, min_learning_rate: 2E-6}\nprune: {learning_rate: +5e-4}\n")
    cfg = config.load(path, ["hls.clock_period=4e0", "train.huber_delta=1e-1"])
    assert (cfg.train.learning_rate, cfg.train.min_learning_rate, cfg.prune.learning_rate) == (1e-3, 2e-6, 5e-4)
    assert (cfg.hls.clock_period, cfg.train.huber_delta) == (4.0, 0.1)
    assert config.parse_yaml("a: '1e-3'\nb: 1e3\nc: 10\n") == {"a": "1e-3", "b": 1000.0, "c": 10}
