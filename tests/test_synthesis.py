"""ptq/synthesis.py: reading C-synthesis reports, and running synthesis where a tool exists.

The canned reports under tests/data/synth/ mirror what Vitis HLS 2023.2 and
Vivado HLS 2020.1 write for an hls4ml project named ``hepprune``.
"""

import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hepprune.core.errors import RunError
from hepprune.ptq.synthesis import (
    find_hls_tool,
    parse_report,
    report_dir,
    require_hls_tool,
    run_synthesis,
)

SYNTH = Path(__file__).resolve().parent / "data" / "synth"
VITIS_TOP = "grp_dense_latency_ap_fixed_16_6_5_3_0_ap_fixed_16_6_5_3_0_config{}_s_fu_{}"
VIVADO_TOP = "grp_dense_latency_ap_fixed_ap_fixed_config{}_0_0_fu_{}"
XCVU13P = {"DSP": 12288, "LUT": 1728000, "FF": 3456000, "BRAM_18K": 5376, "URAM": 1280}


def test_vitis_report_is_read_exactly():
    assert parse_report(SYNTH / "vitis") == {
        "tool": "vitis_hls", "version": "2023.2", "part": "xcvu13p-flga2577-2-e",
        "clock_target_ns": 5.0, "clock_estimated_ns": 3.412,
        "latency_min_cycles": 4, "latency_max_cycles": 4, "interval_min": 1, "interval_max": 1,
        "totals": {"DSP": 38, "LUT": 5873, "FF": 2145, "BRAM_18K": 0, "URAM": 0},
        "available": XCVU13P,
        "layers": {
            VITIS_TOP.format(2, 62): {"DSP": 32, "LUT": 4211, "FF": 1522, "BRAM_18K": 0},
            "call_ret_relu_ap_fixed_16_6_5_3_0_ap_fixed_16_6_5_3_0_relu_config4_s_fu_70":
                {"DSP": 0, "LUT": 416, "FF": 0, "BRAM_18K": 0},
            VITIS_TOP.format(5, 104): {"DSP": 6, "LUT": 1086, "FF": 598, "BRAM_18K": 0},
        },
    }


def test_vivado_report_is_read_exactly_and_dsp48e_is_called_dsp():
    report = parse_report(SYNTH / "vivado")
    assert report == {
        "tool": "vivado_hls", "version": "2020.1", "part": "xcvu13p-flga2577-2-e",
        "clock_target_ns": 5.0, "clock_estimated_ns": 4.371,
        "latency_min_cycles": 5, "latency_max_cycles": 5, "interval_min": 1, "interval_max": 1,
        "totals": {"DSP": 40, "LUT": 6120, "FF": 2391, "BRAM_18K": 0, "URAM": 0},
        "available": XCVU13P,
        "layers": {
            VIVADO_TOP.format(2, 58): {"DSP": 32, "LUT": 4302, "FF": 1688, "BRAM_18K": 0},
            "call_ret_relu_ap_fixed_ap_fixed_relu_config4_s_fu_66": {"DSP": 0, "LUT": 448, "FF": 0, "BRAM_18K": 0},
            VIVADO_TOP.format(5, 100): {"DSP": 8, "LUT": 1210, "FF": 650, "BRAM_18K": 0},
        },
    }
    # The layers are the whole "Instance" row of the utilization summary.
    assert sum(layer["DSP"] for layer in report["layers"].values()) == report["totals"]["DSP"]


def test_aggregate_csynth_xml_without_text_report_has_no_layers(tmp_path):
    rdir = report_dir(tmp_path)
    rdir.mkdir(parents=True)
    shutil.copy(report_dir(SYNTH / "vitis") / "hepprune_csynth.xml", rdir / "csynth.xml")
    report = parse_report(tmp_path)
    assert report["tool"] == "vitis_hls"  # told by its <DSP> tag, without the .rpt banner
    assert report["totals"]["DSP"] == 38 and report["layers"] == {}


def test_missing_report_names_the_path_looked_for(tmp_path):
    with pytest.raises(RunError) as err:
        parse_report(tmp_path)
    expected = tmp_path / "hepprune_prj" / "solution1" / "syn" / "report" / "hepprune_csynth.xml"
    assert str(expected) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "drop_area", "bad_number"])
def test_malformed_report_names_the_file(tmp_path, damage):
    rdir = report_dir(tmp_path)
    rdir.mkdir(parents=True)
    text = (report_dir(SYNTH / "vivado") / "hepprune_csynth.xml").read_text()
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "drop_area":
        text = text[: text.index("<AreaEstimates>")] + text[text.index("</AreaEstimates>") + 16:]
    else:
        text = text.replace("<Worst-caseLatency>5<", "<Worst-caseLatency>five<")
    (rdir / "hepprune_csynth.xml").write_text(text)
    with pytest.raises(RunError, match="malformed C-synthesis report") as err:
        parse_report(tmp_path)
    assert str(rdir / "hepprune_csynth.xml") in str(err.value)


def _fake_tools(directory: Path, *names: str) -> str:
    directory.mkdir(exist_ok=True)
    for name in names:
        exe = directory / name
        exe.write_text("#!/bin/sh\nexit 1\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(directory)


def test_find_hls_tool_prefers_vitis_hls(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "none"))
    assert find_hls_tool() is None
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "old", "vivado_hls"))
    assert find_hls_tool() == "vivado_hls"
    monkeypatch.setenv("PATH", os.pathsep.join([_fake_tools(tmp_path / "old", "vivado_hls"),
                                                _fake_tools(tmp_path / "new", "vitis_hls", "vitis-run")]))
    assert find_hls_tool() == "vitis_hls"
    # hls4ml 1.3 drives Vitis through vitis-run: vitis_hls alone is not usable.
    monkeypatch.setenv("PATH", os.pathsep.join([_fake_tools(tmp_path / "old", "vivado_hls"),
                                                _fake_tools(tmp_path / "older", "vitis_hls")]))
    assert find_hls_tool() == "vivado_hls"
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "older", "vitis_hls"))
    assert find_hls_tool() is None
    with pytest.raises(RunError, match="found vitis_hls but not vitis-run"):
        require_hls_tool()


