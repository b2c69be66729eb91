"""The user's HDF5 files read in place: a layout maps what a file holds onto
the network's inputs, its target and its reference.

``data.layout`` (:class:`~hepprune.core.config.LayoutConfig`) names the
format and the columns; :func:`resolve` checks it against one file and
returns a :class:`Layout`, which reads any event range of any shard with the
same structure. hepprune's own schema is one layout among them (a 2-D
``inputs`` plus ``target`` and ``reference``). The loader streams every
layout the same way: whole chunk-aligned blocks, never the file in memory.

Formats (names are what ``features``, ``target`` and ``reference`` use):

* ``array``: a 2-D dataset, columns named by ``columns`` or an attribute;
* ``columns``: one 1-D dataset per feature in a group (names: dataset names);
* ``compound``: a compound (structured) dataset (names: its numeric fields);
* ``pandas``: ``DataFrame.to_hdf`` in table or fixed format, read with h5py
  alone (names: the DataFrame's columns).

Any 1-D dataset of the file also counts as a name, by its path.
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from h5py import h5s
from numpy.lib import recfunctions

from hepprune.core.config import LayoutConfig
from hepprune.core.errors import DataError
from hepprune.core.expression import Expression, parse

LISTED = 12  # entries of a file's contents an error lists
CHUNK_BYTES = 2 * 1024 * 1024  # a chunk hepprune writes: whole-chunk reads stream at GB/s, per-event reads 1000x slower
MIN_BLOCK_BYTES = CHUNK_BYTES  # the least a read block holds (several small chunks at once)
MAX_BLOCK_BYTES = 64 * 1024 * 1024  # the most: a file chunked along features, not events, is read in slabs


@dataclass(frozen=True)
class Source:
    """Where one named column lives: a dataset, and in it a field and/or a column."""

    dataset: str
    field: str | None = None
    column: int | None = None


@dataclass(frozen=True)
class Layout:
    """A mapping resolved against a file: what to read for an event range."""

    format: str
    features: tuple[str, ...]
    inputs: tuple[Source, ...]
    target: Expression
    reference: Expression | None
    sources: tuple[tuple[str, Source], ...]  # every name the target and reference read
    # A 2-D float32 dataset that is the inputs as they are: read it, no assembly. Not compared:
    # a float64 shard beside a float32 one reads the same way (HDF5 converts).
    whole: str | None = field(default=None, compare=False)
    target_label: str = "target"
    reference_label: str = "reference"

    @functools.cached_property
    def _plain(self) -> tuple[list[int] | slice, list[str]]:
        """The inputs that are whole 1-D datasets: (feature indices, dataset paths)."""
        cols = [j for j, s in enumerate(self.inputs) if s.field is None and s.column is None]
        return _index(cols), [self.inputs[j].dataset for j in cols]

    @functools.cached_property
    def _groups(self) -> tuple[tuple[list[int] | slice, tuple[Source, ...]], ...]:
        """The other inputs grouped by where they are read from: (feature indices, their sources)."""
        groups: dict[tuple[str, str | None, bool], list[int]] = {}
        for j, s in enumerate(self.inputs):
            if s.field is None and s.column is None:
                continue
            key = (s.dataset, s.field if s.column is not None else None, s.column is not None)
            groups.setdefault(key, []).append(j)
        return tuple((_index(cols), tuple(self.inputs[j] for j in cols)) for cols in groups.values())

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every dataset a read touches."""
        return tuple(dict.fromkeys([*(s.dataset for s in self.inputs), *(s.dataset for _, s in self.sources)]))

    def read_into(self, handles: Handles, start: int, stop: int,
                  out: tuple[np.ndarray, np.ndarray, np.ndarray], at: int) -> None:
        """Events [start, stop) into rows at.. of the preallocated ``out`` (inputs
        float32 (., F), target, reference: zeros without one): a plain dataset
        is read straight into place by HDF5, with no intermediate array."""
        x, t, r = out
        n = stop - start
        src, dst = np.s_[start:stop], np.s_[at:at + n]
        raw: dict[str, np.ndarray] = {}
        if self.whole is not None:
            handles[self.whole].read_direct(x, src, dst)

        def data(name: str) -> np.ndarray:
            if name not in raw:
                raw[name] = handles[name][src]
            return raw[name]

        if self.whole is None:
            plain_cols, plain = self._plain
            if plain:  # one 1-D dataset per feature: each read into a row of a (k, n) buffer, then one transpose
                buf = np.empty((len(plain), n), np.float32)
                for i, name in enumerate(plain):
                    _read_1d(handles[name], start, stop, buf[i])
                x[dst][:, plain_cols] = buf.T
            for cols, group in self._groups:  # one vectorised copy per dataset (per field), not per column
                x[dst][:, cols] = _gather(data(group[0].dataset), group)
        sources = dict(self.sources)
        for arr, expr in ((t, self.target), (r, self.reference)):
            plain_src = sources.get(expr.names[0]) if expr is not None and expr.is_name else None
            if expr is None:
                arr[dst] = 0
            elif plain_src is not None and plain_src.field is None and plain_src.column is None:
                _read_1d(handles[plain_src.dataset], start, stop, arr[dst])
            else:
                arr[dst] = expr({n: _column(data(s.dataset), s) for n, s in sources.items() if n in expr.names})


