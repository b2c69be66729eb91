"""The interface every task implements (see the package docstring)."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hepprune.core import artifacts
from hepprune.core.config import Config, TrainConfig
from hepprune.core.results import AnalysisResult, Evaluation, ModelRow, to_json

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """The held-out events of a model comparison and what the task derives
    from them once (bins, the reference's metrics), then one row per model."""

    samples: int
    true: np.ndarray
    reference: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # written to summary.json as they are
    rows: list[ModelRow] = field(default_factory=list)  # per model
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # per model: per-event values for plots


class Task:
    """One task; the methods below are what the stages ask of it."""

    name = ""
    CSV_FIELDS: tuple[str, ...] = ()

    def __init__(self, cfg: Config):
        self.cfg = cfg

    # ------------------------------------------------------------ the data
    def check_dataset(self, class_names: tuple[str, ...], path: str) -> None:
        """Refuse a dataset (its class names, its first file) the task cannot use, before anything is read."""

    def bad_targets(self, true: np.ndarray, n_classes: int) -> tuple[np.ndarray, str] | None:
        """(mask of unusable target values, why) or None."""
        raise NotImplementedError

    def encode(self, true: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The training target from the true value."""
        raise NotImplementedError

    def decode(self, output: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The network output in the units metrics are computed in."""
        raise NotImplementedError

    # ------------------------------------------------------------ the model
    def outputs(self, n_classes: int) -> int:
        raise NotImplementedError

    def output_activation(self) -> str | None:
        """The activation layer the built-in network ends with (None: linear)."""
        return None

    def loss(self, train: TrainConfig) -> Any:
        raise NotImplementedError

    def check_outputs(self, units: int, n_classes: int, where: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ the metrics
    def metrics(self, pred: np.ndarray, true: np.ndarray, class_names: tuple[str, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def reference_metrics(self, ref: np.ndarray, true: np.ndarray) -> dict[str, Any] | None:
        """The raw reference estimator's metrics, beside the network's (None: there is none)."""
        return None

    def headline(self, test: dict[str, Any]) -> str:
        """One log line's worth of a model's test metrics."""
        raise NotImplementedError

    def evaluation(self, test: dict[str, Any], reference: dict[str, Any] | None) -> Evaluation:
        """The task's part of a model stage's metrics.json."""
        return Evaluation(self.name, test)

    def refuse_pred_true(self, command: str) -> None:
        """Commands that measure pred/true response call this first."""

    # ------------------------------------------------------------ the analysis
    def begin_analysis(self, true: np.ndarray, reference: np.ndarray, dataset: dict[str, Any]) -> Analysis:
        """The comparison's held-out events; ``dataset`` names the target and the classes."""
        raise NotImplementedError

    def model_metrics(self, analysis: Analysis, name: str, outputs: np.ndarray) -> dict[str, Any]:
        """A model's row entries from its network outputs on the analysis events."""
        raise NotImplementedError

    def firmware_agreement(self, analysis: Analysis, name: str, y_hls: np.ndarray,
                           y_keras: np.ndarray) -> dict[str, Any]:
        """How the C-simulated firmware compares with the Keras model: its own
        metrics and a flag (``hls_*_ok``) when it strays further than
        ``ptq.tolerance``, with a warning naming the fix."""
        raise NotImplementedError

    def compare(self, analysis: Analysis, baseline: str) -> None:
        """Shifts of every row relative to the baseline's."""

    def summary(self, analysis: Analysis) -> dict[str, Any]:
        """summary.json: what the comparison found."""
        return {"task": self.name, "samples": analysis.samples, **analysis.info,
                "models": [to_json(row) for row in analysis.rows]}

    def markdown(self, summary: dict[str, Any]) -> str:
        raise NotImplementedError

    def plots(self, analysis: Analysis, summary: dict[str, Any], out: Path) -> list[str]:
        """Draw the plots into ``out``; their file names."""
        raise NotImplementedError

    def table(self, summary: dict[str, Any]) -> str:
        """The terminal table the analysis prints."""
        raise NotImplementedError

    def csv_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return row

    def verdicts(self, summary: dict[str, Any]) -> list[str]:
        """Per model, whether it stays within the physics tolerances of the baseline (none: not judged)."""
        return []

    def write_analysis(self, analysis: Analysis, out: Path) -> AnalysisResult:
        """summary.json, summary.csv, report.md and plots/; returns the
        stage's metrics (written last, by the stage lifecycle)."""
        summary = self.summary(analysis)
        (out / "plots").mkdir(parents=True, exist_ok=True)
        self.plots(analysis, summary, out / "plots")
        artifacts.write_json(out / "summary.json", summary)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.csv_row(m) for m in summary["models"])
        artifacts.write_text(out / "summary.csv", buf.getvalue())
        artifacts.write_text(out / "report.md", self.markdown(summary))
        return AnalysisResult(self.name, summary["samples"], [m["name"] for m in summary["models"]])


def name_width(models: list[dict[str, Any]]) -> int:
    """The model column of a text table: 12, wider for long names (prune_0.50_q6)."""
    return max(12, 2 + max((len(m["name"]) for m in models), default=0))


def text_table(columns: list[tuple[str, int]], rows: list[list[str]]) -> str:
    """A terminal table: the first column left-aligned, the others right-aligned
    to their widths; a row may have fewer cells than there are columns."""
    def line(cells: list[str]) -> str:
        return "".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, (_, w)) in enumerate(zip(cells, columns)))

    return "\n".join(["\n" + line([title for title, _ in columns]), *(line(r) for r in rows)])


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """A matplotlib figure written atomically as PNG, then closed."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 - deferred: matplotlib loads only where a plot is drawn

    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display on cluster nodes)."""
    import matplotlib  # noqa: PLC0415 - deferred: matplotlib loads only where a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - deferred: matplotlib, after its backend is chosen

    return plt


def tolerance_warning(name: str, what: str, cfg: Config, advice: str) -> None:
    log.warning("%s: the firmware's %s (more than ptq.tolerance=%g); %s", name, what, cfg.ptq.tolerance, advice)
