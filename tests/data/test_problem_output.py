"""What a user sees of a data set's fixed problems: the summary alone, without Python's
`file:line: DatasetWarning:` prefix and the library's source line echoed under it."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from rtdetr.data import DatasetWarning, load_dataset, make_synthetic_dataset

SUMMARY = ("rtdetr: {root}/annotations/instances_train.json: 1 annotation problem fixed while loading split 'train':\n"
           "  1 box partly outside the image, clipped (1 file: train_00000.png)\n")


@pytest.fixture
def damaged(tmp_path):
    """A data set whose first train box runs past its 64-pixel image's right edge."""
    root = make_synthetic_dataset(tmp_path / "ds", num_train=2, num_val=1, image_size=(64, 64))
    path = root / "annotations" / "instances_train.json"
    d = json.loads(path.read_text())
    d["annotations"][0]["bbox"][0] = 60.0
    path.write_text(json.dumps(d))
    return root


def test_the_summary_is_printed_alone(damaged):
    """In a fresh interpreter, as a user runs it: stderr is exactly the summary."""
    code = f"from rtdetr.data import load_dataset; load_dataset({str(damaged)!r}, 'train')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == SUMMARY.format(root=damaged)
    assert "DatasetWarning" not in done.stderr and "load_dataset(" not in done.stderr


def test_it_is_still_a_warning_and_others_keep_their_format(damaged):
    with pytest.warns(DatasetWarning) as caught:  # filterable and capturable, as before
        load_dataset(damaged, "train")
    w = next(w for w in caught if issubclass(w.category, DatasetWarning))
    # What Python's display prints for a record (warnings._formatwarnmsg calls formatwarning).
    assert warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) == SUMMARY.format(root=damaged)
    other = warnings.formatwarning(UserWarning("x"), UserWarning, "f.py", 3, "y = 1")
    assert other == "f.py:3: UserWarning: x\n  y = 1\n"
