"""C synthesis of an exported hls4ml project and the reading of its report.

Why: the C simulation says whether the firmware computes the right numbers,
but only the HLS tool says what it costs (DSP, LUT, FF, BRAM) and how fast it
is. Where ``vitis_hls`` or ``vivado_hls`` is installed, ``--synth`` runs
hls4ml's build and this module turns the vendor report into a small dict of
our own, so the firmware-cost table does not depend on the report's layout.

Where the numbers come from (both tools, hls4ml's ``build_prj.tcl`` names the
solution ``solution1``)::

    <project_dir>/<project>_prj/solution1/syn/report/<project>_csynth.xml
    <project_dir>/<project>_prj/solution1/syn/report/<project>_csynth.rpt

The XML gives the totals, the device and the timing (the same elements hls4ml's
own ``parse_vivado_report`` reads); neither tool writes a per-instance
breakdown into ``<project>_csynth.xml``, so the per-layer numbers are read from
the text report's "Utilization Estimates / Detail / Instance" table. hls4ml's
parser is not reused: it needs ``project.tcl`` and ``vivado_hls.app``/``hls.app``
beside the report, prints instead of raising, and returns strings.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from hepprune.core.errors import RunError

log = logging.getLogger(__name__)

PROJECT = "hepprune"  # hls4ml project name, also the top function (see ptq/hls_bridge.py)
SOLUTION = "solution1"  # hls4ml's build_prj.tcl opens this solution for both tools
TOOLS = ("vitis_hls", "vivado_hls")  # preference order
RESOURCES = ("DSP", "LUT", "FF", "BRAM_18K", "URAM")
LAYER_RESOURCES = ("DSP", "LUT", "FF", "BRAM_18K")


def find_hls_tool() -> str | None:
    """The HLS compiler hls4ml can drive from PATH, ``vitis_hls`` preferred, or
    None: decides whether ``--synth`` can run at all on this machine. hls4ml
    1.3's Vitis backend builds through ``vitis-run`` (Vitis 2023.2 and later),
    so ``vitis_hls`` alone does not count."""
    if shutil.which("vitis_hls") and shutil.which("vitis-run"):
        return "vitis_hls"
    return "vivado_hls" if shutil.which("vivado_hls") else None


def require_hls_tool() -> str:
    """:func:`find_hls_tool`, or the one-line error ``--synth`` gives without one."""
    tool = find_hls_tool()
    if tool is None and shutil.which("vitis_hls"):
        raise RunError("--synth found vitis_hls but not vitis-run, which hls4ml 1.3 builds Vitis projects with "
                       "(Vitis 2023.2 and later); put it on PATH, or vivado_hls, or run without --synth")
    if tool is None:
        raise RunError("--synth needs vitis_hls or vivado_hls on PATH; source the Xilinx/AMD settings64.sh "
                       "or run without --synth")
    return tool


def backend_for(tool: str) -> str:
    """The hls4ml backend whose build drives ``tool``."""
    return {"vitis_hls": "Vitis", "vivado_hls": "Vivado"}[tool]


def report_dir(project_dir: Path, project: str = PROJECT) -> Path:
    """Where both tools write the C-synthesis reports of an hls4ml project."""
    return Path(project_dir) / f"{project}_prj" / SOLUTION / "syn" / "report"


def _find_xml(project_dir: Path, project: str) -> Path:
    """``<top>_csynth.xml``, else Vitis's aggregate ``csynth.xml``."""
    rdir = report_dir(project_dir, project)
    primary = rdir / f"{project}_csynth.xml"
    for candidate in (primary, rdir / "csynth.xml"):
        if candidate.is_file():
            return candidate
    raise RunError(f"no C-synthesis report at {primary}; run the export with --synth "
                   "where vitis_hls or vivado_hls is on PATH")


