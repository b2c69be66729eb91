"""The life of a stage directory, the same for every stage that writes one.

1. **Refuse, resume or recognise.** A directory started with another config is
   refused; a finished one (``metrics.json``) is left alone and its metrics
   returned; an unfinished one is resumed.
2. **Begin**, only after every check has passed, so a refused command writes
   nothing:

   - *lock*: one process per stage directory; a second one exits with a line
     naming the holder's PID and host (an advisory ``flock`` on
     ``RUN/.<stage>.lock``, held until the process ends and released by the
     kernel when it dies, so a killed job never leaves a stale lock);
   - *tidy*: hidden temporary files that a killed write left are removed;
   - ``--overwrite`` removes the old directory; the frozen config is written.
3. **Finish.** ``metrics.json`` is written last and never holds NaN or Inf.

Every write is atomic (:mod:`hepprune.core.artifacts`); a full disk is one
line naming the path (:class:`~hepprune.core.artifacts.DiskFull`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hepprune.core import artifacts
from hepprune.core.errors import RunError
from hepprune.core.results import to_json
from hepprune.core.runs import CONFIG_FILE

log = logging.getLogger(__name__)


class StageBusy(RunError):
    """Another process holds the stage directory."""


class Stage:
    """One stage directory during one process's work on it; see the module docstring."""

    def __init__(self, path: Path, config_text: str, *, overwrite: bool = False, chief: bool = True):
        self.path, self.config_text, self.overwrite, self.chief = Path(path), config_text, overwrite, chief
        self._locks = contextlib.ExitStack()
        self._held = False

    def close(self) -> None:
        self._locks.close()

    def acquire(self) -> None:
        """Take the stage's lock now (begin() takes it otherwise): for stages
        that always redo their work and write beside their directory while
        computing (the analysis writes RUN/hls4ml/), so a second process is
        refused before it starts."""
        if self.chief and not self._held:
            self._locks.enter_context(lock(self.path))
            self._held = True

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    def check_config(self) -> None:
        """Refuse to resume a directory that was started with another config."""
        saved = self.config_file
        if not self.overwrite and saved.is_file() and saved.read_text() != self.config_text:
            raise RunError(f"{self.path} was started with a different config (see {saved}); "
                           "rerun with the same settings to resume, or use another --run-dir or --overwrite")

    def finished(self) -> dict[str, Any] | None:
        """The metrics of a finished stage that is not to be overwritten, else None."""
        self.check_config()
        if not self.overwrite and artifacts.is_complete(self.path):
            log.info("%s is already complete; nothing to do", self.path)
            return artifacts.read_json(self.path / artifacts.METRICS_FILE)
        return None

    def begin(self) -> None:
        """Start (or continue) writing: every refusal has happened by now."""
        if not self.chief:
            return
        self.acquire()
        if self.path.is_dir():
            for stale in artifacts.remove_stale_temporaries(self.path):
                log.info("removed %s, left by an interrupted write", stale)
        if self.overwrite and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        # Unfinished until metrics.json is written again.
        (self.path / artifacts.METRICS_FILE).unlink(missing_ok=True)
        artifacts.write_text(self.config_file, self.config_text)

    def check_metrics(self, metrics: Any) -> None:
        """Refuse metrics holding NaN or Inf; call it before writing the results they describe."""
        bad = artifacts.non_finite(to_json(metrics) if dataclasses.is_dataclass(metrics) else metrics)
        if bad:
            raise RunError(f"{self.path.name}: the metric {bad} is not a finite number (a dead or diverged "
                           f"model?); {self.path} is left unfinished")

    def finish(self, result: Any) -> dict[str, Any]:
        """Write metrics.json (a result record of :mod:`hepprune.core.results`,
        or its JSON object), the marker that the stage finished; returns the JSON."""
        metrics = to_json(result) if dataclasses.is_dataclass(result) else result
        self.check_metrics(metrics)
        artifacts.write_metrics(self.path, metrics)
        return metrics


def _lock_path(stage_dir: Path) -> Path:
    return stage_dir.parent / f".{stage_dir.name}.lock"


@contextlib.contextmanager
def lock(stage_dir: Path) -> Iterator[None]:
    """Hold the stage directory's lock, or raise StageBusy naming the holder."""
    path = _lock_path(stage_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StageBusy(f"{stage_dir} is in use by {holder}; wait for it to finish or stop it, "
                            "then rerun to resume") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


@contextlib.contextmanager
def stage(path: Path, config_text: str, *, overwrite: bool = False, chief: bool = True) -> Iterator[Stage]:
    """The stage directory ``path`` for this process; its lock, taken by
    :meth:`Stage.begin`, is released when the block ends. Only the chief of a
    multi-worker step locks and writes: the other workers write nothing there."""
    s = Stage(path, config_text, overwrite=overwrite, chief=chief)
    try:
        yield s
    finally:
        s.close()
