"""Atomic artifact writing.

A killed job must never leave a file that a later stage would trust, so every
artifact is written to a temporary name in the same directory and renamed into
place (rename is atomic on POSIX within one filesystem). A stage directory is
complete exactly when its ``metrics.json`` exists: it is always written last.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hepprune.core.errors import RunError

METRICS_FILE = "metrics.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    For writers that want a file name (h5py, tf_keras) rather than a stream.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
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


def write_metrics(stage_dir: str | os.PathLike, metrics: dict) -> Path:
    """Write the stage's metrics.json, the marker that the stage finished."""
    path = Path(stage_dir) / METRICS_FILE
    write_json(path, metrics)
    return path


def is_complete(stage_dir: str | os.PathLike) -> bool:
    return (Path(stage_dir) / METRICS_FILE).is_file()
