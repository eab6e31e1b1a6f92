"""The page of `rtdetr serve` (serve/static/index.html) in a real headless Chromium, driven by
Playwright against a real uvicorn server whose detector's right answers are known.

The detector is the prediction tests' `ColourDetector` (it boxes the pure red / green / blue
pixels of its input as classes 0 / 1 / 2), ranked: one score per colour, so the confidence
slider has something to separate. The picture is made here, so the boxes the page must draw are
known before it runs.

Chromium is Debian's (`apt-get install chromium`, scripts/setup.sh does it as root): Playwright
never downloads a browser here. The tests skip only where no Chromium or no Playwright is installed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.predict.conftest import BLUE, GREEN, RED, picture, save_picture
from tests.serve.conftest import colour_detector

sync_api = pytest.importorskip("playwright.sync_api", reason="the page tests need Playwright (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("the page tests need a Chromium executable (apt-get install chromium)", allow_module_level=True)

from rtdetr.core.masks import encode_rle  # noqa: E402
from rtdetr.serve import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
W, H = 480, 360
# Disjoint rectangles (x1, y1, x2, y2: pixels x1..x2-1) with room above each for its label.
RECTS = {"red": (40, 40, 200, 150), "green": (260, 70, 440, 200), "blue": (90, 240, 400, 330)}
FILL = {"red": RED, "green": GREEN, "blue": BLUE}
# The stand-in's score per colour (white is not in the picture) and its class per colour.
SCORES = {"red": 0.9, "green": 0.6, "blue": 0.3, "white": 0.95}
COLOUR = {0: "red", 1: "green", 2: "blue"}


def shapes() -> np.ndarray:
    img = picture(W, H, RECTS["red"], RED)
    for colour in ("green", "blue"):
        x1, y1, x2, y2 = RECTS[colour]
        img[y1:y2, x1:x2] = FILL[colour]
    return img


@pytest.fixture(scope="module")
def app():
    """The service (tests/serve/conftest.py's `server_url` runs it) at its default network size,
    640: the 480x360 picture is stretched to it, as a user's photo would be."""
    return create_app(colour_detector(SCORES), batch_wait_ms=0)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        # Debian's Chromium, never one Playwright would download; as root it needs --no-sandbox.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server_url + "/")
    sync_api.expect(pg.locator("#model")).to_contain_text("colour-detector")
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def upload(page, path: Path):
    """Choose `path` in the page's file input; returns the server's answer, once the page has drawn it."""
    # The page marks the canvas "loading" as the file is chosen; wait for the answer, then the drawing.
    with page.expect_response(lambda r: "/v1/detect" in r.url, timeout=30_000) as response:
        page.set_input_files("#file", str(path))
    page.wait_for_selector("#canvas[data-state=drawn], #canvas[data-state=error]", state="attached", timeout=30_000)
    return response.value.json()


def set_slider(page, value: float) -> None:
    page.locator("#conf").fill(str(value))   # Playwright sets the range input and fires `input`


def pixel(page, x: int, y: int) -> list[int]:
    return page.evaluate("([x, y]) => Array.from(document.getElementById('canvas')"
                         ".getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))", [x, y])


def keep_screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = page.screenshot(path=str(tmp_path / name))
    folder = Path(os.environ.get("RTDETR_TEST_ARTIFACTS") or REPO / "runs" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(shot)
    return folder / name


def test_page_draws_the_detections(page, tmp_path):
    img = shapes()
    path = save_picture(tmp_path / "shapes.png", img)
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/v1/detect" in r.url else None)
    answer = upload(page, path)
    assert json.loads(page.text_content("#json")) == answer      # the answer shown as it came
    drawn = page.evaluate("window.rtdetrDrawn")
    # Slider at its start value (0.5): red 0.9 and green 0.6 drawn, blue 0.3 fetched but not drawn.
    assert page.input_value("#conf") == "0.5"
    classes = answer["model"]["classes"]
    assert sorted(d["label"] for d in answer["detections"]) == [0, 1, 2]
    assert all(d["class_name"] == classes[d["label"]] for d in answer["detections"])
    kept = [{k: d[k] for k in ("box", "score", "label", "class_name")} for d in answer["detections"]
            if d["score"] >= 0.5]
    assert drawn == kept                                        # exactly what the server said
    assert page.get_attribute("#canvas", "data-count") == "2"
    assert answer["image"] == {"width": W, "height": H}

    # Against the truth: the server stretches the picture bilinearly to the network's input
    # (upscaling: no smoothing), and the detector's edges fall on whole network pixels, so each
    # edge is off by less than one network pixel, i.e. max(W / net_w, H / net_h) picture pixels.
    net_h, net_w = answer["model"]["imgsz"]
    tol = max(W / net_w, H / net_h)
    for d in answer["detections"]:
        colour = COLOUR[d["label"]]
        assert d["score"] == pytest.approx(SCORES[colour], abs=1e-5)
        assert np.allclose(d["box"], RECTS[colour], rtol=0, atol=tol), f"{colour}: {d['box']} != {RECTS[colour]} (±{tol} px)"

    # The canvas really shows it: inside a box the picture's own pixels (PNG decoding is exact);
    # on the box's outline (a 2 px stroke centred on x1 covers column floor(x1) whole, likewise
    # x2 and y2) one colour, the same on its left, right and bottom edges, not the picture's
    # pixel there, and another for the other class.
    edge_colours = {}
    for d in drawn:
        x1, y1, x2, y2 = d["box"]
        ymid = int((y1 + y2) / 2)
        assert pixel(page, int(x1) + 8, ymid) == img[ymid, int(x1) + 8].tolist()
        edge = pixel(page, int(x1), ymid)
        assert edge != img[ymid, int(x1)].tolist(), f"{COLOUR[d['label']]}'s box edge was not drawn"
        assert edge == pixel(page, int(x2), ymid) == pixel(page, int((x1 + x2) / 2), int(y2))
        edge_colours[d["label"]] = tuple(edge)
    assert len(set(edge_colours.values())) == len(edge_colours) == 2

    model = page.text_content("#model")     # /v1/model's name, size and runtime
    assert model.startswith("colour-detector") and "640\u00d7640" in model and "torch" in model
    latency = page.text_content("#latency")
    assert "ms in the browser" in latency and "inference" in latency
    assert 0 < float(page.get_attribute("#latency", "data-roundtrip-ms")) < 30_000
    assert len(requests) == 1 and "conf=0.05" in requests[0]   # fetched once, at the slider's minimum
    keep_screenshot(page, tmp_path, "serve_page.png")


def test_slider_refilters_without_a_request(page, tmp_path):
    upload(page, save_picture(tmp_path / "shapes.png", shapes()))
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    # Thresholds away from the scores (float32 sigmoids of the stand-in's logits are within 1e-7).
    for value, expected in [(0.25, {"red", "green", "blue"}), (0.61, {"red"}), (0.95, set()), (0.55, {"red", "green"})]:
        set_slider(page, value)
        drawn = page.evaluate("window.rtdetrDrawn")
        assert {COLOUR[d["label"]] for d in drawn} == expected, f"slider at {value}"
        assert all(d["score"] >= value for d in drawn)
        assert page.get_attribute("#canvas", "data-count") == str(len(expected))
        assert page.text_content("#conf-value") == f"{value:.2f}"
    assert requests == []                                       # filtered in the page, no new request
    # With nothing drawn above 0.95, the red box's edge shows the picture again.
    set_slider(page, 0.95)
    assert pixel(page, RECTS["red"][0], 95) == list(RED)


def test_server_error_is_shown(page, tmp_path):
    upload(page, save_picture(tmp_path / "shapes.png", shapes()))     # something drawn before
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture\n")
    answer = upload(page, bad)
    error = page.text_content("#error")
    assert page.locator("#error").is_visible()
    # The server's own one-line error (415: Pillow cannot identify it), with its status.
    assert error == f"The server answered 415: {answer['error']}" and "not an image" in error
    assert json.loads(page.text_content("#json")) == answer
    # Nothing drawn, and the previous picture's drawing is gone (the browser cannot show this one).
    assert page.evaluate("window.rtdetrDrawn") == [] and page.get_attribute("#canvas", "data-count") == "0"
    assert page.evaluate("document.getElementById('canvas').width") == 0
    upload(page, save_picture(tmp_path / "again.png", shapes()))      # a good picture clears it
    assert page.text_content("#error") == "" and page.get_attribute("#canvas", "data-count") == "2"


def test_drop_zone(page, tmp_path):
    """A picture dropped on the zone (a real drop event carrying the file) is detected like a chosen one."""
    data = list(save_picture(tmp_path / "shapes.png", shapes()).read_bytes())
    with page.expect_response(lambda r: "/v1/detect" in r.url, timeout=30_000):
        page.evaluate("""bytes => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
        }""", data)
    page.wait_for_selector("#canvas[data-state=drawn]", timeout=30_000)
    assert sorted(COLOUR[d["label"]] for d in page.evaluate("window.rtdetrDrawn")) == ["green", "red"]


def disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def test_rle_decoder_matches_coco(page):
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((300, 400), bool),      # one run of 120000: 4 groups
             disc(60, 90, 40, 25, 18), rng.random((33, 47)) < 0.5,   # short runs, deltas of both signs
             np.pad(np.ones((2, 3), bool), ((0, 5), (0, 4)))]        # starting with a run of ones
    for m in masks:
        rle = encode_rle(m)[0]
        decoded = page.evaluate("rle => Array.from(window.rtdetr.decodeRLE(rle))", rle)
        # COCO's order is column-major: pixel (x, y) at x * h + y.
        assert np.array_equal(np.array(decoded, bool), m.ravel(order="F")), f"mask {m.shape}: {rle['counts'][:40]}"


def test_masks_are_drawn(page, tmp_path):
    """A segmentation answer (the colour detector has no masks: the answer is made here, its mask
    coded by COCO's encoder) is drawn as a translucent fill exactly over the mask's pixels."""
    img = np.full((H, W, 3), 100, np.uint8)
    mask = disc(H, W, 240, 180, 90)
    answer = {"model": {"name": "colour-detector", "task": "segment", "imgsz": [640, 640], "classes": ["person"]},
              "image": {"width": W, "height": H},
              "detections": [{"box": [150.0, 90.0, 331.0, 271.0], "score": 0.8, "label": 0, "class_name": "person",
                              "mask": encode_rle(mask)[0]}],
              "time_ms": {"inference": 1.0, "total": 2.0}}
    page.route("**/v1/detect*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=json.dumps(answer)))
    upload(page, save_picture(tmp_path / "grey.png", img))
    assert page.get_attribute("#canvas", "data-count") == "1"
    inside, outside, corner = pixel(page, 240, 180), pixel(page, 160, 100), pixel(page, 10, 10)
    assert outside == [100, 100, 100] == corner   # not tinted in the box outside the disc, nor elsewhere
    # Inside, translucent: between the grey and the class colour (the opaque outline's, at x 150)
    # in every channel, and neither of them.
    colour = pixel(page, 150, 180)
    assert colour != [100, 100, 100] and inside not in ([100, 100, 100], colour)
    assert all(min(100, c) <= v <= max(100, c) for v, c in zip(inside, colour)), (inside, colour)
    # The fill follows the mask pixel for pixel along a row through the disc's edge (x 160..189 at
    # y 120, clear of the box's outline at x 150; the disc starts at x 173 there).
    row = page.evaluate("() => Array.from(document.getElementById('canvas').getContext('2d')"
                        ".getImageData(160, 120, 30, 1).data)")
    tinted = [row[4 * i: 4 * i + 3] != [100, 100, 100] for i in range(30)]
    assert tinted == mask[120, 160:190].tolist() and any(tinted) and not all(tinted)


def test_undecodable_mask_is_an_error_line(page, tmp_path):
    """An answer whose mask does not cover its picture (RLE of 10x10 pixels, said to be H x W)."""
    bad = {"size": [H, W], "counts": encode_rle(np.ones((10, 10), bool))[0]["counts"]}
    answer = {"model": {"name": "colour-detector", "task": "segment", "imgsz": [640, 640], "classes": ["person"]},
              "image": {"width": W, "height": H},
              "detections": [{"box": [1.0, 1.0, 5.0, 5.0], "score": 0.8, "label": 0, "class_name": "person",
                              "mask": bad}], "time_ms": {"inference": 1.0, "total": 2.0}}
    page.route("**/v1/detect*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=json.dumps(answer)))
    upload(page, save_picture(tmp_path / "shapes.png", shapes()))
    assert page.text_content("#error") == ("A mask in the server's answer could not be decoded: "
                                           f"RLE covers 100 pixels, its size {H}x{W} has {H * W}")
    assert page.get_attribute("#canvas", "data-count") == "0"
