"""The hepprune HDF5 regression schema: writing shards and validating them.

One dataset is one file or many (a glob). Every shard holds, for N events:

==============  =====================  =========  ====================================
name            shape                  dtype      meaning
==============  =====================  =========  ====================================
``inputs``      (N, F)                 float32    flat input features; names in the
                                                  ``feature_names`` attribute
``target``      (N,)                   float32    regression target (true energy/pT),
                                                  or the class index (classification)
``reference``   (N,)                   float32    the raw estimator the network must
                                                  beat (raw tower sum, raw jet pT);
                                                  unused for classification (zeros)
``image``       (N, H, W, L)           float32    optional image view (CNN input)
``aux/<name>``  (N,)                   any num.   optional per-event extras for
                                                  binned studies (particle id, ...)
==============  =====================  =========  ====================================

File attributes: ``schema`` (= ``"hepprune-regression"``), ``schema_version``,
``feature_names``, ``target_name``, ``target_unit``, ``reference_name``,
``source`` (what produced the file) and ``parameters`` (JSON of the generator
or converter settings, so a file documents itself). A classification
dataset also has ``class_names``: the target is an index into it.

Datasets are chunked along events only, with chunks of about 2 MiB and no
compression: gzip decompresses at ~200 MB/s here and would starve training,
while whole-chunk reads run at GB/s.
"""

from __future__ import annotations

import glob as _glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hepprune.core.artifacts import atomic_path
from hepprune.core.config import LayoutConfig
from hepprune.core.errors import DataError
from hepprune.data.layout import CHUNK_BYTES, Layout, block_rows, chunk_rows, hepprune_layout, holdings, resolve

SCHEMA_NAME = "hepprune-regression"
SCHEMA_VERSION = 1
REQUIRED_DATASETS = ("inputs", "target", "reference")
REQUIRED_ATTRS = ("schema", "schema_version", "feature_names", "target_name",
                  "target_unit", "reference_name")


def write_shard(
    path: str | os.PathLike,
    *,
    inputs: np.ndarray,
    target: np.ndarray,
    reference: np.ndarray,
    feature_names: list[str],
    target_name: str,
    reference_name: str,
    source: str,
    parameters: dict,
    target_unit: str = "GeV",
    image: np.ndarray | None = None,
    image_layers: list[str] | None = None,
    aux: dict[str, np.ndarray] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    class_names: list[str] | None = None,
) -> Path:
    """Write one shard atomically (temp file, then rename) and return its path."""
    n = len(target)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[0] != n or len(reference) != n:
        raise ValueError("inputs, target and reference must have the same number of events")
    if inputs.shape[1] != len(feature_names):
        raise ValueError("feature_names must name every input column")
    widest = inputs.shape[1] * 4
    if image is not None:
        widest = max(widest, int(np.prod(image.shape[1:])) * 4)
    rows = chunk_rows(widest, n, chunk_bytes)
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("inputs", data=inputs, chunks=(rows, inputs.shape[1]))
            f.create_dataset("target", data=np.asarray(target, np.float32), chunks=(rows,))
            f.create_dataset("reference", data=np.asarray(reference, np.float32), chunks=(rows,))
            if image is not None:
                image = np.asarray(image, np.float32)
                f.create_dataset("image", data=image, chunks=(rows, *image.shape[1:]))
                if image_layers:
                    f["image"].attrs["layers"] = list(image_layers)
            for name, values in (aux or {}).items():
                f.create_dataset(f"aux/{name}", data=np.asarray(values), chunks=(rows,))
            f.attrs["schema"] = SCHEMA_NAME
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["feature_names"] = list(feature_names)
            f.attrs["target_name"] = target_name
            f.attrs["target_unit"] = target_unit
            f.attrs["reference_name"] = reference_name
            f.attrs["source"] = source
            f.attrs["parameters"] = json.dumps(parameters, sort_keys=True)
            if class_names:
                f.attrs["class_names"] = list(class_names)
    return path


