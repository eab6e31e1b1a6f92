"""Shared pieces for the service tests: a real uvicorn server on 127.0.0.1 (in a thread, on a
free port), the stand-in `ColourDetector` as a `Detector`, and pictures made on the spot.

Fixtures: `app` (module scope: the app under test; override it in a test module to serve
another one) and `server_url` (module scope: "http://127.0.0.1:PORT" of a running server of
`app`, started once per module). `run_server(app)` starts one for a single test.
"""
from __future__ import annotations

import io
import math
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from tests.predict.conftest import ColourDetector, picture  # noqa: F401  (picture: re-exported for the tests)

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")

from rtdetr.api import Detector  # noqa: E402
from rtdetr.serve import create_app  # noqa: E402

# The test app's network size: small, so the stand-in runs fast; pictures of this size reach
# the network unresized, so the stand-in's boxes are the drawn ones exactly.
IMGSZ = 160


class RankedColourDetector(ColourDetector):
    """`ColourDetector` whose colours score differently (`scores`: colour -> score), so that a
    picture's detections have a known order."""

    def __init__(self, scores: dict[str, float], **kw):
        super().__init__(**kw)
        self.scores = scores

    def forward(self, x, num_decoder_layers=None):
        out = super().forward(x, num_decoder_layers)
        logits = out["pred_logits"]
        for q, colour in enumerate(self.labels):
            found = logits[:, q] > -20            # the class entry of a colour that is in the picture
            logits[:, q][found] = math.log(self.scores[colour] / (1 - self.scores[colour]))
        return out


# Scores of the ranked stand-in: every colour its own, so top-k and conf cut at known places.
RANKED = {"red": 0.9, "green": 0.7, "blue": 0.5, "white": 0.3}


def colour_detector(scores: dict[str, float] | None = None, **kw) -> Detector:
    """`ColourDetector` (boxes pure red / green / blue / white pixels as classes 0..3 of COCO's
    names: person, bicycle, car, motorcycle) behind the `Detector` facade; with `scores`, the
    ranked one."""
    net = RankedColourDetector(scores, **kw) if scores else ColourDetector(**kw)
    net.cfg.task = "detect"
    return Detector(net)


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(img: np.ndarray, orientation: int | None = None) -> bytes:
    """A JPEG of `img`; with `orientation` its EXIF tag says how to turn the stored pixels upright."""
    buf = io.BytesIO()
    pil = Image.fromarray(img)
    if orientation is None:
        pil.save(buf, "JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        pil.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@contextmanager
def run_server(app, timeout: float = 20.0):
    """`app` served by uvicorn in a background thread on a free port of 127.0.0.1; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@pytest.fixture(scope="module")
def app():
    """The app under test (override in a module for another one): the stand-in at IMGSZ."""
    return create_app(colour_detector(), imgsz=IMGSZ, max_upload_mb=1, max_megapixels=10)


@pytest.fixture(scope="module")
def server_url(app):
    with run_server(app) as url:
        yield url


def raw_http(url: str, head: str, body_parts: list[bytes] = ()) -> tuple[int, bytes]:
    """Send a hand-made request (`head`: request line and headers, without the blank line) and
    the body parts; returns the response's status and body. For what no HTTP client sends: a
    Content-Length that the body does not have, a chunked body stopped half-way."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n\r\n")
        for part in body_parts:
            s.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30  # until the server closes
