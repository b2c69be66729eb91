"""hepprune: pretrain, prune and export small regression networks for FPGA triggers.

One import namespace over the workflow's folders (see the README's layout):

- ``hepprune.core``   the engine no stage owns: config, run-directory layout,
  stage lifecycle, fit loop, evaluation, models, metrics, task, fixed point;
- ``hepprune.data``   datasets: generator, converters, schema, streamed loader;
- ``hepprune.ptq``    pretraining and post-training quantisation;
- ``hepprune.prune``  pruning and the comparison of the models;
- ``hepprune.rtl``    Verilog of the networks (da4ml), Verilator and Yosys;
- ``hepprune.slurm``  the stages as SLURM jobs.

Imports go one way: core <- data <- ptq <- prune <- rtl <- slurm. The names below
are the public surface for scripts and notebooks; the stages are run as
commands (``hepprune-train``, ``python ptq/trainModel.py``, ...).
"""

from hepprune.core.config import Config
from hepprune.core.config import load as load_config
from hepprune.core.errors import ConfigError, DataError, HepPruneError, RunError

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "DataError", "HepPruneError", "RunError", "__version__", "load_config"]
