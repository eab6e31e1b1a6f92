"""`rtdetr serve` as a real process: a saved checkpoint served over HTTP gives what
`Detector.predict` (what `rtdetr predict` runs) gives on the same file; the missing extra is one line."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import rtdetr
from rtdetr.cli import app as cli
from tests.predict.conftest import picture
from tests.serve.conftest import jpeg_bytes

IMGSZ = 160   # small: the random demo model runs in milliseconds
ASK = {"conf": "0.0", "max_det": "20"}   # random weights score low: conf 0 keeps the top 20, a fixed set


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return rtdetr.load_model("demo", weights=None).save(tmp_path_factory.mktemp("ckpt") / "demo.pt")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    img = picture(300, 200, (40, 30, 200, 150))
    img[120:190, 220:290] = (30, 160, 220)
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    path.write_bytes(jpeg_bytes(img))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], timeout: float = 120) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rtdetr.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rtdetr serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"rtdetr serve did not answer in {timeout} s")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()   # uvicorn's graceful shutdown on SIGTERM
    out, _ = proc.communicate(timeout=30)
    return out


def expected(checkpoint: Path, photo: Path) -> list[dict]:
    (r,) = rtdetr.load_model(checkpoint).predict(photo, imgsz=IMGSZ, conf=0.0, max_det=20)
    return [{"box": b, "score": s, "label": lab} for b, s, lab in
            zip(r.boxes.xyxy.tolist(), r.scores.tolist(), r.labels.tolist(), strict=True)]


def assert_same(served: list[dict], truth: list[dict]) -> None:
    """Same labels, scores and boxes. Tolerance: the service may run a picture in a batch of
    several, where oneDNN may take other kernels than at batch 1 and sum float32 in another
    order: ~1e-6 relative, so 1e-3 px on boxes of a few hundred pixels and 1e-5 on scores."""
    assert [d["label"] for d in served] == [t["label"] for t in truth]
    for d, t in zip(served, truth, strict=True):
        assert d["score"] == pytest.approx(t["score"], abs=1e-5)
        assert d["box"] == pytest.approx(t["box"], abs=1e-3)


def test_serve_gives_what_predict_gives(checkpoint, photo):
    proc, url = start_serve(["--weights", str(checkpoint), "--imgsz", str(IMGSZ)])
    try:
        r = httpx.post(f"{url}/v1/detect", files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")},
                       data=ASK, timeout=60)
        info = httpx.get(f"{url}/v1/model").json()
    finally:
        log = stop(proc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "demo", "task": "detect", "imgsz": [IMGSZ, IMGSZ],
                             "classes": ["class0", "class1", "class2"]}
    assert body["image"] == {"width": 300, "height": 200} and len(body["detections"]) == 20
    assert_same(body["detections"], expected(checkpoint, photo))
    assert info["runtime"] == "torch" and info["max_batch"] == 8
    assert "Traceback" not in log and "Uvicorn running on" in log


def test_two_workers(checkpoint, photo):
    """--workers 2: two processes, each building its app from the settings in the environment."""
    proc, url = start_serve(["--weights", str(checkpoint), "--imgsz", str(IMGSZ), "--workers", "2"])
    try:
        answers = [httpx.post(f"{url}/v1/detect", params=ASK, content=photo.read_bytes(),
                              headers={"content-type": "image/jpeg"}, timeout=60) for _ in range(4)]
    finally:
        log = stop(proc)
    truth = expected(checkpoint, photo)
    for r in answers:
        assert r.status_code == 200, r.text
        assert_same(r.json()["detections"], truth)
    assert log.count("Started server process") == 2, log


def test_bad_weights_is_one_line(tmp_path, capsys):
    assert cli.main(["serve", "--weights", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtdetr: error: ") and "missing.pt" in err and "\n" not in err


def test_without_the_serve_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)   # `import uvicorn` now fails as if not installed
    assert cli.main(["serve", "--weights", "best.pt"]) == 2
    assert capsys.readouterr().err == "rtdetr: error: rtdetr serve needs the serve extra: pip install 'rtdetr[serve]'\n"