def check_out_dir(out_dir: Path) -> None:
    """Refuse a directory holding shards: a glob over it would mix old and new ones."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} exists and is not a directory")
    old = sorted(out_dir.glob("shard_*.h5")) if out_dir.is_dir() else []
    if old:
        raise DataError(f"--out {out_dir} already holds {len(old)} shard file(s) ({old[0].name} ...); "
                        "remove them or choose an empty directory")
    existing = next((p for p in [out_dir, *out_dir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DataError(f"--out {out_dir} cannot be created: {existing} is a file, not a directory")
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"--out {out_dir} is not writable ({existing or out_dir} cannot be written to); "
                        "choose a directory you can write")


@dataclass(frozen=True)
class Shard:
    path: str
    n_events: int
    chunk_rows: int


@dataclass(frozen=True)
class DatasetInfo:
    """What the loader needs to know about a validated dataset (one or many shards)."""

    shards: tuple[Shard, ...]
    feature_names: tuple[str, ...]
    image_shape: tuple[int, ...] | None
    target_name: str
    target_unit: str
    reference_name: str
    parameters: dict
    layout: Layout  # how a block is read: hepprune's schema, or data.layout resolved against the files
    class_names: tuple[str, ...] = ()

    @property
    def n_events(self) -> int:
        return sum(s.n_events for s in self.shards)

    def input_shape(self, view: str) -> tuple[int, ...]:
        if view == "image":
            if self.image_shape is None:
                raise DataError(f"dataset has no 'image' view (shards: {self.shards[0].path} ...); "
                                "regenerate it with --image or use an MLP")
            return self.image_shape
        return (len(self.feature_names),)


def expand(pattern: str | os.PathLike) -> list[str]:
    """Files matching a path or glob, sorted; a clear error if none do."""
    pattern = str(pattern)
    files = sorted(_glob.glob(os.path.expanduser(pattern)))
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise DataError(f"no dataset file matches '{pattern}'")
    return files


def _str_list(value) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value))


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parameters(path: str, text) -> dict:
    """The ``parameters`` attribute: JSON of the settings that made the file."""
    try:
        value = json.loads(_str(text))
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise DataError(f"{path}: the 'parameters' attribute is not a JSON object")
    return value


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc.__class__.__name__})") from None


def _inspect(path: str) -> tuple[Shard, dict]:
    with _open(path) as f:
        missing_attrs = [a for a in REQUIRED_ATTRS if a not in f.attrs]
        if missing_attrs:
            raise DataError(f"{path}: missing file attribute(s) {', '.join(missing_attrs)} "
                            f"(not a {SCHEMA_NAME} file? it holds: {holdings(f)}; map your own layout with "
                            "data.layout, README \"Your own HDF5 files\")")
        if _str(f.attrs["schema"]) != SCHEMA_NAME:
            raise DataError(f"{path}: schema attribute is '{_str(f.attrs['schema'])}', "
                            f"expected '{SCHEMA_NAME}'")
        version = f.attrs["schema_version"]
        if _str(version) != str(SCHEMA_VERSION):  # also refuses a string or array, without a numpy error
            raise DataError(f"{path}: schema_version {_str(version)!r} is not supported "
                            f"(this hepprune reads version {SCHEMA_VERSION})")
        for name in REQUIRED_DATASETS:
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise DataError(f"{path}: missing dataset '{name}' "
                                f"(required: {', '.join(REQUIRED_DATASETS)})")
        inputs, target, reference = f["inputs"], f["target"], f["reference"]
        if inputs.ndim != 2:
            raise DataError(f"{path}: 'inputs' must be 2-D (events, features), got shape {inputs.shape}")
        n = inputs.shape[0]
        if n == 0:
            raise DataError(f"{path}: holds no events")
        if inputs.shape[1] == 0:
            raise DataError(f"{path}: 'inputs' has no feature columns")
        for ds in (target, reference):
            if ds.shape != (n,):
                raise DataError(f"{path}: '{ds.name.lstrip('/')}' has shape {ds.shape}, "
                                f"expected ({n},) to match 'inputs'")
        for ds in (inputs, target, reference):
            if ds.dtype.kind != "f":
                raise DataError(f"{path}: '{ds.name.lstrip('/')}' has dtype {ds.dtype}, expected float")
        features = _str_list(f.attrs["feature_names"])
        if len(features) != inputs.shape[1]:
            raise DataError(f"{path}: feature_names lists {len(features)} names for "
                            f"{inputs.shape[1]} input columns")
        image_shape = None
        if "image" in f:
            if f["image"].ndim != 4 or f["image"].shape[0] != n:
                raise DataError(f"{path}: 'image' has shape {f['image'].shape}, expected ({n}, H, W, L)")
            if f["image"].dtype.kind != "f":
                raise DataError(f"{path}: 'image' has dtype {f['image'].dtype}, expected float")
            image_shape = tuple(int(d) for d in f["image"].shape[1:])
        if "aux" in f:
            for name, ds in f["aux"].items():
                if not isinstance(ds, h5py.Dataset):
                    raise DataError(f"{path}: 'aux/{name}' is a group; aux/ holds one (N,) dataset per quantity")
                if ds.shape != (n,):
                    raise DataError(f"{path}: 'aux/{name}' has shape {ds.shape}, expected ({n},)")
                if ds.dtype.kind not in "biuf":
                    raise DataError(f"{path}: 'aux/{name}' has dtype {ds.dtype}, expected a number")
        rows = block_rows([inputs, target, reference, *([f["image"]] if "image" in f else [])], n)
        meta = {
            "feature_names": features,
            "image_shape": image_shape,
            "target_name": _str(f.attrs["target_name"]),
            "target_unit": _str(f.attrs["target_unit"]),
            "reference_name": _str(f.attrs["reference_name"]),
            "parameters": _parameters(path, f.attrs.get("parameters", "{}")),
            "class_names": _str_list(f.attrs["class_names"]) if "class_names" in f.attrs else (),
        }
    return Shard(path=path, n_events=int(n), chunk_rows=int(rows)), meta


def _inspect_mapped(path: str, cfg: LayoutConfig) -> tuple[Shard, dict]:
    with _open(path) as f:
        layout, n, rows = resolve(f, cfg)
    meta = {
        "feature_names": layout.features,
        "image_shape": None,
        "target_name": layout.target_label,
        "target_unit": cfg.target_unit,
        "reference_name": layout.reference_label,
        "parameters": {"layout": cfg.format},
        "class_names": tuple(cfg.class_names),
        "layout": layout,
    }
    return Shard(path=path, n_events=int(n), chunk_rows=int(rows)), meta


def open_dataset(pattern: str | os.PathLike, layout: LayoutConfig | None = None) -> DatasetInfo:
    """Validate every shard matching ``pattern`` against the schema, or against
    ``layout`` (``data.layout``) for a file of your own, and the shards against each other.

    Only metadata is read here; values (NaN/Inf) are checked by the loader's
    statistics pass, which reads every event once anyway.
    """
    mapped = layout is not None and layout.format != "hepprune"
    shards, first = [], None
    for path in expand(pattern):
        shard, meta = _inspect_mapped(path, layout) if mapped and layout is not None else _inspect(path)
        if first is None:
            first = (path, meta)
        else:
            for key in ("feature_names", "image_shape", "target_name", "target_unit", "reference_name", "class_names"):
                if meta[key] != first[1][key]:
                    raise DataError(f"shards disagree on {key}: {first[0]} has {first[1][key]}, "
                                    f"{path} has {meta[key]}")
            if mapped and meta["layout"] != first[1]["layout"]:
                raise DataError(f"shards disagree on where the mapped columns live: {first[0]} and {path} "
                                f"differ in their datasets ({', '.join(first[1]['layout'].datasets)} against "
                                f"{', '.join(meta['layout'].datasets)}) or their types")
        shards.append(shard)
    assert first is not None  # expand() refuses a pattern that matches no file
    meta = first[1]
    return DatasetInfo(
        shards=tuple(shards),
        feature_names=meta["feature_names"],
        image_shape=meta["image_shape"],
        target_name=meta["target_name"],
        target_unit=meta["target_unit"],
        reference_name=meta["reference_name"],
        parameters=meta["parameters"],
        class_names=meta["class_names"],
        layout=meta.get("layout") or hepprune_layout(meta["feature_names"]),
    )