def _read_1d(ds: h5py.Dataset, start: int, stop: int, dest: np.ndarray) -> None:
    """Rows [start, stop) of a 1-D dataset into the contiguous ``dest``, through
    h5py's low-level call: 12 us a read against read_direct's 30, which
    matters with one dataset per feature (HDF5 converts the type)."""
    space = ds.id.get_space()
    space.select_hyperslab((start,), (stop - start,))
    ds.id.read(h5s.create_simple((stop - start,)), space, dest)


class Handles:
    """A file's datasets by path, looked up once: h5py's lookup costs ~20 us,
    a read of a small chunk not much more."""

    def __init__(self, f: h5py.File):
        self.file = f
        self._cache: dict[str, h5py.Dataset] = {}

    def __getitem__(self, name: str) -> h5py.Dataset:
        ds = self._cache.get(name)
        if ds is None:
            ds = self._cache[name] = self.file[name]
        return ds


def _index(cols: list[int]) -> list[int] | slice:
    """Consecutive columns as a slice: numpy then copies by plain strides, ~5x
    faster than through an index list."""
    if cols and cols == list(range(cols[0], cols[-1] + 1)):
        return slice(cols[0], cols[-1] + 1)
    return cols


def _gather(data: np.ndarray, group: tuple[Source, ...]) -> np.ndarray:
    """(n, len(group)) values of sources that share one dataset: a 2-D dataset
    or subarray field by column index, a compound dataset's scalar fields by
    viewing them as one array where their types agree."""
    first = group[0]
    if first.column is not None:  # columns of a 2-D dataset or of one subarray field
        block = data if first.field is None else data[first.field]
        return block[:, [int(s.column or 0) for s in group]]
    if first.field is not None:
        if len(group) == 1:
            return data[first.field][:, None]
        return recfunctions.structured_to_unstructured(data[[str(s.field) for s in group]], dtype=np.float32)
    raise AssertionError(f"{first} is a whole dataset, read as such")


def _column(data: np.ndarray, src: Source) -> np.ndarray:
    if src.field is not None:
        data = data[src.field]
    return data if src.column is None else data[:, src.column]


def hepprune_layout(features: tuple[str, ...]) -> Layout:
    """hepprune's schema as a layout: its checks are :func:`hepprune.data.schema._inspect`'s."""
    return Layout("hepprune", features, tuple(Source("inputs", column=j) for j in range(len(features))),
                  parse("target", "target"), parse("reference", "reference"),
                  (("target", Source("target")), ("reference", Source("reference"))), whole="inputs")


# ---------------------------------------------------------------------------
# What a file holds, for errors that show it


def _shape(ds: h5py.Dataset) -> str:
    if ds.dtype.names:
        return f"{ds.shape} compound with fields {', '.join(ds.dtype.names[:LISTED])}"
    return f"{ds.shape} {ds.dtype}"


def holdings(group: h5py.Group) -> str:
    """'name (shape dtype), ...' of a group's members, for an error."""
    items = []
    for name, obj in group.items():
        items.append(f"{name} {_shape(obj)}" if isinstance(obj, h5py.Dataset) else f"{name}/ (group)")
        if len(items) == LISTED:
            items.append(f"... ({len(group) - LISTED} more)")
            break
    return ", ".join(items) or "nothing"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED * 2])
    return shown + (f", ... ({len(names) - LISTED * 2} more)" if len(names) > LISTED * 2 else "") or "none"


