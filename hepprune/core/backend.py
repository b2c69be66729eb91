"""The one place TensorFlow is imported.

tfmot 0.8 prunes only Keras 2 models, and TensorFlow >= 2.16 maps ``tf.keras``
to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set *before* TensorFlow is
first imported. Every module that needs TensorFlow, tf_keras or tfmot imports
them from here, so the variable is set exactly once, in time.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep SLURM logs readable


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are written to
    fd 2 before its log level applies; hide them so a bad input ends in one
    readable line. HEPPRUNE_DEBUG=1 shows them. Python errors still surface."""
    if os.environ.get("HEPPRUNE_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with quiet_stderr():
    import tensorflow as tf
    import tf_keras as keras

    # Device discovery prints "failed call to cuInit" on CPU-only nodes; do it
    # here, quietly. (It lists devices without starting the runtime, so a
    # multi-worker strategy can still be set up afterwards.)
    tf.config.list_physical_devices()

if TYPE_CHECKING:  # at run time the module __getattr__ below imports it on first use
    import tensorflow_model_optimization as tfmot

__all__ = ["tf", "keras", "tfmot", "quiet_stderr"]


def __getattr__(name: str) -> Any:
    # tfmot costs ~0.4 s to import and only the stages that read or prune a model need it.
    if name == "tfmot":
        return _import_tfmot()
    raise AttributeError(name)


def _import_tfmot() -> Any:
    """tfmot, imported without Keras 3.

    tfmot 0.8's prune_registry tries ``from keras.src.engine import base_layer``
    on import; with TensorFlow >= 2.16 ``keras`` is Keras 3, which takes ~2 s
    to import (scipy, matplotlib, scikit-learn...) and then has no
    ``keras.src.engine``, so tfmot falls back to no base layer anyway. Blocking
    ``keras`` for that one import makes it fail at once, with the same result;
    a ``keras`` already imported (say by a user's module) is left alone.
    """
    if "tensorflow_model_optimization" in sys.modules or "keras" in sys.modules:
        import tensorflow_model_optimization as tfmot  # noqa: PLC0415 - deferred: tfmot on first use

        return tfmot
    sys.modules["keras"] = None  # type: ignore[assignment]  # `import keras` raises ImportError at once
    try:
        import tensorflow_model_optimization as tfmot  # noqa: PLC0415 - deferred: tfmot on first use
    finally:
        del sys.modules["keras"]  # a later `import keras` (Keras 3) works as before
    return tfmot
