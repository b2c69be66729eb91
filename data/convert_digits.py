"""Convert scikit-learn's 8x8 handwritten digits to the hepprune HDF5 schema.

``python data/convert_digits.py --out DIR [--seed S]`` writes ``DIR/digits.h5``:
1797 real images (UCI optical recognition of handwritten digits, shipped
inside scikit-learn, so no download), classes ``0`` ... ``9``:

* ``image`` (N, 8, 8, 1): pixel intensities 0..16, the CNN input;
* ``inputs`` (N, 64): the same pixels flattened (``px_<row>_<col>``);
* ``target``: the digit, an index into the ``class_names`` attribute;
* ``reference``: zeros (classification has no raw estimator).

The events are shuffled once with ``--seed``: the project splits by position
(train, then validation, then test), and the original order is grouped by
writer.
"""

from __future__ import annotations

if __package__ in (None, ""):  # `python data/convert_digits.py`: the working directory, not this folder, on sys.path
    import os
    import sys

    sys.path[0] = os.getcwd()

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hepprune.core.cli import ArgumentParser, run
from hepprune.core.errors import HepPruneError
from hepprune.data.schema import write_shard

log = logging.getLogger("data.convert_digits")

SOURCE = "hepprune digits converter (sklearn.datasets.load_digits)"


def load() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 8 x 8, labels N) from scikit-learn's bundled copy."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415 - deferred: scikit-learn is optional (examples extra)
    except ImportError:
        raise HepPruneError("the digits example needs scikit-learn: pip install -e '.[examples]'") from None
    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def convert(out_dir: Path, seed: int = 0) -> Path:
    images, labels = load()
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    n = len(labels)
    path = write_shard(
        Path(out_dir) / "digits.h5", inputs=images.reshape(n, -1), target=labels.astype(np.float32),
        reference=np.zeros(n, np.float32), feature_names=[f"px_{r}_{c}" for r in range(8) for c in range(8)],
        target_name="digit", target_unit="", reference_name="none", source=SOURCE,
        parameters={"seed": seed, "events": n}, image=images[..., None], image_layers=["intensity"],
        class_names=[str(k) for k in range(10)], chunk_bytes=64 * 1024)
    log.info("wrote %s: %d images, 10 classes", path, n)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="convert_digits.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (digits.h5 goes there)")
    p.add_argument("--seed", type=int, default=0, help="seed of the one-time shuffle")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    convert(Path(args.out), args.seed)
    return 0


def cli() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    cli()