# ---------------------------------------------------------------------------
# Resolving a layout against a file


class _RestrictedUnpickler(pickle.Unpickler):
    """PyTables keeps pandas' column lists as protocol-0 pickles: lists of
    strings. Nothing else is ever unpickled: no class, no callable."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not a list of names")


def _unpickle(value: Any) -> Any:
    return _RestrictedUnpickler(io.BytesIO(bytes(value))).load()


def _names_attr(value: Any) -> list[str]:
    out = _unpickle(value)
    if not isinstance(out, list) or not all(isinstance(v, (str, int, float)) for v in out):
        raise pickle.UnpicklingError("not a list of names")
    return [str(v) for v in out]


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _dataset(f: h5py.File, path: str, key: str) -> h5py.Dataset:
    obj = f.get(path)
    if not isinstance(obj, h5py.Dataset):
        what = "a group" if isinstance(obj, h5py.Group) else "not in the file"
        raise DataError(f"{f.filename}: {key} '{path}' is {what}; the file holds: {holdings(f)}")
    return obj


def _numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf"


class _Namespace:
    """The names a layout's features, target and reference may use, with why
    a name that looks usable is not (a string field, a 2-D dataset)."""

    def __init__(self, f: h5py.File, where: str):
        self.f, self.where = f, where
        self.columns: dict[str, Source] = {}  # the inputs' own columns, in file order
        self.unusable: dict[str, str] = {}  # name -> why
        self.hidden: set[str] = set()  # usable by name, never a default feature (a pandas index level)

    def add(self, name: str, src: Source, dtype: np.dtype) -> None:
        if name in self.columns or name in self.unusable:
            raise DataError(f"{self.f.filename}: {self.where} names two columns '{name}'; name them apart "
                            "(data.layout.columns for a 2-D array)")
        if _numeric(dtype):
            self.columns[name] = src
        else:
            self.unusable[name] = f"has dtype {dtype}, not a number"

    def lookup(self, name: str, key: str) -> Source:
        if name in self.columns:
            return self.columns[name]
        if name in self.unusable:
            raise DataError(f"{self.f.filename}: {key} '{name}' {self.unusable[name]}; numeric columns in "
                            f"{self.where}: {_listing(list(self.columns))}")
        obj = self.f.get(name)
        if isinstance(obj, h5py.Dataset) and obj.ndim == 1 and not obj.dtype.names:
            if not _numeric(obj.dtype):
                raise DataError(f"{self.f.filename}: {key} '{name}' has dtype {obj.dtype}, not a number")
            return Source(obj.name)
        raise DataError(f"{self.f.filename}: {key} '{name}' is neither a column of {self.where} "
                        f"({_listing(list(self.columns))}) nor a 1-D dataset of the file ({holdings(self.f)})")


def _array(f: h5py.File, cfg: LayoutConfig) -> _Namespace:
    ds = _dataset(f, cfg.inputs, "data.layout.inputs")
    if ds.ndim != 2 or ds.dtype.names:
        raise DataError(f"{f.filename}: data.layout.inputs '{cfg.inputs}' has shape {_shape(ds)}; format array "
                        "needs a 2-D numeric dataset (events, features)")
    width = ds.shape[1]
    names = list(cfg.columns)
    if not names:
        attr = next((o.attrs[cfg.names_attribute] for o in (ds, f) if cfg.names_attribute in o.attrs), None)
        names = [_str(v) for v in np.atleast_1d(attr)] if attr is not None else \
            [f"{cfg.inputs.strip('/').split('/')[-1]}_{j}" for j in range(width)]
        origin = f"its '{cfg.names_attribute}' attribute" if attr is not None else "the default names"
    else:
        origin = "data.layout.columns"
    if len(names) != width:
        raise DataError(f"{f.filename}: {origin} names {len(names)} columns, '{cfg.inputs}' has {width}")
    space = _Namespace(f, f"'{cfg.inputs}'")
    for j, name in enumerate(names):
        space.add(name, Source(ds.name, column=j), ds.dtype)
    return space


def _columns(f: h5py.File, cfg: LayoutConfig) -> _Namespace:
    group = f.get(cfg.inputs or "/")
    if not isinstance(group, h5py.Group):
        raise DataError(f"{f.filename}: data.layout.inputs '{cfg.inputs}' is not a group; the file holds: "
                        f"{holdings(f)}")
    space = _Namespace(f, f"group '{group.name}'")
    for name, obj in group.items():
        if isinstance(obj, h5py.Dataset) and obj.ndim == 1 and not obj.dtype.names:
            space.add(name, Source(obj.name), obj.dtype)
        elif isinstance(obj, h5py.Dataset):
            space.unusable[name] = f"has shape {_shape(obj)}, not one value per event"
    return space


def _compound(f: h5py.File, cfg: LayoutConfig) -> _Namespace:
    ds = _dataset(f, cfg.inputs, "data.layout.inputs")
    if not ds.dtype.names or ds.ndim != 1:
        raise DataError(f"{f.filename}: data.layout.inputs '{cfg.inputs}' has shape {_shape(ds)}; format "
                        "compound needs a 1-D dataset with named fields")
    space = _Namespace(f, f"'{cfg.inputs}'")
    for name in ds.dtype.names:
        dtype = ds.dtype.fields[name][0]
        if dtype.shape:
            space.unusable[name] = f"holds {dtype.shape} values per event, not one"
        else:
            space.add(name, Source(ds.name, field=name), dtype)
    return space


def _pandas(f: h5py.File, cfg: LayoutConfig) -> _Namespace:
    group = f.get(cfg.inputs)
    kind = _str(group.attrs.get("pandas_type", b"")) if isinstance(group, h5py.Group) else ""
    if kind not in ("frame_table", "frame"):
        keys = [k for k, o in f.items() if isinstance(o, h5py.Group)
                and _str(o.attrs.get("pandas_type", b"")) in ("frame_table", "frame")]
        raise DataError(f"{f.filename}: data.layout.inputs '{cfg.inputs}' is not a DataFrame written by "
                        f"pandas to_hdf ({'pandas_type ' + kind if kind else 'no pandas_type'}); DataFrame keys "
                        f"in the file: {', '.join(keys) or 'none'}")
    space = _Namespace(f, f"DataFrame '{cfg.inputs}'")
    try:
        if kind == "frame_table":  # one compound table; a values block is a subarray field of several columns
            table = group["table"]
            for field in table.dtype.names:
                if field == "index":
                    continue
                dtype = table.dtype.fields[field][0]
                names = _names_attr(table.attrs[f"{field}_kind"])
                stored = _str(table.attrs.get(f"{field}_dtype", b""))
                for j, name in enumerate(names):
                    if stored.startswith(("datetime", "timedelta")):
                        space.unusable[name] = f"is a {stored} column, not a number"
                    else:
                        space.add(name, Source(table.name, field=field, column=j if dtype.shape else None),
                                  dtype.base)
            # A MultiIndex is stored as leading data columns: usable by name, never a default feature.
            levels = group.attrs.get("levels")
            if isinstance(levels, bytes | np.bytes_):
                space.hidden.update(_names_attr(levels))
            order = _names_attr_pairs(group.attrs.get("non_index_axes"))
        else:  # fixed: blockK_items names the columns of the 2-D blockK_values
            for k in range(int(group.attrs["nblocks"])):
                values = group[f"block{k}_values"]
                names = [_str(v) for v in group[f"block{k}_items"][()]]
                stored = _str(values.attrs.get("value_type", b"")) if isinstance(values, h5py.Dataset) else ""
                for j, name in enumerate(names):
                    if stored.startswith(("datetime", "timedelta")):
                        space.unusable[name] = f"is a {stored} column, not a number"
                    elif isinstance(values, h5py.Dataset) and values.ndim == 2:
                        space.add(name, Source(values.name, column=j), values.dtype)
                    else:
                        space.unusable[name] = "is not numeric (pandas stored it as objects)"
            order = [_str(v) for v in group["axis0"][()]] if "axis0" in group else []
    except (KeyError, AttributeError, TypeError, pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise DataError(f"{f.filename}: DataFrame '{cfg.inputs}' is not laid out as pandas writes it "
                        f"({exc}); write it with DataFrame.to_hdf") from None
    # pandas groups columns into blocks by dtype; the default features follow the DataFrame's own order.
    rank = {name: k for k, name in enumerate(order)}
    space.columns = dict(sorted(space.columns.items(), key=lambda item: rank.get(item[0], len(rank))))
    return space


def _names_attr_pairs(value: Any) -> list[str]:
    """The column names in pandas' ``non_index_axes`` attribute: [(axis, [names])]."""
    if value is None:
        return []
    out = _unpickle(value)
    if not (isinstance(out, list) and out and isinstance(out[0], tuple) and isinstance(out[0][1], list)):
        raise pickle.UnpicklingError("not pandas' non_index_axes")
    return [str(v) for v in out[0][1]]


