"""A segmentation model served: each detection carries its mask as COCO RLE, the same as
`Detector.predict`'s `Result.masks.rle` on the same file."""
from __future__ import annotations

import httpx
import pytest

import rtdetr
from rtdetr.serve import create_app
from tests.predict.conftest import picture
from tests.serve.conftest import png_bytes

IMGSZ = 128   # small; the demo's 100 queries need 100 encoder cells (128: 16² + 8² + 4² = 336)


@pytest.fixture(scope="module")
def detector():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return rtdetr.load_model("demo_seg", weights=None)


@pytest.fixture(scope="module")
def app(detector):
    return create_app(detector, imgsz=IMGSZ)


def test_masks_are_predicts_rle(server_url, detector, tmp_path):
    img = picture(200, 150, (40, 30, 120, 90))
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(img))
    r = httpx.post(f"{server_url}/v1/detect", files={"image": ("x.png", path.read_bytes(), "image/png")},
                   data={"conf": "0", "max_det": "5"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["task"] == "segment" and len(body["detections"]) == 5
    (expected,) = detector.predict(path, imgsz=IMGSZ, conf=0.0, max_det=5)
    for d, rle, label in zip(body["detections"], expected.masks.rle, expected.labels.tolist(), strict=True):
        assert d["label"] == label
        assert d["mask"] == {"size": [150, 200], "counts": rle["counts"]}   # RLE of the same pixels
