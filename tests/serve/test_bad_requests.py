"""Bad requests against a running server: each is a 4xx `{"error": "<one line>"}`, a model error
a 500 of that form, and the service answers the next request as before."""
from __future__ import annotations

import io
import os

import httpx
import pytest
from PIL import Image

from rtdetr.api import Detector
from rtdetr.serve import create_app
from tests.predict.conftest import BLUE, ColourDetector, picture
from tests.serve.conftest import IMGSZ, png_bytes, raw_http

LIMIT_MB = 1


class FailingOnBlue(ColourDetector):
    """The stand-in, failing (as a model can: out of memory, a runtime error) on pictures with blue."""

    def forward(self, x, num_decoder_layers=None):
        if ((x[:, 2] > 0.5) & (x[:, 0] < 0.5) & (x[:, 1] < 0.5)).any():
            raise RuntimeError("out of memory: tried to allocate 12 GiB\n(a second line nobody needs)")
        return super().forward(x, num_decoder_layers)


@pytest.fixture(scope="module")
def app():
    net = FailingOnBlue()
    net.cfg.task = "detect"
    return create_app(Detector(net), imgsz=IMGSZ, max_upload_mb=LIMIT_MB, max_megapixels=10)


GOOD = png_bytes(picture(IMGSZ, IMGSZ, (20, 30, 100, 90)))


def detect(url: str, content: bytes = GOOD, kind: str = "image/png", **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/detect", content=content, params=params, headers={"content-type": kind}, timeout=30)


def assert_error(r: httpx.Response, status: int, *words: str) -> str:
    """The response is `status` with a one-line JSON error containing `words`; the next request works."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert set(r.json()) == {"error"} and "\n" not in message and "Traceback" not in message
    assert all(w in message for w in words), message
    return message


@pytest.fixture(autouse=True)
def still_serving(server_url):
    """After each bad request the service still finds the red box."""
    yield
    r = detect(server_url)
    assert r.status_code == 200 and r.json()["detections"][0]["box"] == [20.0, 30.0, 100.0, 90.0]


def big_png_header(w: int, h: int) -> bytes:
    """A bilevel PNG of w x h (small on disk), cut short after its first bytes: its header is
    whole, its pixels are not, so a refusal of its size shows the pixels were never decoded."""
    buf = io.BytesIO()
    Image.new("1", (w, h)).save(buf, "PNG")
    return buf.getvalue()[:200]


@pytest.mark.parametrize("case, content, kind, status, words", [
    ("empty body", b"", "image/png", 400, ["empty body"]),
    ("not an image", os.urandom(2000), "application/octet-stream", 415, ["not an image"]),
    ("text", b"hello", "text/plain", 415, ["text/plain is not a picture"]),
    ("truncated", GOOD[: len(GOOD) // 2], "image/png", 400, ["truncated or corrupt image"]),
    ("50 megapixels", big_png_header(10_000, 5_000), "image/png", 413, ["10000x5000", "50.0 megapixels", "limit of 10"]),
    # curl --data-binary @x.png without -H 'Content-Type: image/png' sends this type:
    ("url-encoded picture", GOOD, "application/x-www-form-urlencoded", 415, ["is not a picture", "-F image=@x.jpg"]),
    ("url-encoded text field", b"image=abc", "application/x-www-form-urlencoded", 422, ["image:", "Expected UploadFile"]),
])
def test_bad_pictures(server_url, case, content, kind, status, words):
    assert_error(detect(server_url, content, kind), status, *words)


def test_multipart_without_the_image_field(server_url):
    r = httpx.post(f"{server_url}/v1/detect", files={"picture": ("x.png", GOOD, "image/png")}, timeout=30)
    assert_error(r, 400, "without the field 'image'")


@pytest.mark.parametrize("params, words", [
    ({"conf": "abc"}, ["conf:", "valid number", "'abc'"]),
    ({"conf": "1.5"}, ["conf:", "less than or equal to 1"]),
    ({"conf": "-0.1"}, ["conf:", "greater than or equal to 0"]),
    ({"max_det": "two"}, ["max_det:", "valid integer"]),
    ({"max_det": "0"}, ["max_det:", "greater than or equal to 1"]),
    ({"imgsz": "100"}, ["imgsz", "multiple of 32", "try 96"]),
    ({"imgsz": "big"}, ["imgsz", "give one size"]),
    ({"classes": "unicorn"}, ["classes: unknown class 'unicorn'", "known: person, bicycle, car", "toothbrush"]),
    ({"classes": "person,80"}, ["classes: unknown class id 80 (ids are 0..79)"]),
])
def test_bad_parameters(server_url, params, words):
    assert_error(detect(server_url, **params), 422, *words)


def test_bad_form_field(server_url):
    r = httpx.post(f"{server_url}/v1/detect", files={"image": ("x.png", GOOD, "image/png")}, data={"conf": "abc"},
                   timeout=30)
    assert_error(r, 422, "conf:", "valid number")


def test_body_over_the_limit_is_refused_from_content_length(server_url):
    """A declared 5 GB body: refused at once, without a byte of it sent."""
    status, body = raw_http(server_url, "POST /v1/detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                                        f"Content-Length: {5 * 2**30}")
    assert status == 413 and b'"error":"request body over this service\'s limit of 1 MB"' in body


def test_body_over_the_limit_is_refused_while_streaming(server_url):
    """A chunked body (no Content-Length) is counted as it arrives and refused past the limit."""
    part = b"x" * 65536
    chunks = [f"{len(part):x}\r\n".encode() + part + b"\r\n"] * (LIMIT_MB * 16 + 1)   # one chunk over
    status, body = raw_http(server_url, "POST /v1/detect HTTP/1.1\r\nHost: test\r\n"
                                        "Content-Type: image/png\r\nTransfer-Encoding: chunked", chunks)
    assert status == 413 and b"limit of 1 MB" in body


def test_streaming_under_the_limit_works(server_url):
    r = httpx.post(f"{server_url}/v1/detect", content=iter([GOOD[:100], GOOD[100:]]),
                   headers={"content-type": "image/png"}, timeout=30)
    assert r.status_code == 200 and "content-length" not in r.request.headers
    assert r.json()["detections"][0]["box"] == [20.0, 30.0, 100.0, 90.0]


def test_model_error_is_a_500_and_the_next_request_works(server_url):
    r = detect(server_url, png_bytes(picture(IMGSZ, IMGSZ, (10, 10, 50, 50), colour=BLUE)))
    assert_error(r, 500, "model error: out of memory: tried to allocate 12 GiB")
    assert "second line" not in r.text


def test_unknown_route(server_url):
    assert_error(httpx.get(f"{server_url}/v2/detect"), 404, "Not Found")
