"""The folders are the architecture: imports go one way, core <- data <- ptq <- prune <- slurm,
and no module imports itself back through others."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

LAYERS = ("core", "data", "ptq", "prune", "rtl", "slurm")  # each may import only the ones before it
FOLDERS = {"core": ROOT / "hepprune" / "core", "data": ROOT / "data", "ptq": ROOT / "ptq",
           "prune": ROOT / "prune", "slurm": ROOT / "slurm"}


def _modules() -> dict[str, Path]:
    mods = {"hepprune": ROOT / "hepprune" / "__init__.py"}
    for layer, folder in FOLDERS.items():
        for path in sorted(folder.glob("*.py")):
            name = f"hepprune.{layer}" + ("" if path.stem == "__init__" else f".{path.stem}")
            mods[name] = path
    return mods


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """hepprune modules imported anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.startswith("hepprune."):
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def test_imports_go_one_way():
    upward = [f"{m} imports {d}" for m, deps in _graph().items() if m != "hepprune"
              for d in deps if d != "hepprune" and _layer(d) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The two tests above can fail: a core module importing a stage, and two
    modules importing each other, are both reported."""
    core = tmp_path / "core"
    core.mkdir()
    (core / "a.py").write_text("from hepprune.ptq import b\n")
    ptq = tmp_path / "ptq"
    ptq.mkdir()
    (ptq / "b.py").write_text("def f():\n    from hepprune.core import a\n")
    monkeypatch.setitem(FOLDERS, "core", core)
    monkeypatch.setitem(FOLDERS, "ptq", ptq)
    graph = _graph()
    assert graph["hepprune.core.a"] == {"hepprune.ptq.b"} and graph["hepprune.ptq.b"] == {"hepprune.core.a"}
    with pytest.raises(AssertionError, match=re.escape("hepprune.core.a imports hepprune.ptq.b")):
        test_imports_go_one_way()
    with pytest.raises(AssertionError, match=re.escape("hepprune.core.a -> hepprune.ptq.b -> hepprune.core.a")):
        test_no_import_cycle()


def test_only_hepprune_is_importable_at_the_top():
    """The design card's folders are reached as hepprune.data, hepprune.ptq, ...; from
    outside the checkout, `import data` finds nothing of this project."""
    code = textwrap.dedent(f"""
        import importlib.util, sys
        for name in ("data", "ptq", "prune", "slurm"):
            spec = importlib.util.find_spec(name)
            assert spec is None or not str(spec.origin).startswith({str(ROOT)!r}), (name, spec.origin)
        import hepprune.data.loader, hepprune.ptq.training, hepprune.prune.pruning, hepprune.slurm.submit
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


CLIS = ("hepprune.ptq.trainModel", "hepprune.prune.train_model_prune", "hepprune.prune.analyze_prune",
        "hepprune.prune.sensitivity_scan", "hepprune.ptq.bitwidth_scan", "hepprune.ptq.summarize_run",
        "hepprune.slurm.submit", "hepprune.data.make_dataset", "hepprune.data.validate_dataset")


def test_commands_check_their_input_before_loading_tensorflow_or_hls4ml():
    """A bad option or config is refused in a second, not after TensorFlow's start-up:
    importing a command loads none of the heavy libraries."""
    code = textwrap.dedent(f"""
        import sys
        for name in {CLIS!r}:
            __import__(name)
        print(sorted(h for h in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "hls4ml",
                                 "matplotlib", "uproot") if h in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def test_every_import_inside_a_function_says_what_it_defers():
    """ruff (PLC0415) refuses an import inside a function in library code unless
    the line carries ``# noqa: PLC0415``; this holds each of those to its reason:
    ``- deferred: <what it keeps from loading early>`` (TensorFlow, tfmot,
    hls4ml, uproot, matplotlib)."""
    folders = [*FOLDERS.values(), ROOT / "hepprune", ROOT / "examples"]
    files = sorted({p for folder in folders for p in folder.rglob("*.py")})
    marked = [(path, n, line) for path in files for n, line in enumerate(path.read_text().splitlines(), 1)
              if "PLC0415" in line]
    assert marked, "no deferred import found: is the check looking in the right folders?"
    bare = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path, n, line in marked
            if not re.search(r"# noqa: [A-Z0-9, ]*PLC0415 - deferred: \S", line)]
    assert not bare, "say what the import defers, as `# noqa: PLC0415 - deferred: TensorFlow ...`:\n" + "\n".join(bare)


def test_tfmot_and_tflite_run_without_keras_3():
    """Every stage that reads a model imports tfmot, whose registry tries Keras 3's
    ``keras.src.engine`` and falls back to no base layer; the analysis's TFLite
    converter imports Keras 3 to check the model is not one. The backend makes
    both tries fail at once instead of after ~2 s of importing Keras 3: the
    registry ends the same, pruning and conversion work, and ``keras`` is
    importable afterwards."""
    code = textwrap.dedent("""
        import importlib.util, sys
        from hepprune.core.backend import keras, tfmot
        from hepprune.prune.analysis import tflite_sizes
        from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
        sparsity = tfmot.sparsity.keras
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
        print("keras" in sys.modules, prune_registry.base_layer, type(wrapped.layers[0]).__name__,
              min(tflite_sizes(model)) > 500, "keras" in sys.modules, importlib.util.find_spec("keras") is not None)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "None", "PruneLowMagnitude", "True", "False", "True"], proc.stdout
