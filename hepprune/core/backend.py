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

__all__ = ["tf", "keras", "tfmot", "quiet_stderr", "without_keras_3"]


def __getattr__(name: str) -> Any:
    # tfmot costs ~0.4 s to import and only the stages that read or prune a model need it.
    if name == "tfmot":
        return _import_tfmot()
    raise AttributeError(name)


@contextlib.contextmanager
def without_keras_3() -> Iterator[None]:
    """Within it, ``import keras`` fails at once, unless Keras 3 is already imported.

    tfmot 0.8 (on import) and TFLite's converter (on every convert) try
    ``import keras`` only to tell a Keras 3 model apart: tfmot then asks it for
    ``keras.src.engine``, which Keras 3 lacks, and falls back to no base layer;
    the converter finds our tf_keras model is not a Keras 3 one. Importing
    Keras 3 for that takes ~2 s (scipy, matplotlib, scikit-learn...); a failed
    import gives both the same answer. A later ``import keras`` works as before.
    """
    if "keras" in sys.modules:  # already paid for (say by a user's module): leave it
        yield
        return
    sys.modules["keras"] = None  # type: ignore[assignment]  # `import keras` raises ImportError at once
    try:
        yield
    finally:
        if sys.modules.get("keras", "") is None:
            del sys.modules["keras"]


def _import_tfmot() -> Any:
    """tfmot, imported without Keras 3 (see :func:`without_keras_3`)."""
    with without_keras_3():
        import tensorflow_model_optimization as tfmot  # noqa: PLC0415 - deferred: tfmot on first use
    return tfmot
