"""Bad and odd inputs: each either works (converted, rotated) or fails with one line naming the file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from rtdetr.predict import ImageReadError, Predictor, PredictWarning, SourceError, predict, read_image
from tests.predict.conftest import BLUE, RED, assert_box, picture, save_picture

BOX = (40, 30, 120, 90)         # a rectangle in a 200 x 150 picture


@pytest.fixture
def good(tmp_path):
    return save_picture(tmp_path / "good.png", picture(200, 150, BOX))


def one_line_error(path, match) -> str:
    with pytest.raises(ImageReadError, match=match) as e:
        read_image(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


# --- broken files: one line naming the file ------------------------------------------------

def test_missing_file(tmp_path):
    one_line_error(tmp_path / "nope.jpg", "no such file")


def test_missing_path_as_a_source(tmp_path, detector):
    with pytest.raises(SourceError, match=r"nope\.jpg: no such file or folder"):
        predict(detector, tmp_path / "nope.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert one_line_error(tmp_path / "empty.jpg", "empty file") == f"{tmp_path / 'empty.jpg'}: empty file (0 bytes)"


def test_random_bytes_named_jpg(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(os.urandom(2000))
    one_line_error(tmp_path / "noise.jpg", "not an image")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path, good, suffix):
    whole = save_picture(tmp_path / f"whole{suffix}", np.asarray(Image.open(good).convert("RGB")))
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    one_line_error(cut, "truncated or corrupt")


def test_a_broken_single_file_raises_through_predict(tmp_path, detector):
    (tmp_path / "noise.png").write_bytes(os.urandom(100))
    with pytest.raises(ImageReadError, match=r"noise\.png: not an image"):
        predict(detector, tmp_path / "noise.png")


def test_folder_run_goes_on_and_reports_each_failure(tmp_path, detector, good):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(os.urandom(500))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    save_picture(tmp_path / "z_good.jpg", picture(200, 150, BOX), quality=95)
    (tmp_path / "notes.txt").write_text("not a picture, and not looked at")
    with pytest.warns(PredictWarning, match="3 input") as w:
        results = predict(detector, tmp_path, imgsz=160)
    assert [os.path.basename(r.path) for r in results] == ["good.png", "z_good.jpg"]
    assert all(r.class_names[0] == "person" for r in results)
    assert sorted(os.path.basename(f.path) for f in results.failures) == ["cut.png", "empty.jpg", "noise.jpg"]
    assert all("\n" not in f.message and f.message.startswith(f.path) for f in results.failures)
    assert str(w[0].message).count("\n") == 3          # a header and one line per failure


# --- odd but valid pictures: converted ------------------------------------------------------

def predict_one(detector, path, **kw):
    (result,) = predict(detector, path, imgsz=160, **kw)
    return result


def test_grayscale(tmp_path, detector):
    gray = np.zeros((150, 200), np.uint8)
    gray[30:90, 40:120] = 255
    path = save_picture(tmp_path / "gray.png", gray)
    assert Image.open(path).mode == "L"
    r = predict_one(detector, path)
    assert r.orig_img.shape == (150, 200, 3)
    assert r.class_names == ["motorcycle"]          # the white detector's class: 3
    assert_box(r.boxes.xyxy[0], BOX, tol=2)


def test_rgba_drops_alpha_as_the_official_code(tmp_path, detector):
    rgba = np.zeros((150, 200, 4), np.uint8)
    rgba[..., 2] = 255                              # blue, fully transparent
    rgba[30:90, 40:120] = (255, 0, 0, 255)         # an opaque red rectangle
    path = save_picture(tmp_path / "rgba.png", rgba)
    r = predict_one(detector, path)
    assert tuple(r.orig_img[0, 0]) == BLUE          # Image.convert("RGB"): the hidden colour stays
    assert_box(r.boxes.xyxy[r.labels.tolist().index(0)], BOX, tol=2)
    (from_array,) = predict(detector, rgba, imgsz=160)
    assert (from_array.orig_img == r.orig_img).all()


def test_16_bit_png_is_scaled_not_clipped(tmp_path, detector):
    deep = np.full((150, 200), 20000, np.uint16)    # 20000/65535: dark gray (clipping would make it white)
    deep[30:90, 40:120] = 65535
    path = save_picture(tmp_path / "deep.png", deep)
    assert Image.open(path).mode.startswith("I")
    r = predict_one(detector, path)
    assert r.orig_img[0, 0, 0] == round(20000 / 257)
    assert r.class_names == ["motorcycle"]
    assert_box(r.boxes.xyxy[0], BOX, tol=2)


def test_cmyk_jpeg(tmp_path, detector):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(picture(200, 150, BOX)).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    r = predict_one(detector, path)
    assert np.abs(r.orig_img[60, 80].astype(int) - RED).max() < 40
    assert r.class_names == ["person"]
    assert_box(r.boxes.xyxy[0], BOX, tol=2)


def test_palette_with_transparency(tmp_path, detector):
    img = Image.fromarray(picture(200, 150, BOX)).convert("P")
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)                  # palette entry 0 (black) is transparent
    r = predict_one(detector, path)
    assert tuple(r.orig_img[0, 0]) == (0, 0, 0)
    assert r.class_names == ["person"]
    assert_box(r.boxes.xyxy[0], BOX, tol=2)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation(tmp_path, detector, orientation):
    """Stored 200 x 150 with the rectangle at BOX; shown rotated, and the box lands on the shown picture."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save_picture(tmp_path / f"exif{orientation}.jpg", picture(200, 150, BOX), exif=exif, quality=95)
    r = predict_one(detector, path)
    x1, y1, x2, y2 = BOX
    w, h = 200, 150
    expected = {3: (w - x2, h - y2, w - x1, h - y1),     # 180 degrees
                6: (h - y2, x1, h - y1, x2),             # 90 degrees clockwise
                8: (y1, w - x2, y2, w - x1)}[orientation]  # 90 degrees counter-clockwise
    assert r.orig_shape == ((150, 200) if orientation == 3 else (200, 150))
    assert_box(r.boxes.xyxy[0], expected, tol=2)
    (unrotated,) = predict(detector, path, imgsz=160, exif=False)
    assert unrotated.orig_shape == (150, 200)
    assert_box(unrotated.boxes.xyxy[0], BOX, tol=2)


