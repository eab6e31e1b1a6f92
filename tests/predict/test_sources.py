"""Every kind of source gives the same detections, in the original picture's pixels, colours as RGB."""
from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image

from rtdetr.predict import PredictWarning, SourceError, predict
from tests.predict.conftest import BLUE, assert_box, moving_square_frames, picture, save_picture, write_video

W, H, BOX = 320, 192, (64, 48, 192, 144)    # a wide picture: the network input (160 x 160) squashes it
TOL = 2 * W / 160                            # two network pixels, in picture pixels


@pytest.fixture
def rgb():
    return picture(W, H, BOX)


def check(result, box=BOX, label=0):
    assert result.orig_shape == (H, W)
    assert result.labels.tolist() == [label]
    assert_box(result.boxes.xyxy[0], box, TOL)


def test_image_file(tmp_path, detector, rgb):
    path = save_picture(tmp_path / "a.png", rgb)
    (r,) = predict(detector, path, imgsz=160)
    check(r)
    assert r.path == str(path) and r.frame is None
    assert detector.calls[0]["shape"] == (1, 3, 160, 160)
    assert 0.0 <= detector.calls[0]["min"] and detector.calls[0]["max"] <= 1.0


def test_path_as_str(tmp_path, detector, rgb):
    path = save_picture(tmp_path / "a.png", rgb)
    (r,) = predict(detector, str(path), imgsz=160)
    check(r)


def test_folder_sorted_and_not_recursive(tmp_path, detector, rgb):
    for name in ("b.jpg", "a.png", "sub/c.png"):
        save_picture(tmp_path / name, rgb, **({"quality": 95} if name.endswith(".jpg") else {}))
    results = predict(detector, tmp_path, imgsz=160)
    assert [r.path for r in results] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    for r in results:
        check(r)


def test_glob_and_recursive_glob(tmp_path, detector, rgb):
    for name in ("a.png", "b.png", "c.jpg", "sub/d.png"):
        save_picture(tmp_path / name, rgb)
    assert [r.path for r in predict(detector, str(tmp_path / "*.png"), imgsz=160)] == \
        [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    deep = predict(detector, str(tmp_path / "**" / "*.png"), imgsz=160)
    assert [r.path for r in deep] == [str(tmp_path / n) for n in ("a.png", "b.png", "sub/d.png")]


def test_pil_image(detector, rgb):
    (r,) = predict(detector, Image.fromarray(rgb), imgsz=160)
    check(r)
    assert r.path is None and r.name == "image0.jpg"


def test_numpy_array_is_rgb(detector, rgb):
    (r,) = predict(detector, rgb, imgsz=160)
    check(r, label=0)                                 # red stays red
    (flipped,) = predict(detector, rgb[..., ::-1], imgsz=160)   # what OpenCV's BGR would look like
    check(flipped, label=2)                           # ... is blue: arrays are read as RGB


@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_tensor_chw(detector, rgb, kind):
    t = torch.from_numpy(rgb).permute(2, 0, 1)
    (r,) = predict(detector, t if kind == "uint8" else t.float() / 255, imgsz=160)
    check(r)


def test_tensor_batch_and_list(detector, rgb):
    blue = picture(W, H, BOX, colour=BLUE)
    batch = torch.stack([torch.from_numpy(x).permute(2, 0, 1).float() / 255 for x in (rgb, blue)])
    results = predict(detector, batch, imgsz=160, batch=2)
    assert [r.labels.tolist() for r in results] == [[0], [2]]
    assert detector.calls[-1]["shape"] == (2, 3, 160, 160)
    mixed = predict(detector, [rgb, Image.fromarray(blue)], imgsz=160)
    assert [r.labels.tolist() for r in mixed] == [[0], [2]]
    assert [r.index for r in mixed] == [0, 1]


def test_video_frame_by_frame(tmp_path, detector):
    frames, boxes = moving_square_frames(4)
    path = write_video(tmp_path / "clip.mp4", frames)
    results = predict(detector, path, imgsz=128, batch=3)
    assert [r.frame for r in results] == [0, 1, 2, 3]
    assert all(r.path == str(path) and r.orig_shape == (96, 128) for r in results)
    for r, box in zip(results, boxes):
        assert r.labels.tolist() == [0]
        assert_box(r.boxes.xyxy[0], box, tol=3)
    assert results[2].name == "clip_000002.jpg"


def test_video_stream_is_a_generator(tmp_path, detector):
    frames, _ = moving_square_frames(3)
    path = write_video(tmp_path / "clip.mp4", frames)
    gen = predict(detector, path, imgsz=128, stream=True)
    assert not isinstance(gen, list)
    first = next(gen)
    assert first.frame == 0 and len(detector.calls) == 1     # lazily, one frame at a time
    assert [r.frame for r in gen] == [1, 2]
    with pytest.raises(SourceError):                         # a missing source fails at once, not when iterated
        predict(detector, tmp_path / "gone.mp4", stream=True)


def test_rotated_phone_video_is_turned_upright(tmp_path, detector):
    frames, boxes = moving_square_frames(2)
    path = write_video(tmp_path / "phone.mp4", frames, rotation=-90)   # shown turned 90 degrees clockwise
    results = predict(detector, path, imgsz=128)
    x1, y1, x2, y2 = boxes[0]
    h = 96
    assert results[0].orig_shape == (128, 96)
    assert_box(results[0].boxes.xyxy[0], (h - y2, x1, h - y1, x2), tol=3)


def test_folder_with_images_and_a_video(tmp_path, detector, rgb):
    save_picture(tmp_path / "a.png", rgb)
    frames, _ = moving_square_frames(2)
    write_video(tmp_path / "b.mp4", frames)
    results = predict(detector, tmp_path, imgsz=128, batch=2)
    assert [(r.path.rsplit("/", 1)[-1], r.frame) for r in results] == [("a.png", None), ("b.mp4", 0), ("b.mp4", 1)]


def test_broken_video_in_a_folder(tmp_path, detector, rgb):
    pytest.importorskip("av")
    save_picture(tmp_path / "a.png", rgb)
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    with pytest.warns(PredictWarning):
        results = predict(detector, tmp_path, imgsz=160)
    assert len(results) == 1
    (failure,) = results.failures
    assert failure.message.startswith(f"{tmp_path / 'bad.mp4'}: not a readable video")


def test_without_pyav_a_video_fails_with_an_install_hint(tmp_path, detector, rgb, monkeypatch):
    (tmp_path / "b.mp4").write_bytes(b"\x00" * 100)    # never opened: the hint comes first
    save_picture(tmp_path / "a.png", rgb)
    monkeypatch.setitem(sys.modules, "av", None)       # import av -> ImportError
    with pytest.warns(PredictWarning):
        results = predict(detector, tmp_path, imgsz=160)
    assert [r.path for r in results] == [str(tmp_path / "a.png")]
    assert results.failures[0].message == \
        f"{tmp_path / 'b.mp4'}: reading videos needs PyAV: pip install 'rtdetr[video]' (PyAV)"


def test_progress_bar_on_folders_not_on_single_images(tmp_path, detector, rgb, capsys):
    save_picture(tmp_path / "a.png", rgb)
    save_picture(tmp_path / "b.png", rgb)
    predict(detector, tmp_path / "a.png", imgsz=160)
    assert "img/s" not in capsys.readouterr().err
    predict(detector, tmp_path, imgsz=160)
    assert "2/2" in capsys.readouterr().err
