"""What stages find, as typed records with one way to JSON.

Every stage directory ends with ``metrics.json``, and the analysis writes
one row per model to ``summary.json``. They are built here as dataclasses,
so a result has named, typed fields instead of a dict that grows keys on
its way, and :func:`to_json` is the one writer: nested records are
flattened into the same keys the files have always had, and unset optional
fields are left out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FLATTEN = "flatten"  # field metadata: the record's keys go to the top level


def flat(**kwargs: Any) -> Any:
    """A field whose own fields appear at the top level of the JSON."""
    return field(metadata={FLATTEN: True}, **kwargs)


def to_json(record: Any) -> dict[str, Any]:
    """The JSON object of a result record: flattened, without the optional
    fields (default None) that are unset; a required field keeps its null."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None and f.default is None:
            continue
        if f.metadata.get(FLATTEN):
            out.update(to_json(value) if dataclasses.is_dataclass(value) else value)
        else:
            out[f.name] = to_json(value) if dataclasses.is_dataclass(value) else value
    return out


@dataclass(frozen=True)
class Size:
    """A saved model's parameter counts and file sizes; gzip bytes is what pruning studies compare."""

    params: int
    nonzero_params: int
    h5_bytes: int
    gzip_bytes: int


@dataclass(frozen=True)
class Evaluation:
    """A model's metrics on the held-out test split, as its task reports them."""

    task: str
    test: dict[str, Any]
    reference: dict[str, Any] | None = None  # the raw reference estimator (regression)
    target_transform: str | None = None
    loss: str | None = None


@dataclass(kw_only=True)
class ModelResult:
    """What every stage that produces a model records in its metrics.json."""

    stage: str
    val_loss: float
    epochs_run: int
    evaluation: Evaluation = flat()
    size: Size = flat()
    train_seconds_this_process: float | None = None


@dataclass(kw_only=True)
class BaselineResult(ModelResult):
    """RUN/baseline/metrics.json: a trained, or adopted (``from_file``), baseline."""

    stage: str = "baseline"
    events: dict[str, int] = field(default_factory=dict)
    best_epoch: int | None = None
    stopped_early: bool | None = None
    from_file: str | None = None


@dataclass(kw_only=True)
class PruneResult(ModelResult):
    """RUN/prune_<target>/metrics.json."""

    target_sparsity: float
    achieved_sparsity: float
    layers: dict[str, dict[str, float]]
    granularity: str
    schedule: dict[str, Any]
    units: dict[str, int] = field(default_factory=dict)
    bits: int | None = None  # the QAT bit setting; None: float
    quantisers: dict[str, Any] | None = None  # QAT: layer -> [bits, integer] of each quantiser


@dataclass
class ModelRow:
    """One model of the analysis, a row of summary.json and summary.csv."""

    name: str
    sparsity: float
    size: Size = flat()
    bits: int | None = None  # QAT bit setting; None: float
    quantisers: dict[str, Any] | None = None  # QAT: layer -> [bits, integer] of each quantiser
    tflite_bytes: int = 0
    tflite_quant_bytes: int = 0
    multipliers: int = 0
    dsp: int = 0
    bram_18k: int = 0
    firmware: dict[str, Any] = field(default_factory=dict)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = flat(default_factory=dict)  # the task's
    hls: dict[str, Any] | None = flat(default=None)  # the hls4ml export, C simulation and agreement
    synthesis: dict[str, Any] | None = None
    silicon: dict[str, Any] | None = None  # the RTL stage's synthesised figures (rtl/synthesize_rtl.py)


@dataclass
class AnalysisResult:
    """RUN/analysis/metrics.json."""

    task: str
    samples: int
    models: list[str]
    stage: str = "analysis"


@dataclass
class SensitivityResult:
    """RUN/sensitivity/metrics.json."""

    points: int
    baseline_val_loss: float
    granularities: list[str]
    stage: str = "sensitivity"


@dataclass
class ScanResult:
    """RUN/ptq/<model>/metrics.json: the bit-width scan of one model."""

    model: str
    chosen_width: int | None
    precision: str | None
    tolerance: float
    float: dict[str, Any]
    samples: int
    stage: str = "ptq"


@dataclass
class RtlResult:
    """RUN/rtl/<model>/metrics.json: one model as distributed-arithmetic Verilog,
    simulated by Verilator and synthesised by Yosys."""

    model: str
    precision: str  # float models: ap_fixed<W,I> per layer at this W; QAT: "trained"
    samples: int  # held-out events simulated
    events_differing: dict[str, int]  # Verilator (and QKeras) against the DA C simulation
    clock_mhz: float
    latency_cycles: int  # of the pipelined Verilog
    synthesis: dict[str, Any]  # Yosys: tool, family, LUT, FF, CARRY, DSP, BRAM, layers
    lut_estimate: dict[str, Any]  # ptq/firmware.py's distributed-arithmetic LUT estimate: total, layers
    da4ml_cost: float  # da4ml's own LUT estimate of the combinational logic
    tools: dict[str, str]  # versions of da4ml, Verilator, Yosys, hls4ml
    seconds: float
    stage: str = "rtl"
