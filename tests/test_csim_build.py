"""The C-simulation library is compiled once per distinct firmware (ptq/csim_build.py):
real hls4ml projects, real g++."""

import numpy as np
import pytest

from hepprune.core.config import HlsConfig


def _mlp(seed: int):
    from hepprune.core.backend import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(8, name="fc1"),
                             keras.layers.Activation("relu", name="act"), keras.layers.Dense(1, name="output")])


def test_one_library_per_distinct_firmware_each_project_with_its_own_weights(tmp_path, monkeypatch):
    from hepprune.ptq.csim_build import compile_graph
    from hepprune.ptq.hls_bridge import convert, csim_predict

    monkeypatch.setenv("HEPPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    libraries = tmp_path / "cache" / "csim"
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    a, b = _mlp(1), _mlp(2)
    graph_a = convert(a, tmp_path / "a", HlsConfig())
    compile_graph(graph_a)
    graph_b = convert(b, tmp_path / "elsewhere" / "b", HlsConfig())
    compile_graph(graph_b)
    assert len(list(libraries.glob("*.so"))) == 1  # b's firmware differs only in its weights: no second build

    y_a, y_b = csim_predict(graph_a, x)[:, 0], csim_predict(graph_b, x)[:, 0]
    keras_a, keras_b = (m.predict(x, verbose=0)[:, 0] for m in (a, b))
    # each project simulates its own weights (ap_fixed<16,6> rounding: measured 0.0033 and 0.0037)
    assert np.abs(y_a - keras_a).max() < 0.006 and np.abs(y_b - keras_b).max() < 0.006
    assert np.abs(y_a - y_b).max() > 0.1
    # and exactly as hls4ml's own build of the same project
    graph_own = convert(b, tmp_path / "b_by_hls4ml", HlsConfig())
    graph_own.compile()
    np.testing.assert_array_equal(y_b, np.asarray(graph_own.predict(x), np.float32).reshape(-1))

    compile_graph(graph_a)  # again: the project keeps one library, the latest
    assert len(list((tmp_path / "a" / "firmware").glob("*.so"))) == 1

    narrow = convert(b, tmp_path / "narrow", HlsConfig(precision="ap_fixed<10,4,AP_RND,AP_SAT>"))
    compile_graph(narrow)  # other types: other firmware
    assert len(list(libraries.glob("*.so"))) == 2
    assert not np.array_equal(csim_predict(narrow, x)[:, 0], y_b)


def test_a_project_g_plus_plus_refuses_is_one_clear_error(tmp_path, monkeypatch):
    from hepprune.ptq.csim_build import CompileError, compile_graph
    from hepprune.ptq.hls_bridge import convert

    monkeypatch.setenv("HEPPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    graph = convert(_mlp(1), tmp_path / "p", HlsConfig())
    graph.write()
    original = graph.write

    def write_broken():
        original()
        unit = tmp_path / "p" / "firmware" / "hepprune.cpp"
        unit.write_text(unit.read_text() + "\nthis is not C++;\n")

    graph.write = write_broken
    with pytest.raises(CompileError, match=r"g\+\+ cannot compile .*: .*error.*full output in .*build.log"):
        compile_graph(graph)
    assert not list((tmp_path / "cache" / "csim").glob("*.so"))
