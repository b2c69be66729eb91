"""Stands in for *your* training script: ``python examples/user_h5/make_user_model.py --data GLOB --out model.h5``.

It trains a small functional tf_keras model outside hepprune, on the raw
calorimeter inputs, to predict true / raw energy (what hepprune calls
``target_transform: ratio``), and saves it as HDF5: the kind of pretrained
``.h5`` a physicist brings from an earlier study.
"""

from __future__ import annotations

import argparse
import glob
import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])  # the checkout, for hepprune (if not installed)

import h5py  # noqa: E402
import numpy as np  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="calorimeter HDF5 file or glob")
    p.add_argument("--out", required=True, help="the .h5 model to write")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--events", type=int, default=200_000, help="events to train on (first of each shard)")
    args = p.parse_args()

    # tf_keras (Keras 2): what tfmot can prune
    from hepprune.core.backend import keras  # noqa: PLC0415 - deferred: TensorFlow loads after the arguments are parsed

    xs, ys = [], []
    for path in sorted(glob.glob(args.data)):
        with h5py.File(path, "r") as f:
            n = min(len(f["target"]), args.events)
            xs.append(f["inputs"][:n])
            ys.append(f["target"][:n] / np.maximum(f["reference"][:n], 1.0))
    x, y = np.concatenate(xs)[:args.events], np.concatenate(ys)[:args.events]

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=x.shape[1:], name="towers")  # raw tower energies, eta, pileup vertices
    h = keras.layers.Dense(32, activation="relu", name="dense_a")(inputs)
    h = keras.layers.Dense(16, activation="relu", name="dense_b")(h)
    out = keras.layers.Dense(1, name="energy_ratio")(h)
    model = keras.Model(inputs, out, name="user_model")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mae")
    model.fit(x, y, batch_size=512, epochs=args.epochs, validation_split=0.1, verbose=2)
    model.save(args.out, save_format="h5")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
