"""Atomic artifact writing.

A killed job must never leave a file that a later stage would trust, so every
artifact is written to a temporary name in the same directory and renamed into
place (rename is atomic on POSIX within one filesystem). A stage directory is
complete exactly when its ``metrics.json`` exists: it is always written last.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hepprune.core.errors import RunError

TMP_SUFFIX = ".tmp"

METRICS_FILE = "metrics.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    For writers that want a file name (h5py, tf_keras) rather than a stream.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        _raise_if_full(exc, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the usual umask-based mode so collaborators
        # on a shared cluster filesystem can read the artifact.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as exc:
        _raise_if_full(exc, path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


class DiskFull(RunError):
    """No space left on the device a stage writes to."""


def _raise_if_full(exc: OSError, path: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull(f"no space left on device writing {path}") from None


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the hidden temporary files (``.NAME.XXXX.tmp``) a killed write
    left in ``directory`` and below; they are never part of a result."""
    stale = [p for p in Path(directory).rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def non_finite(obj: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite number in ``obj``, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "the value"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    bad = non_finite(obj)
    if bad:
        raise RunError(f"{bad} is not a finite number; {path} is not written (JSON has no NaN or Inf)")
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object this project wrote; a damaged file (a job killed by hand,
    an edit) is a RunError naming it, not a parser traceback."""
    try:
        with open(path) as fh:
            value = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path} is damaged (not valid JSON); rerun the stage that wrote it with --overwrite") from None
    if not isinstance(value, dict):
        raise RunError(f"{path} is damaged (a JSON {type(value).__name__}, expected an object); rerun the stage "
                       "that wrote it with --overwrite")
    return value


def write_metrics(stage_dir: str | os.PathLike[str], metrics: dict[str, Any]) -> Path:
    """Write the stage's metrics.json, the marker that the stage finished."""
    path = Path(stage_dir) / METRICS_FILE
    write_json(path, metrics)
    return path


def is_complete(stage_dir: str | os.PathLike[str]) -> bool:
    return (Path(stage_dir) / METRICS_FILE).is_file()
