"""The package's layers: imports only go down (the import-linter contract in pyproject.toml), and
the command line starts without the heavy libraries."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}  # before the editable install's path
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(config)], cwd=src, env=env,
                          capture_output=True, text=True)


def test_the_layers_contract_is_kept():
    out = lint(ROOT / "src", ROOT / "pyproject.toml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("module, bad_import", [
    ("models/zoo.py", "from rtdetr.train import trainer"),       # a model reaching up to training
    ("core/images.py", "import rtdetr.data.images"),              # the bottom layer importing a higher one
    ("runtime/backend.py", "from rtdetr.api import Detector"),    # a runtime reaching the facade
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, bad_import):
    """A copy of the package with one upward import added fails the check, and the report names it."""
    shutil.copytree(ROOT / "src" / "rtdetr", tmp_path / "rtdetr", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "rtdetr" / module
    path.write_text(path.read_text() + f"\n\ndef _upward():\n    {bad_import}\n")
    out = lint(tmp_path, ROOT / "pyproject.toml")
    assert out.returncode == 1 and "BROKEN" in out.stdout
    assert "rtdetr." + module.removesuffix(".py").replace("/", ".") in out.stdout


@pytest.mark.parametrize("what, code", [
    ("import rtdetr and the command line's parser", "import rtdetr, rtdetr.cli; rtdetr.cli.build_parser()"),
    ("the model API", "import rtdetr; rtdetr.load_model; rtdetr.create_model; rtdetr.Detector"),
])
def test_start_up_loads_no_heavy_module(what, code):
    """Neither `import rtdetr` nor `rtdetr --help` imports PyTorch, and the model API imports no
    training, SciPy or deployment module."""
    heavy = ("scipy", "onnx", "onnxruntime", "openvino", "rtdetr.train.trainer", "rtdetr.train.criterion")
    if "cli" in code:
        heavy += ("torch",)
    probe = f"import sys; {code}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{what} loaded {out.stdout.strip()}"
