"""POST /v1/detect on a running server: exact boxes from the stand-in detector, both ways of
uploading, EXIF, the per-request parameters, and micro-batching of requests that arrive together."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from rtdetr.serve import create_app
from tests.predict.conftest import BLUE, GREEN, WHITE, assert_box, picture
from tests.serve.conftest import IMGSZ, RANKED, colour_detector, jpeg_bytes, png_bytes, run_server

# Red, green, blue and white rectangles on one IMGSZ x IMGSZ picture: the network sees it unresized.
BOXES = {"red": (20, 30, 100, 90), "green": (110, 10, 150, 40), "blue": (10, 100, 60, 150), "white": (120, 120, 140, 158)}


def four_colours(w: int = IMGSZ, h: int = IMGSZ):
    img = picture(w, h, BOXES["red"])
    for colour, value in (("green", GREEN), ("blue", BLUE), ("white", WHITE)):
        x1, y1, x2, y2 = BOXES[colour]
        img[y1:y2, x1:x2] = value
    return img


@pytest.fixture(scope="module")
def app():
    """The ranked stand-in (red 0.9, green 0.7, blue 0.5, white 0.3), default conf 0.25."""
    return create_app(colour_detector(RANKED), imgsz=IMGSZ, default_conf=0.25, max_batch=8, batch_wait_ms=5)


def post(url: str, data: bytes, **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/detect", files={"image": ("x.png", data, "image/png")}, data=params, timeout=30)


def by_class(body: dict) -> dict[str, dict]:
    return {d["class_name"]: d for d in body["detections"]}


def test_multipart_upload_gives_the_drawn_boxes(server_url):
    r = post(server_url, png_bytes(four_colours()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "colour-detector", "task": "detect", "imgsz": [IMGSZ, IMGSZ],
                             "classes": body["model"]["classes"]}
    assert body["model"]["classes"][:4] == ["person", "bicycle", "car", "motorcycle"]
    assert body["image"] == {"width": IMGSZ, "height": IMGSZ}
    found = by_class(body)
    assert list(found) == ["person", "bicycle", "car", "motorcycle"]       # by score: red, green, blue, white
    for (colour, box), name in zip(BOXES.items(), found):
        d = found[name]
        assert d["box"] == list(map(float, box))   # unresized: the stand-in's pixel box, exactly
        assert d["score"] == pytest.approx(RANKED[colour], abs=1e-6)   # float32 sigmoid of its logit
        assert d["label"] == body["model"]["classes"].index(name)
    assert body["time_ms"]["inference"] > 0 and body["time_ms"]["total"] >= body["time_ms"]["inference"]


def test_raw_body_equals_multipart(server_url):
    data = png_bytes(four_colours())
    raw = httpx.post(f"{server_url}/v1/detect", content=data, headers={"content-type": "image/png"}, timeout=30)
    octets = httpx.post(f"{server_url}/v1/detect", content=data,
                        headers={"content-type": "application/octet-stream"}, timeout=30)
    multipart = post(server_url, data)
    assert raw.status_code == octets.status_code == 200
    assert raw.json()["detections"] == octets.json()["detections"] == multipart.json()["detections"]


def test_boxes_are_in_the_original_pixels(server_url):
    """A 480x320 picture reaches the network at 160x160 (3x, 2x smaller): the boxes come back in
    its own pixels, within one network pixel (3 px across, 2 px down: the resize blurs edges)."""
    img = picture(480, 320, (60, 40, 300, 200))
    r = post(server_url, png_bytes(img))
    (d,) = r.json()["detections"]
    assert r.json()["image"] == {"width": 480, "height": 320}
    assert_box(d["box"], (60, 40, 300, 200), tol=3)


def test_exif_orientation_is_applied(server_url, tmp_path):
    """A JPEG stored on its side with EXIF orientation 6 comes back upright, as `rtdetr predict` reads it."""
    upright = picture(IMGSZ, 96, (20, 10, 100, 60))
    data = jpeg_bytes(np.rot90(upright).copy(), orientation=6)   # stored turned 90° left: 6 turns it right
    r = post(server_url, data)
    body = r.json()
    assert body["image"] == {"width": IMGSZ, "height": 96}
    (d,) = body["detections"]
    assert_box(d["box"], (20, 10, 100, 60), tol=2)  # JPEG edges and the 96 -> 160 resize: about a pixel
    # The same bytes as a file through the Detector's own predict: the very same numbers.
    path = tmp_path / "turned.jpg"
    path.write_bytes(data)
    (expected,) = colour_detector(RANKED).predict(path, imgsz=IMGSZ, conf=0.25)
    assert d["box"] == expected.boxes.xyxy[0].tolist() and d["score"] == float(expected.scores[0])


@pytest.mark.parametrize("params, expected", [
    ({"conf": "0.6"}, ["person", "bicycle"]),                       # green 0.7 kept, blue 0.5 not
    ({"conf": "0.2"}, ["person", "bicycle", "car", "motorcycle"]),
    ({"conf": "0", "max_det": "6"}, ["person", "bicycle", "car", "motorcycle", "*", "*"]),   # 0 keeps max_det
    ({"max_det": "1"}, ["person"]),                                 # the best one
    ({"classes": "car,motorcycle"}, ["car", "motorcycle"]),        # by name...
    ({"classes": "1, 3"}, ["bicycle", "motorcycle"]),              # ...or by id
    ({"classes": "Car", "conf": "0.4"}, ["car"]),
])
def test_parameters(server_url, params, expected):
    data = png_bytes(four_colours())
    as_form = post(server_url, data, **params)
    as_query = httpx.post(f"{server_url}/v1/detect", params=params, content=data,
                          headers={"content-type": "image/png"}, timeout=30)
    names = [d["class_name"] for d in as_form.json()["detections"]]
    assert [n if i < 4 else "*" for i, n in enumerate(names)] == expected     # past 4: the ~0 scores
    assert as_query.json()["detections"] == as_form.json()["detections"]


def test_imgsz_per_request(server_url, app):
    net = app.state.service.detector.model
    r = post(server_url, png_bytes(picture(320, 320, (40, 60, 200, 180))), imgsz="320")
    assert net.calls[-1]["shape"] == (1, 3, 320, 320)
    assert r.json()["detections"][0]["box"] == [40.0, 60.0, 200.0, 180.0]   # unresized at 320: exact
    post(server_url, png_bytes(picture(320, 320, (40, 60, 200, 180))), imgsz="64,128")
    assert net.calls[-1]["shape"] == (1, 3, 64, 128)


def test_model_health_docs_and_page(server_url):
    info = httpx.get(f"{server_url}/v1/model").json()
    assert info["name"] == "colour-detector" and info["runtime"] == "torch" and info["precision"] == "fp32"
    assert info["max_batch"] == 8 and info["imgsz"] == [IMGSZ, IMGSZ] and len(info["classes"]) == 80
    assert httpx.get(f"{server_url}/healthz").json() == {"status": "ok"}
    assert "/v1/detect" in httpx.get(f"{server_url}/openapi.json").json()["paths"]
    assert httpx.get(f"{server_url}/docs").status_code == 200
    page = httpx.get(f"{server_url}/")
    assert page.status_code in (200, 404)  # the page is another part's file; absent, a JSON 404
    if page.status_code == 404:
        assert "error" in page.json()


def test_requests_arriving_together_run_in_one_model_call():
    """Four requests with different conf / classes / max_det: one forward pass of 4 pictures,
    and each response filtered by its own parameters."""
    det = colour_detector(RANKED)
    app = create_app(det, imgsz=IMGSZ, max_batch=4, batch_wait_ms=2000, default_conf=0.25)
    data = png_bytes(four_colours())
    asks = [{"conf": "0.8"}, {"max_det": "2"}, {"classes": "car"}, {"conf": "0.1", "classes": "motorcycle,person"}]
    with run_server(app) as url, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda p: post(url, data, **p), asks))
    found = [[d["class_name"] for d in r.json()["detections"]] for r in responses]
    assert found == [["person"], ["person", "bicycle"], ["car"], ["person", "motorcycle"]]
    assert [c["shape"] for c in det.model.calls] == [(4, 3, IMGSZ, IMGSZ)]    # full at 4: no 2 s wait
    assert app.state.batcher.batch_sizes == {4: 1}


def test_different_sizes_are_not_batched_together():
    det = colour_detector()
    app = create_app(det, imgsz=IMGSZ, max_batch=4, batch_wait_ms=1000)
    data = png_bytes(picture(IMGSZ, IMGSZ, BOXES["red"]))
    with run_server(app) as url, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda s: post(url, data, imgsz=s), ["160", "320", "160", "320"]))
    assert all(r.json()["detections"][0]["box"] == list(map(float, BOXES["red"])) for r in responses)
    assert sorted(c["shape"] for c in det.model.calls) == [(2, 3, 160, 160), (2, 3, 320, 320)]
