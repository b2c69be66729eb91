"""One C-simulation worker: hls4ml's per-sample loop over a compiled firmware library.

Why a module of its own: C-simulation workers are *spawned* processes
(see :func:`hepprune.ptq.hls_bridge.csim_predict`), and a spawned worker
imports the module of the function it runs. Here that costs numpy alone,
not TensorFlow's ~5 s start-up, which every worker of every simulation (each
width of the bit-width scan, each chunk of the analysis) used to pay.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np


def simulate(lib: str, function: str, firmware_dir: str, x: np.ndarray, n_out: int) -> np.ndarray:
    """Outputs of the firmware library ``lib`` for the flat inputs ``x``,
    calling ``function`` once per sample as hls4ml's ModelGraph._predict does."""
    os.chdir(firmware_dir)  # as hls4ml does: weights may be read from firmware/weights
    top = getattr(ctypes.cdll.LoadLibrary(lib), function)
    row = np.ctypeslib.ndpointer(ctypes.c_float, flags="C_CONTIGUOUS")
    top.restype, top.argtypes = None, [row, row]
    out = np.zeros((len(x), n_out), np.float32)
    for i in range(len(x)):
        top(x[i], out[i])
    return out
