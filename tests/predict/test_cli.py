"""`rtdetr predict`: a folder of good and broken pictures, a video, a glob; the weights options."""
from __future__ import annotations

import json
import os

import pytest
import torch

import rtdetr
from rtdetr.cli import app as cli
from rtdetr.cli import predict as predict_cli
from tests.predict.conftest import ColourDetector, moving_square_frames, picture, save_picture, write_video


def run_cli(argv: list[str], monkeypatch) -> int:
    """`rtdetr ARGV` through the real `rtdetr.cli.app.main`."""
    return cli.main(argv)


@pytest.fixture
def fake_model(monkeypatch):
    d = ColourDetector()
    monkeypatch.setattr(predict_cli, "load_cli_model", lambda model, weights, device, options=None: d)
    return d


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "photos"
    save_picture(folder / "000000000001.jpg", picture(200, 150, (40, 30, 120, 90)), quality=95)
    save_picture(folder / "000000000002.png", picture(100, 300, (10, 10, 50, 50)))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "noise.png").write_bytes(os.urandom(300))
    data = (folder / "000000000002.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    return folder


def test_folder_of_good_and_broken_pictures(tmp_path, mixed_folder, fake_model, monkeypatch, capsys):
    runs = tmp_path / "runs"
    rc = run_cli(["predict", "--weights", "w.pth", str(mixed_folder), "--imgsz", "160", "--project", str(runs)],
                 monkeypatch)
    out, err = capsys.readouterr()
    assert rc == 1                                       # finished, but some inputs failed
    run = runs / "exp"
    assert sorted(p.name for p in run.iterdir()) == \
        ["000000000001.jpg", "000000000002.png", "failures.txt", "images.json", "predictions.json"]
    failures = (run / "failures.txt").read_text().splitlines()
    assert failures == [f"{mixed_folder / 'empty.jpg'}: empty file (0 bytes)",
                        f"{mixed_folder / 'noise.png'}: not an image, or in a format Pillow cannot read",
                        f"{mixed_folder / 'truncated.png'}: truncated or corrupt image (image file is truncated)"]
    assert "3 input(s) could not be read" in out and all(f"  {f}" in out for f in failures)
    assert "2 image(s)" in out and "2 detection(s): 2 person" in out and f"saved to {run}" in out
    assert "5/5" in err                                  # the progress bar
    preds = json.loads((run / "predictions.json").read_text())
    assert sorted(p["image_id"] for p in preds) == [1, 2] and {p["category_id"] for p in preds} == {1}
    assert "Traceback" not in out + err


def test_video(tmp_path, fake_model, monkeypatch, capsys):
    frames, _ = moving_square_frames(3)
    video = write_video(tmp_path / "clip.mp4", frames)
    assert run_cli(["predict", "--weights", "w.pth", str(video), "--imgsz", "128", "--out", str(tmp_path / "o")],
                   monkeypatch) == 0
    out = capsys.readouterr().out
    assert "1 video(s) (3 frames)" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["clip.mp4", "images.json", "predictions.json"]
    assert len(json.loads((tmp_path / "o" / "predictions.json").read_text())) == 3


def test_glob_and_several_sources(tmp_path, mixed_folder, fake_model, monkeypatch, capsys):
    frames, _ = moving_square_frames(2)
    video = write_video(tmp_path / "clip.mp4", frames)
    rc = run_cli(["predict", "-w", "w.pth", str(mixed_folder / "*.jpg"), str(video), "--imgsz", "128",
                  "--conf", "0.5", "--decoder-layers", "2", "--batch", "2", "-o", str(tmp_path / "o"), "-q"],
                 monkeypatch)
    out, err = capsys.readouterr()
    assert rc == 1                                          # empty.jpg matched the glob
    assert "1 image(s), 1 video(s) (2 frames)" in out and "img/s" not in err
    assert {c["layers"] for c in fake_model.calls} == {2}
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == \
        ["000000000001.jpg", "clip.mp4", "failures.txt", "images.json", "predictions.json"]


@pytest.mark.parametrize("argv, message", [
    (["predict", "-w", "w.pth", "nowhere/"], "rtdetr: error: nowhere: no such file or folder"),
    (["predict", "-w", "w.pth", "x.jpg", "--imgsz", "100"], "rtdetr: error: imgsz must be a positive multiple of 32"),
    (["predict", "-w", "w.pth", "--imgsz", "64", "x.jpg"], "rtdetr: error: x.jpg: no such file or folder"),
    (["predict", "x.jpg"], "rtdetr: error: which model? give --weights FILE"),
])
def test_errors_are_one_line(tmp_path, argv, message, monkeypatch, capsys):
    if "-w" in argv:
        monkeypatch.setattr(predict_cli, "load_cli_model", lambda model, weights, device, options=None: ColourDetector())
    monkeypatch.chdir(tmp_path)
    assert run_cli(argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message)


def test_a_broken_single_picture_is_one_line(tmp_path, fake_model, monkeypatch, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert run_cli(["predict", "-w", "w.pth", str(tmp_path / "bad.jpg"), "-o", str(tmp_path / "o")], monkeypatch) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"rtdetr: error: {tmp_path / 'bad.jpg'}: truncated or corrupt image (Truncated File Read)"


# --- which model --weights names --------------------------------------------------------------

@pytest.fixture(scope="module")
def r18_state():
    torch.manual_seed(0)
    return rtdetr.load_model("rtdetrv2_r18vd", weights=None).state_dict()


def test_official_release_file_is_recognised_by_its_name(tmp_path, r18_state):
    path = tmp_path / "rtdetrv2_r18vd_120e_coco_rerun_48.1.pth"
    torch.save({"ema": {"module": r18_state}}, path)
    model = predict_cli.load_cli_model(None, str(path), torch.device("cpu"))
    assert model.cfg.name == "rtdetrv2_r18vd" and model.class_names is None
    renamed = tmp_path / "mine.pth"
    path.rename(renamed)
    with pytest.raises(ValueError, match=r"mine\.pth: cannot tell which architecture .* add --model NAME"):
        predict_cli.load_cli_model(None, str(renamed), torch.device("cpu"))
    assert predict_cli.load_cli_model("rtdetrv2_r18vd", str(renamed), torch.device("cpu")).cfg.name == "rtdetrv2_r18vd"


def test_own_checkpoint_with_class_names_end_to_end(tmp_path, monkeypatch, capsys):
    """A checkpoint saved by rtdetr carries its architecture and class names: --weights alone is enough."""
    torch.manual_seed(0)
    net = rtdetr.load_model("rtdetrv2_r18vd", weights=None, num_classes=2)
    ckpt = rtdetr.save_checkpoint(net, tmp_path / "pets.pt", class_names=["cat", "dog"])
    save_picture(tmp_path / "in" / "a.jpg", picture(200, 150, (40, 30, 120, 90)))
    rc = run_cli(["predict", "--weights", str(ckpt), str(tmp_path / "in"), "--imgsz", "128", "--conf", "0",
                  "--max-det", "5", "-o", str(tmp_path / "o")], monkeypatch)
    assert rc == 0
    meta = json.loads((tmp_path / "o" / "images.json").read_text())
    assert meta["categories"] == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    preds = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert len(preds) == 5 and {p["category_id"] for p in preds} <= {0, 1}
    assert "rtdetrv2_r18vd (3/3 decoder layers) on cpu at 128x128" in capsys.readouterr().err


def test_random_weights_for_a_zoo_model(tmp_path, monkeypatch, capsys):
    save_picture(tmp_path / "a.png", picture(64, 64, (8, 8, 40, 40)))
    rc = run_cli(["predict", "--model", "rtdetrv2_r18vd", "--weights", "none", str(tmp_path / "a.png"),
                  "--imgsz", "128,160", "--decoder-layers", "1", "--half", "-o", str(tmp_path / "o")], monkeypatch)
    assert rc == 0
    err = capsys.readouterr().err
    assert "(1/3 decoder layers) on cpu at 128x160" in err
    assert "--half needs a CUDA device" in err


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_closed_pipe_is_not_an_error(unbuffered):
    """`rtdetr models | head -1`: the reader leaves early; no traceback, exit status 0, whether
    the output is written line by line or at the end."""
    import subprocess
    import sys
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    proc = subprocess.Popen([sys.executable, "-m", "rtdetr.cli", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # gone before the first line: every write hits the closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
