"""The thin shared layer under every command: logging set-up and one-line errors.

Every CLI's ``main`` raises :class:`~data.errors.HepPruneError` for bad input;
:func:`run` turns that, and an ``OSError`` on a path (an output directory that
is a file, no permission, a full disk), into ``error: <message>`` on stderr
and exit status 2, so a user never sees a deep TensorFlow traceback for a
mistake they can fix.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from hepprune.core.errors import ConfigError, HepPruneError

EXIT_BAD_INPUT = 2


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    # TensorFlow's absl logger chatters at INFO on every epoch ("Sharding callback ...").
    logging.getLogger("absl").setLevel(logging.WARNING)
    # TensorFlow's Python logger: "Assets written to ..." on every TFLite export, retracing notices
    # for the short last batch of each model. Real problems raise.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


_NO_SPACE = ("No space left on device", "errno = 28", "Disk quota exceeded")


def _disk_full(exc: BaseException) -> str | None:
    """The one line for an error that is a full disk, whoever raised it
    (Python, h5py, TensorFlow's C++ writers), or None."""
    text = str(exc)
    if getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and not any(s in text for s in _NO_SPACE):
        return None
    path = getattr(exc, "filename", None)
    if not path:  # TensorFlow: "<path>; No space left on device [Op:SaveV2]"
        m = re.search(r"(/[^;\s]+)(?:;|\s)[^/]*No space left", text)
        path = m.group(1) if m else None
    if path and ("_temp" in path or path.endswith(".tmp")):
        path = str(Path(path).parent).removesuffix("_temp")  # TensorFlow's and our temporary names
    return f"no space left on device writing {path or 'the run directory'}"


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and map user errors to a one-line message and exit code 2."""
    setup_logging(verbose=bool(os.environ.get("HEPPRUNE_DEBUG")))
    try:
        return int(main(argv) or 0)
    except HepPruneError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write("error: out of memory; use a smaller model, batch size or --samples\n")
        return EXIT_BAD_INPUT
    except Exception as exc:
        if os.environ.get("HEPPRUNE_DEBUG"):
            raise
        full = _disk_full(exc)
        if full:
            sys.stderr.write(f"error: {full}\n")
            return EXIT_BAD_INPUT
        if isinstance(exc, OSError):
            # An output path that is a file, a directory without write permission:
            # the user's to fix, so one line. HEPPRUNE_DEBUG=1 shows where it happened.
            where = f": {exc.filename}" if exc.filename else ""
            sys.stderr.write(f"error: {exc.strerror or exc}{where}\n")
            return EXIT_BAD_INPUT
        # TensorFlow's allocation failure, named without importing TensorFlow here.
        if type(exc).__name__ != "ResourceExhaustedError":
            raise
        first = re.sub(r"\{\{.*?\}\}\s*", "", str(exc)).strip().split("\n")[0]
        sys.stderr.write(f"error: TensorFlow ran out of memory ({first[:200]}); use a smaller model or batch size\n")
        return EXIT_BAD_INPUT


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:  # argparse API
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")


def parse_models(text: str | None) -> list[str] | None:
    """``--models a,b``: the names, or None when the option is absent."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--models expects comma-separated model names like baseline,prune_0.50, got '{text}'")
    return names


def parse_samples(text: str | None, default: int) -> int | None:
    """``--samples N|all``: a positive count, or None for the whole test split
    (also when ``text`` is None and the config's ``default`` is 0)."""
    if text is None:
        return default or None
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--samples must be a positive integer or 'all', got '{text}'")
    return n


def parse_targets(text: str, allow_zero: bool = False) -> list[float]:
    """``--targets 0.3,0.5``: the target sparsities, each in (0, 1); with
    ``allow_zero`` also 0 (a QAT setting's dense reference)."""
    try:
        targets = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--targets expects comma-separated numbers like 0.3,0.5,0.75, got '{text}'") from None
    bad = [t for t in targets if not (0 < t < 1 or (allow_zero and t == 0))]
    if not targets or bad:
        where = "in (0, 1), or 0 for the dense QAT references" if allow_zero else "in (0, 1)"
        raise ConfigError(f"--targets: every target sparsity must be {where}, got '{text}'")
    return targets


def parse_bits(text: str) -> list[int | None]:
    """``--bits float,6``: bit settings, None for float."""
    out: list[int | None] = []
    for item in (t.strip() for t in text.split(",")):
        if item == "float":
            out.append(None)
        elif item.isdigit() and 2 <= int(item) <= 32:
            out.append(int(item))
        else:
            raise ConfigError(f"--bits expects comma-separated bit settings, each 'float' or an integer from 2 "
                              f"to 32, like float,8,6; got '{text}'")
    if len(set(out)) != len(out):
        raise ConfigError(f"--bits lists a setting twice: '{text}'")
    return out