_NAMESPACES = {"array": _array, "columns": _columns, "compound": _compound, "pandas": _pandas}


def resolve(f: h5py.File, cfg: LayoutConfig) -> tuple[Layout, int, int]:
    """The layout of this file, its number of events and the chunk rows its blocks align to."""
    space = _NAMESPACES[cfg.format](f, cfg)
    target = parse(cfg.target, "data.layout.target")
    reference = parse(cfg.reference, "data.layout.reference") if cfg.reference else None
    used = {n: space.lookup(n, key) for expr, key in ((target, "data.layout.target"),
                                                      (reference, "data.layout.reference")) if expr
            for n in expr.names}
    features = list(cfg.features) or [n for n in space.columns if n not in used and n not in space.hidden]
    leaked = [n for n in features if n in used]
    if leaked:
        raise DataError(f"{f.filename}: data.layout.features lists {', '.join(repr(n) for n in leaked)}, which the "
                        "target or reference is made of: the network would be given its answer")
    if not features:
        raise DataError(f"{f.filename}: no input feature left: {space.where} holds only "
                        f"{_listing(list(space.columns))}, which the target and reference use")
    inputs = [space.lookup(n, "data.layout.features") for n in features]
    lengths = {src.dataset: len(f[src.dataset]) for src in [*inputs, *used.values()]}
    n = lengths[inputs[0].dataset]
    bad = {d: k for d, k in lengths.items() if k != n}
    if bad:
        d, k = next(iter(bad.items()))
        raise DataError(f"{f.filename}: '{d}' holds {k} events, '{inputs[0].dataset}' holds {n}; every mapped "
                        "dataset must hold one row per event")
    if n == 0:
        raise DataError(f"{f.filename}: holds no events")
    whole = None
    first = f[inputs[0].dataset]
    if (inputs[0].field is None and first.ndim == 2 and first.dtype == np.float32
            and [s for s in inputs] == [Source(first.name, column=j) for j in range(first.shape[1])]):
        whole = first.name  # the features are the 2-D dataset as it is
    rows = block_rows([f[d] for d in lengths], n)
    layout = Layout(cfg.format, tuple(features), tuple(inputs), target, reference, tuple(used.items()), whole,
                    cfg.target_name or target.text, cfg.reference_name or (reference.text if reference else ""))
    return layout, n, rows


