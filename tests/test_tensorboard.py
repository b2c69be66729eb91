"""A real TensorBoard server on loopback over a real run directory serves the pruning sparsity."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, **query):
    url = f"http://127.0.0.1:{port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_tensorboard_serves_per_layer_sparsity_of_a_run(pruned_run):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(pruned_run / "run"),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        tags = {}
        while time.time() < deadline:  # the server starts, then loads event files in the background
            try:
                tags = _get(port, "/data/plugin/scalars/tags")
            except OSError:
                tags = {}
            if "prune_0.50/tensorboard/sparsity" in tags:
                break
            assert server.poll() is None, server.stderr.read()
            time.sleep(1)
        run = "prune_0.50/tensorboard/sparsity"
        assert run in tags, sorted(tags)
        assert {"sparsity/fc1", "sparsity/fc2", "sparsity/model", "threshold/fc1"} <= set(tags[run])
        assert "epoch_loss" in tags["baseline/tensorboard/train"]
        for layer in ("fc1", "fc2"):
            points = _get(port, "/data/plugin/scalars/scalars", run=run, tag=f"sparsity/{layer}")
            values = [v for _, _, v in points]
            assert values[0] == 0.0  # warm-up: nothing removed
            assert abs(values[-1] - 0.5) <= 0.01  # the final state is logged too
    finally:
        server.terminate()
        server.wait(timeout=30)