def _text(root: ET.Element, path: str, xml_path: Path) -> str:
    node = root.find(path)
    if node is None or node.text is None or not node.text.strip():
        raise RunError(f"malformed C-synthesis report {xml_path}: no <{path}>")
    return node.text.strip()


def _number(root: ET.Element, path: str, xml_path: Path, kind=int):
    """An int or float element; Vitis writes ``undef`` for an unknown latency,
    which becomes None rather than a made-up number."""
    text = _text(root, path, xml_path)
    if text == "undef":
        return None
    try:
        return kind(text)
    except ValueError:
        raise RunError(f"malformed C-synthesis report {xml_path}: <{path}> is {text!r}") from None


def _resources(node: ET.Element | None, where: str, xml_path: Path) -> dict:
    """BRAM_18K/DSP/FF/LUT/URAM of a <Resources> block. Vivado HLS calls the
    DSPs DSP48E, Vitis HLS DSP; older devices have no URAM entry (0)."""
    if node is None:
        raise RunError(f"malformed C-synthesis report {xml_path}: no <AreaEstimates/{where}>")
    values = {("DSP" if child.tag.startswith("DSP") else child.tag): (child.text or "").strip() for child in node}
    out = {}
    for key in RESOURCES:
        text = values.get(key, "0" if key == "URAM" else None)
        if text is None or not text.isdigit():
            raise RunError(f"malformed C-synthesis report {xml_path}: {where}/{key} is {text!r}")
        out[key] = int(text)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_instance_table(rpt_path: Path) -> dict:
    """Per-instance resources from a ``*_csynth.rpt``: the "Instance" table
    under "Utilization Estimates / + Detail:" (the latency section has a table
    of the same name, which is skipped). Empty if the design has no instances
    (``N/A``) or the report has no such table."""
    lines = rpt_path.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "== Utilization Estimates"), None)
    if start is None:
        log.info("%s has no utilization section; no per-layer breakdown", rpt_path)
        return {}
    detail = next((i for i in range(start, len(lines)) if lines[i].strip().startswith("+ Detail:")), None)
    if detail is None:
        return {}
    head = next((i for i in range(detail, len(lines)) if lines[i].strip().startswith("* Instance:")), None)
    if head is None:
        return {}
    body = [line for line in lines[head + 1:] if line.strip()]
    if not body or body[0].strip() == "N/A":
        return {}
    header = next((_cells(line) for line in body[:3] if "Instance" in line and "Module" in line), None)
    if header is None:
        raise RunError(f"malformed C-synthesis report {rpt_path}: the Instance table has no header")
    columns = {("DSP" if name.startswith("DSP") else name): i for i, name in enumerate(header)}
    missing = [k for k in ("Instance", *LAYER_RESOURCES) if k not in columns]
    if missing:
        raise RunError(f"malformed C-synthesis report {rpt_path}: the Instance table lacks {', '.join(missing)}")
    layers = {}
    separators = 0
    for line in body:
        text = line.strip()
        if text.startswith("+"):
            separators += 1
            if separators == 3:  # top rule, rule under the header, rule above Total
                break
            continue
        if not text.startswith("|"):
            break
        cells = _cells(text)
        if separators < 2 or cells[0] == "Instance" or len(cells) != len(header):
            continue
        try:
            layers[cells[columns["Instance"]]] = {k: 0 if cells[columns[k]] in ("", "-") else int(cells[columns[k]])
                                                  for k in LAYER_RESOURCES}
        except ValueError:
            raise RunError(f"malformed C-synthesis report {rpt_path}: bad Instance row {text!r}") from None
    return layers


def _tool(root: ET.Element, rpt_path: Path | None) -> str:
    """Which tool wrote the report: the text report's banner names it; without
    one, Vivado HLS's DSP48E tag tells them apart."""
    if rpt_path is not None:
        banner = re.search(r"== (Vitis|Vivado) HLS Report for", rpt_path.read_text(errors="replace"))
        if banner:
            return f"{banner.group(1).lower()}_hls"
    return "vivado_hls" if root.find("AreaEstimates/Resources/DSP48E") is not None else "vitis_hls"


