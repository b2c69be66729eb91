"""What `pip install .` puts into site-packages: one top-level package, hepprune,
with every module of the checkout's folders mapped into it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT

FOLDERS = {"hepprune/core": "hepprune/core", "data": "hepprune/data", "ptq": "hepprune/ptq",
           "prune": "hepprune/prune", "slurm": "hepprune/slurm"}


def test_the_wheel_holds_only_hepprune_and_every_module(tmp_path):
    # A clean copy: setuptools would reuse a stale build/ directory of the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info",
                                                              "__pycache__", ".pytest_cache"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("hepprune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"hepprune", wheel.name.split("-py")[0] + ".dist-info"}
    expected = {f"{into}/{p.relative_to(ROOT / folder).as_posix()}"
                for folder, into in FOLDERS.items() for p in (ROOT / folder).rglob("*.py")}
    missing = sorted(expected - set(names))
    assert not missing, missing  # e.g. a new subpackage not listed in setup.cfg
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "hepprune-train = hepprune.ptq.trainModel:cli" in entry_points
    assert all(line.split("=")[1].strip().startswith("hepprune.") for line in entry_points.splitlines()
               if "=" in line)
