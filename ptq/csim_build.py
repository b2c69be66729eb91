"""The C-simulation library of an hls4ml project, compiled once per distinct firmware.

hls4ml's ``compile`` runs the project's ``build_lib.sh``: two ``g++ -O3``
compilations, one after the other, about 7 s for a small MLP. Outside
synthesis the firmware reads its weights at run time from
``firmware/weights/*.txt`` (the weight headers only declare the arrays), so
the library depends on the network's structure and fixed-point types, not on
its weight values. Built with a relative weights directory (``weights``, found
because the simulation runs in ``firmware/``, as hls4ml's own ``predict``
does), the library of two projects that differ only in their weights, or in
where they live, is the same. It is cached under the hash of what the
compiler sees: both translation units preprocessed with the exact flags, and
the compiler's version. Re-running an analysis or a bit-width scan, or
simulating the pruned models of one architecture at one precision, compiles
each distinct firmware once; the two units compile in parallel.

The cache is ``$HEPPRUNE_CACHE_DIR/csim`` (default ``~/.cache/hepprune/csim``);
it keeps the :data:`KEEP` most recently used libraries. Deleting it is always safe.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from hepprune.core.errors import HepPruneError

log = logging.getLogger(__name__)

CXX = "g++"
KEEP = 400  # libraries kept in the cache (~0.1 to 1 MB each)
WEIGHTS_DIR = '"weights"'  # relative: the simulation runs in the project's firmware/ directory


class CompileError(HepPruneError):
    """g++ refused an hls4ml project."""


def cache_dir() -> Path:
    root = os.environ.get("HEPPRUNE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hepprune")
    return Path(root) / "csim"


def _accepts(flag: str) -> bool:
    probe = subprocess.run([CXX, "-Werror", "-fsyntax-only", flag, "-xc++", "-", "-o", os.devnull],
                           input="", capture_output=True, text=True)
    return probe.returncode == 0


@functools.cache
def _flags() -> tuple[tuple[str, ...], str]:
    """build_lib.sh's flags (C++23 where the compiler has it, -fno-gnu-unique
    where it exists) and the compiler's identity, probed once per process."""
    if shutil.which(CXX) is None:
        raise CompileError(f"{CXX} not found on PATH; the hls4ml C simulation needs a C++ compiler "
                           "(apt-get install g++), or pass --no-hls")
    flags = ["-O3", "-fPIC", "-std=c++23" if _accepts("-std=c++23") else "-std=c++11"]
    if _accepts("-fno-gnu-unique"):
        flags.append("-fno-gnu-unique")
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout
    return tuple(flags), f"{version}{platform.machine()}"


def _units(project_dir: Path, project: str) -> list[Path]:
    return [project_dir / "firmware" / f"{project}.cpp", project_dir / f"{project}_bridge.cpp"]


def _key(project_dir: Path, project: str, flags: tuple[str, ...], compiler: str) -> str:
    """Hash of both translation units as the compiler sees them (comments and
    file paths gone), the flags and the compiler."""
    digest = hashlib.sha256(f"{compiler}\n{' '.join(flags)}\n".encode())
    for unit in _units(project_dir, project):
        pre = subprocess.run([CXX, "-E", "-P", *flags, "-Ifirmware/ap_types/", f"-DWEIGHTS_DIR={WEIGHTS_DIR}",
                              str(unit.relative_to(project_dir))], cwd=project_dir, capture_output=True)
        if pre.returncode != 0:
            raise CompileError(f"cannot preprocess {unit}: {_first_error(pre.stderr.decode(errors='replace'))}")
        digest.update(pre.stdout)
    return digest.hexdigest()[:32]


def _first_error(text: str) -> str:
    lines = [line for line in text.splitlines() if "error" in line]
    return (lines or text.splitlines() or ["no output"])[0].strip()


def _build(project_dir: Path, project: str, flags: tuple[str, ...], out: Path) -> None:
    """build_lib.sh's three steps, the two compilations side by side."""
    with tempfile.TemporaryDirectory(prefix="build-", dir=out.parent) as tmp:
        objects = [Path(tmp) / f"{unit.stem}.o" for unit in _units(project_dir, project)]
        procs = [subprocess.Popen([CXX, *flags, "-Ifirmware/ap_types/", f"-DWEIGHTS_DIR={WEIGHTS_DIR}", "-c",
                                   str(unit.relative_to(project_dir)), "-o", str(obj)], cwd=project_dir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for unit, obj in zip(_units(project_dir, project), objects, strict=True)]
        errors = [p.communicate()[1].decode(errors="replace") for p in procs]
        failed = [(p, e) for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
        if failed:
            (project_dir / "build.log").write_text("\n".join(errors))
            raise CompileError(f"g++ cannot compile {project_dir}: {_first_error(failed[0][1])} "
                               f"(full output in {project_dir / 'build.log'})")
        lib = Path(tmp) / out.name
        link = subprocess.run([CXX, *flags, "-shared", *map(str, objects), "-o", str(lib)], capture_output=True,
                              text=True)
        if link.returncode != 0:
            raise CompileError(f"g++ cannot link {project_dir}: {_first_error(link.stderr)}")
        os.replace(lib, out)  # atomic: a concurrent build of the same key writes the same library


def _trim(cache: Path) -> None:
    libs = sorted(cache.glob("*.so"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in libs[KEEP:]:
        old.unlink(missing_ok=True)


def compile_graph(graph) -> Path:
    """Write ``graph``'s project and give it its C-simulation library,
    ``firmware/<project>-<stamp>.so``, from the cache or freshly compiled.
    Libraries of earlier stamps in the project are removed."""
    graph.write()
    cfg = graph.config
    project_dir = Path(cfg.get_output_dir()).resolve()
    project = cfg.get_project_name()
    flags, compiler = _flags()
    key = _key(project_dir, project, flags, compiler)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"{key}.so"
    if cached.is_file():
        os.utime(cached)
        log.debug("%s: C-simulation library from the cache (%s)", project_dir, key)
    else:
        _build(project_dir, project, flags, cached)
        _trim(cache)
    lib = project_dir / "firmware" / f"{project}-{cfg.get_config_value('Stamp')}.so"
    for stale in lib.parent.glob(f"{project}-*.so"):
        stale.unlink()
    shutil.copyfile(cached, lib)
    # As hls4ml's own compile does, so that graph.predict and graph.trace work too.
    graph._top_function_lib = ctypes.cdll.LoadLibrary(str(lib))
    return lib
