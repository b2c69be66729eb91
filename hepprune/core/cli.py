"""The thin shared layer under every command: logging set-up and one-line errors.

Every CLI's ``main`` raises :class:`~data.errors.HepPruneError` for bad input;
:func:`run` turns that, and an ``OSError`` on a path (an output directory that
is a file, no permission, a full disk), into ``error: <message>`` on stderr
and exit status 2, so a user never sees a deep TensorFlow traceback for a
mistake they can fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from hepprune.core.errors import HepPruneError

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


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and map user errors to a one-line message and exit code 2."""
    setup_logging(verbose=bool(os.environ.get("HEPPRUNE_DEBUG")))
    try:
        return int(main(argv) or 0)
    except HepPruneError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except OSError as exc:
        # An output path that is a file, a directory without write permission, a full disk:
        # the user's to fix, so one line. HEPPRUNE_DEBUG=1 shows where it happened.
        if os.environ.get("HEPPRUNE_DEBUG"):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"error: {exc.strerror or exc}{where}\n")
        return EXIT_BAD_INPUT
    except MemoryError:
        sys.stderr.write("error: out of memory; use a smaller model, batch size or --samples\n")
        return EXIT_BAD_INPUT
    except Exception as exc:
        # TensorFlow's allocation failure, named without importing TensorFlow here.
        if type(exc).__name__ != "ResourceExhaustedError" or os.environ.get("HEPPRUNE_DEBUG"):
            raise
        first = re.sub(r"\{\{.*?\}\}\s*", "", str(exc)).strip().split("\n")[0]
        sys.stderr.write(f"error: TensorFlow ran out of memory ({first[:200]}); use a smaller model or batch size\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other bad input."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")
