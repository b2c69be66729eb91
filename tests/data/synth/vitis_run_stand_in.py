"""Stand-in for AMD's ``vitis-run``, as hls4ml 1.3's Vitis backend calls it:
``vitis-run --tcl build_prj.tcl --mode hls`` in the project directory.

It logs the call (JSON lines to $STAND_IN_LOG), refuses any other call or a
directory without the project hls4ml writes, and for ``synth 1`` in
build_opt.tcl writes the C-synthesis report Vitis HLS would, where it would
(``<project>_prj/solution1/syn/report/``): the canned Vitis HLS 2023.2 report
beside this file, with the project's part and clock period from project.tcl.
Like Vitis HLS it also leaves ``<project>_prj/hls.app`` naming the solution,
which hls4ml's own report parser (run at the end of its build) looks for.
tests/conftest.py:install_stand_in_vitis puts it on PATH.
"""

import json
import os
import re
import sys
from pathlib import Path

REPORTS = Path(__file__).resolve().parent / "vitis/hepprune_prj/solution1/syn/report"

here = Path.cwd()
opts = dict(re.findall(r"^\s*(\w+)\s+(\d+)\s*$", (here / "build_opt.tcl").read_text(), re.M))
project = dict(re.findall(r'^set (\w+) "?([^"\n]*?)"?$', (here / "project.tcl").read_text(), re.M))
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({"tool": "vitis-run", "argv": sys.argv[1:], "cwd": str(here), "opt": opts,
                          "project": project}) + "\n")
if sys.argv[1:] != ["--tcl", "build_prj.tcl", "--mode", "hls"] or not (here / "build_prj.tcl").is_file():
    sys.exit("vitis-run stand-in: not called as hls4ml 1.3 calls it")
name = project["project_name"]
print(f"INFO: [HLS 200-10] stand-in vitis-run: build_prj.tcl of {name}, options {opts}")
if opts.get("synth") == "1":
    out = here / f"{name}_prj" / "solution1" / "syn" / "report"
    out.mkdir(parents=True, exist_ok=True)
    (here / f"{name}_prj" / "hls.app").write_text(
        f'<project xmlns="com.autoesl.autopilot.project" name="{name}_prj" top="{name}">\n'
        '  <solutions xmlns="">\n    <solution name="solution1" status="active"/>\n  </solutions>\n</project>\n')
    xml = (REPORTS / "hepprune_csynth.xml").read_text()
    xml = xml.replace("<Part>xcvu13p-flga2577-2-e</Part>", f"<Part>{project['part']}</Part>")
    xml = xml.replace("<TargetClockPeriod>5.00</TargetClockPeriod>",
                      f"<TargetClockPeriod>{float(project['clock_period']):.2f}</TargetClockPeriod>")
    (out / f"{name}_csynth.xml").write_text(xml)
    (out / f"{name}_csynth.rpt").write_text((REPORTS / "hepprune_csynth.rpt").read_text())