# --- in-memory pictures -----------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 64, 64), np.uint8), r"channels-last.*pass a torch tensor"),
    (np.full((64, 64, 3), 2.0, np.float32), r"float images must hold values in \[0, 1\]"),
    (np.zeros((64, 64, 3), np.int64), "unsupported pixel type int64"),
    (torch.zeros(64, 64, 3), r"expected a tensor \[3, H, W\]"),
])
def test_bad_arrays_and_tensors(detector, bad, match):
    with pytest.raises(ImageReadError, match=match):
        predict(detector, bad, imgsz=64)


def test_unsupported_source_type(detector):
    with pytest.raises(SourceError, match="cannot predict on a dict"):
        predict(detector, {"image": 1})


def test_urls_are_refused_with_a_hint(detector):
    with pytest.raises(SourceError, match="download the file first"):
        predict(detector, "https://example.com/cat.jpg")


def test_empty_folder_and_unmatched_glob(tmp_path, detector):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="no images or videos in this folder"):
        predict(detector, tmp_path)
    with pytest.raises(SourceError, match="no images or videos match"):
        predict(detector, str(tmp_path / "*.jpg"))


def test_a_list_with_a_missing_file_goes_on(tmp_path, detector, good):
    with pytest.warns(PredictWarning):
        results = predict(detector, [good, tmp_path / "gone.jpg"], imgsz=160)
    assert len(results) == 1 and results.failures[0].message == f"{tmp_path / 'gone.jpg'}: no such file or folder"


def test_half_on_cpu_warns_and_runs_in_float32(detector):
    with pytest.warns(PredictWarning, match="half precision needs a CUDA device"):
        p = Predictor(detector, half=True, imgsz=64)
    p(picture(64, 64, (8, 8, 24, 24)))
    assert detector.calls[-1]["dtype"] == torch.float32
