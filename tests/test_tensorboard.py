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
        # The HParams dashboard: each pruned run's settings and final metrics, for comparing a sweep.
        experiment = _get(port, "/data/plugin/hparams/experiment", request=json.dumps({"experimentName": ""}))
        assert {"target", "bits", "granularity", "schedule", "learning_rate"} <= \
            {h["name"] for h in experiment["hparamInfos"]}
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"final/response_median", "final/resolution_q68", "final/response_shift", "final/resolution_shift",
                "final/sparsity", "final/multipliers"} <= metric_tags, metric_tags
        groups = _get(port, "/data/plugin/hparams/session_groups", request=json.dumps({
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "startIndex": 0,
            "sliceSize": 10, "colParams": [{"hparam": "target"}, {"metric": {"tag": "final/sparsity"}},
                                             {"metric": {"tag": "final/resolution_q68"}}]}))
        [group] = groups["sessionGroups"]
        assert group["hparams"]["target"] == 0.5 and group["hparams"]["schedule"] == "polynomial"
        values = {v["name"]["tag"]: v["value"] for v in group["metricValues"]}
        metrics = json.loads((pruned_run / "run/prune_0.50/metrics.json").read_text())
        assert values["final/sparsity"] == pytest.approx(metrics["achieved_sparsity"])
        assert values["final/resolution_q68"] == pytest.approx(metrics["test"]["resolution_q68"])
    finally:
        server.terminate()
        server.wait(timeout=30)