def _stub_graph(name="Vitis", on_build=None):
    """A stand-in ModelGraph: the backend's build signature decides the kwargs."""
    calls = []

    def backend_build(model, reset=False, csim=True, synth=True, cosim=False, validation=False, export=False,
                      vsynth=False, fifo_opt=False, log_to_stdout=True):  # hls4ml 1.3 VitisBackend.build
        raise AssertionError("not called directly")

    def build(**kwargs):
        calls.append(kwargs)
        print("hls4ml chatter that must not reach stdout")
        if on_build:
            on_build()

    return SimpleNamespace(config=SimpleNamespace(backend=SimpleNamespace(name=name, build=backend_build)),
                           build=build), calls


def test_run_synthesis_without_a_tool_says_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "empty"))
    graph, calls = _stub_graph()
    with pytest.raises(RunError, match="vitis_hls") as err:
        run_synthesis(graph, tmp_path)
    assert "\n" not in str(err.value) and calls == []


def test_run_synthesis_with_vitis_backend_needs_vitis_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "bin", "vitis_hls"))
    graph, calls = _stub_graph()
    with pytest.raises(RunError, match="vitis-run"):
        run_synthesis(graph, tmp_path)
    assert calls == []


def test_run_synthesis_builds_only_c_synthesis_and_reads_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "bin", "vitis_hls", "vitis-run"))
    project = tmp_path / "hls4ml" / "baseline"
    graph, calls = _stub_graph(on_build=lambda: shutil.copytree(SYNTH / "vitis", project))
    report = run_synthesis(graph, project)
    assert calls == [dict(csim=False, synth=True, export=False, vsynth=False, log_to_stdout=False)]
    assert report == parse_report(SYNTH / "vitis")
    assert "chatter" not in capsys.readouterr().out


def test_run_synthesis_turns_a_failed_build_into_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_tools(tmp_path / "bin", "vitis_hls", "vitis-run"))

    def fail():
        raise Exception("Build failed for hepprune. See logs for details.")

    graph, _ = _stub_graph(on_build=fail)
    with pytest.raises(RunError, match="C synthesis failed") as err:
        run_synthesis(graph, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_run_synthesis_drives_hls4ml_vitis_build_of_a_real_project(tmp_path, monkeypatch):
    """A converted hls4ml project, built by hls4ml 1.3's own VitisBackend.build,
    which runs `vitis-run --tcl build_prj.tcl --mode hls` in the project: a
    stand-in vitis-run first on PATH writes the report Vitis HLS would, with
    the project's part and clock, and run_synthesis returns its figures."""
    import json

    from conftest import install_stand_in_vitis

    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.ptq.hls_bridge import convert

    log = install_stand_in_vitis(tmp_path / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "bin"), os.environ["PATH"]]))
    model = keras.Sequential([keras.Input((4,), name="inputs"), keras.layers.Dense(4, activation="relu", name="fc1"),
                              keras.layers.Dense(1, name="output")])
    project = tmp_path / "hls4ml" / "tiny"
    graph = convert(model, project, HlsConfig(part="xcvu9p-flga2104-2L-e", clock_period=4.0))
    graph.write()
    report = run_synthesis(graph, project)

    (call,) = [json.loads(line) for line in log.read_text().splitlines()]  # vitis-run once, vitis_hls never
    assert call["tool"] == "vitis-run" and call["argv"] == ["--tcl", "build_prj.tcl", "--mode", "hls"]
    assert Path(call["cwd"]).resolve() == project.resolve()
    assert {k: call["opt"][k] for k in ("csim", "synth", "cosim", "export", "vsynth")} == \
        {"csim": "0", "synth": "1", "cosim": "0", "export": "0", "vsynth": "0"}  # C synthesis only
    assert "stand-in vitis-run" in (project / "build_stdout.log").read_text()  # the tool's output, not stdout
    # The figures of the report the build wrote: totals, latency and the per-layer rows.
    assert report == {**parse_report(SYNTH / "vitis"), "part": "xcvu9p-flga2104-2L-e", "clock_target_ns": 4.0}
    assert report["totals"] == {"DSP": 38, "LUT": 5873, "FF": 2145, "BRAM_18K": 0, "URAM": 0}
    assert (report["latency_min_cycles"], report["latency_max_cycles"]) == (4, 4)
    assert len(report["layers"]) == 3 and report["layers"][VITIS_TOP.format(2, 62)]["DSP"] == 32


@pytest.mark.slow
@pytest.mark.skipif(find_hls_tool() is None, reason="needs vitis_hls or vivado_hls on PATH")
def test_real_synthesis_of_a_tiny_dense_model(tmp_path):
    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.ptq.hls_bridge import convert

    model = keras.Sequential([keras.layers.Input(shape=(4,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])
    model.set_weights([np.full(w.shape, 0.25, np.float32) for w in model.get_weights()])
    project = tmp_path / "hls4ml" / "tiny"
    graph = convert(model, project, HlsConfig())
    graph.write()
    report = run_synthesis(graph, project)
    assert report["totals"]["DSP"] >= 0
    assert report["latency_max_cycles"] is None or report["latency_max_cycles"] >= 0
    assert report["part"] == HlsConfig().part