def chunk_rows(bytes_per_event: int, n_events: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Events per chunk so that a chunk of the widest dataset is ~``chunk_bytes``."""
    return int(max(1, min(n_events, chunk_bytes // max(1, bytes_per_event))))


def block_rows(datasets: list[h5py.Dataset], n: int) -> int:
    """Events per read block. Chunked: whole chunks of the most coarsely
    chunked dataset, as many as make MIN_BLOCK_BYTES of every dataset's rows
    together; a read per small chunk costs more in call overhead than in
    bytes (h5py's default chunks are a few KiB). Contiguous: ~CHUNK_BYTES
    of rows, one large slab per read."""
    row_bytes = sum(int(ds.dtype.itemsize * np.prod(ds.shape[1:], dtype=np.int64)) for ds in datasets)
    chunked = [int(ds.chunks[0]) for ds in datasets if ds.chunks]
    if not chunked:
        return chunk_rows(row_bytes, n)
    rows = max(chunked)
    rows = int(min(max(n, 1), rows * max(1, -(-MIN_BLOCK_BYTES // max(1, rows * row_bytes)))))
    if rows * row_bytes > MAX_BLOCK_BYTES:  # chunks long along events ((N, 1), one chunk per file): memory first
        return chunk_rows(row_bytes, n, MAX_BLOCK_BYTES)
    return rows