def parse_report(project_dir: Path, project: str = PROJECT) -> dict:
    """The C-synthesis result of an hls4ml project directory, as
    ``{tool, version, part, clock_target_ns, clock_estimated_ns,
    latency_min_cycles, latency_max_cycles, interval_min, interval_max,
    totals, available, layers}``; totals/available hold DSP, LUT, FF, BRAM_18K
    and URAM; layers maps each instance of the top function to its DSP, LUT, FF
    and BRAM_18K. A missing or malformed report is a RunError naming the file."""
    xml_path = _find_xml(Path(project_dir), project)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise RunError(f"malformed C-synthesis report {xml_path}: {exc}") from None
    rpt_path = xml_path.with_suffix(".rpt") if xml_path.name != "csynth.xml" else None
    rpt_path = rpt_path if rpt_path is not None and rpt_path.is_file() else None
    if rpt_path is None:
        log.info("no %s_csynth.rpt beside %s; no per-layer breakdown", project, xml_path)
    perf = "PerformanceEstimates/SummaryOfOverallLatency/"
    report = {
        "tool": _tool(root, rpt_path),
        "version": _text(root, "ReportVersion/Version", xml_path),
        "part": _text(root, "UserAssignments/Part", xml_path),
        "clock_target_ns": _number(root, "UserAssignments/TargetClockPeriod", xml_path, float),
        "clock_estimated_ns": _number(root, "PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod",
                                      xml_path, float),
        "latency_min_cycles": _number(root, perf + "Best-caseLatency", xml_path),
        "latency_max_cycles": _number(root, perf + "Worst-caseLatency", xml_path),
        "interval_min": _number(root, perf + "Interval-min", xml_path),
        "interval_max": _number(root, perf + "Interval-max", xml_path),
        "totals": _resources(root.find("AreaEstimates/Resources"), "Resources", xml_path),
        "available": _resources(root.find("AreaEstimates/AvailableResources"), "AvailableResources", xml_path),
        "layers": parse_instance_table(rpt_path) if rpt_path is not None else {},
    }
    log.info("%s %s on %s: %d DSP, %d LUT, %d FF, %d BRAM_18K, latency %s-%s cycles", report["tool"],
             report["version"], report["part"], report["totals"]["DSP"], report["totals"]["LUT"],
             report["totals"]["FF"], report["totals"]["BRAM_18K"], report["latency_min_cycles"],
             report["latency_max_cycles"])
    return report


def run_synthesis(graph, project_dir: Path) -> dict:
    """C-synthesise an hls4ml ModelGraph written to ``project_dir`` (no C
    simulation, no IP export, no Vivado logic synthesis) and return
    :func:`parse_report`. hls4ml's own summary is printed, not returned as
    numbers, so its stdout goes to the debug log."""
    tool = require_hls_tool()
    backend = graph.config.backend
    if backend.name == "Vitis" and shutil.which("vitis-run") is None:
        raise RunError(f"hls4ml's Vitis backend builds with vitis-run, which is not on PATH (found {tool}); "
                       "install a Vitis release that ships vitis-run or run without --synth")
    kwargs = dict(csim=False, synth=True, export=False, vsynth=False)
    if "log_to_stdout" in inspect.signature(backend.build).parameters:
        kwargs["log_to_stdout"] = False  # Vitis: tool output to build_stdout.log / build_stderr.log
    log.info("C synthesis of %s with %s (%s backend); this takes minutes", project_dir, tool, backend.name)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            graph.build(**kwargs)
    except Exception as exc:  # hls4ml raises bare Exceptions when the tool fails
        raise RunError(f"C synthesis failed in {project_dir}: {exc} (see build_stdout.log there)") from None
    finally:
        if captured.getvalue():
            log.debug("hls4ml build output:\n%s", captured.getvalue())
    return parse_report(Path(project_dir))
