"""Benchmark: hls4ml C simulation split across processes vs one process.

    python bench/bench_csim.py [--samples 200000] [--model runs/demo/prune_0.75/model.h5]

hls4ml's ``predict`` is a single-threaded loop over samples; hepprune splits
the samples across forked processes (ptq/hls_bridge.csim_predict). Both
runs use the same compiled project and inputs, in one run; the outputs must
be identical. Target (issue 4): >= 1.8x the throughput of one process on 2 cores.
"""

if __package__ in (None, ""):  # run as `python bench/bench_csim.py`: import from the checkout
    import pathlib
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--model", default=str(ROOT / "runs/demo/prune_0.75/model.h5"),
                   help="a tf_keras model (make demo writes the default)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from hepprune.core.backend import keras
    from hepprune.core.config import HlsConfig
    from hepprune.ptq.csim_build import compile_graph
    from hepprune.ptq.hls_bridge import convert, csim_predict

    model = keras.models.load_model(args.model, compile=False)
    x = np.random.default_rng(0).normal(size=(args.samples, *model.input_shape[1:])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        graph = convert(model, Path(tmp) / "prj", HlsConfig())
        compile_graph(graph)
        csim_predict(graph, x[:100], processes=1)  # warm up
        times = {1: [], os.cpu_count(): []}
        outputs = {}
        for _ in range(args.repeats):  # interleaved: drift hits both alike
            for procs in times:
                t0 = time.perf_counter()
                outputs[procs] = csim_predict(graph, x, processes=procs)
                times[procs].append(time.perf_counter() - t0)
    one, many = (float(np.median(times[k])) for k in times)
    assert np.array_equal(outputs[1], outputs[os.cpu_count()]), "parallel C simulation changed the outputs"
    print(json.dumps({"samples": args.samples, "model": args.model, "processes": os.cpu_count(),
                      "one_process_samples_per_s": round(args.samples / one),
                      "parallel_samples_per_s": round(args.samples / many),
                      "speedup": round(one / many, 3)}, indent=2))


if __name__ == "__main__":
    main()
