"""Tests for `rtdetr.core.hub` against a local HTTP server on 127.0.0.1 (no other address is used)."""
from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rtdetr.core import hub
from rtdetr.core.hub import WeightsDownloadError, cache_dir, download

DATA = bytes((i * 7 + i // 251) % 256 for i in range(300_000))  # ~300 kB of non-periodic bytes
NAME = "rtdetrv2_test.pth"


class Server:
    """Serves `DATA` at `/<NAME>`; records every request as (path, Range header or None)."""

    def __init__(self):
        self.requests: list[tuple[str, str | None]] = []
        self.honor_range = True
        self.truncate_next = 0  # >0: the next response claims the full length but stops after this many bytes
        srv = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # bound every socket operation on the server side

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                srv.requests.append((self.path, rng))
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"/{NAME}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path != f"/{NAME}":
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and srv.honor_range:
                    start = int(m.group(1))
                    if start >= len(DATA):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(DATA)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
                else:
                    self.send_response(200)
                body = DATA[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if srv.truncate_next:
                    body, srv.truncate_next = body[: srv.truncate_next], 0
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{NAME}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def file_requests(self):
        return [r for r in self.requests if r[0] == f"/{NAME}"]


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def local_only(monkeypatch):
    """Short timeouts, and never send 127.0.0.1 traffic through an ambient HTTP proxy."""
    monkeypatch.setattr(hub, "TIMEOUT", 5.0)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_fresh_download_gives_identical_bytes(server, tmp_path):
    path = download(server.url, cache=tmp_path, progress=False)
    assert path == tmp_path / NAME
    assert path.read_bytes() == DATA
    assert not (tmp_path / f"{NAME}.part").exists()
    assert server.file_requests() == [(f"/{NAME}", None)]


def test_progress_bar_and_explicit_filename(server, tmp_path, capsys):
    path = download(server.url, "other.pth", cache=tmp_path / "sub", sha256=sha(DATA), progress=True)
    assert path == tmp_path / "sub" / "other.pth"
    assert path.read_bytes() == DATA
    assert "other.pth" in capsys.readouterr().err  # tqdm writes its bar to stderr


def test_second_call_uses_cache(server, tmp_path):
    first = download(server.url, cache=tmp_path, progress=False)
    n = len(server.requests)
    second = download(server.url, cache=tmp_path, sha256=sha(DATA), progress=False)
    assert second == first
    assert len(server.requests) == n == 1


def test_cached_file_with_wrong_hash_is_fetched_again(server, tmp_path):
    (tmp_path / NAME).write_bytes(b"stale")
    path = download(server.url, cache=tmp_path, sha256=sha(DATA), progress=False)
    assert path.read_bytes() == DATA
    assert len(server.file_requests()) == 1


@pytest.mark.parametrize("k", [1, 12_345, len(DATA) - 1])
def test_resume_sends_range_and_appends(server, tmp_path, k):
    (tmp_path / f"{NAME}.part").write_bytes(DATA[:k])
    path = download(server.url, cache=tmp_path, sha256=sha(DATA), progress=False)
    assert path.read_bytes() == DATA
    assert server.file_requests() == [(f"/{NAME}", f"bytes={k}-")]


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    server.honor_range = False
    (tmp_path / f"{NAME}.part").write_bytes(b"\xff" * 5000)  # garbage that must not survive
    path = download(server.url, cache=tmp_path, progress=False)
    assert path.read_bytes() == DATA
    assert server.file_requests() == [(f"/{NAME}", "bytes=5000-")]


def test_complete_part_file_answered_416_is_refetched(server, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(DATA)
    path = download(server.url, cache=tmp_path, progress=False)
    assert path.read_bytes() == DATA
    assert server.file_requests() == [(f"/{NAME}", f"bytes={len(DATA)}-"), (f"/{NAME}", None)]


def test_interrupted_download_fails_then_resumes(server, tmp_path):
    server.truncate_next = 100_000
    with pytest.raises(WeightsDownloadError, match="incomplete") as exc:
        download(server.url, cache=tmp_path, progress=False)
    assert str(tmp_path / NAME) in str(exc.value)
    assert (tmp_path / f"{NAME}.part").stat().st_size == 100_000
    assert not (tmp_path / NAME).exists()
    path = download(server.url, cache=tmp_path, sha256=sha(DATA), progress=False)
    assert path.read_bytes() == DATA
    assert server.file_requests()[-1] == (f"/{NAME}", "bytes=100000-")


def test_sha256_mismatch_raises_and_keeps_nothing(server, tmp_path):
    with pytest.raises(WeightsDownloadError, match="sha256 mismatch"):
        download(server.url, cache=tmp_path, sha256="0" * 64, progress=False)
    assert not (tmp_path / NAME).exists()
    assert not (tmp_path / f"{NAME}.part").exists()


def test_redirect_is_followed(server, tmp_path):
    url = server.url.rsplit("/", 1)[0] + "/redirect"
    path = download(url, NAME, cache=tmp_path, progress=False)
    assert path.read_bytes() == DATA
    assert [p for p, _ in server.requests] == ["/redirect", f"/{NAME}"]


def test_http_error_names_url_and_target(server, tmp_path):
    url = server.url.rsplit("/", 1)[0] + "/missing.pth"
    with pytest.raises(WeightsDownloadError) as exc:
        download(url, cache=tmp_path, progress=False)
    msg = str(exc.value)
    assert "HTTP 404" in msg and url in msg and str(tmp_path / "missing.pth") in msg
    assert "\n" not in msg


def test_unreachable_url_raises_with_target_path(tmp_path):
    with socket.socket() as s:  # find a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/rtdetrv2_r18vd_120e_coco.pth"
    with pytest.raises(WeightsDownloadError) as exc:
        download(url, cache=tmp_path, progress=False)
    msg = str(exc.value)
    target = tmp_path / "rtdetrv2_r18vd_120e_coco.pth"
    assert msg.startswith("could not download rtdetrv2_r18vd_120e_coco.pth from " + url)
    assert f"put it at {target}" in msg and "weights=PATH" in msg
    assert "\n" not in msg
    assert isinstance(exc.value, RuntimeError)


def test_rtdetr_cache_env_var(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path / "envcache"))
    assert cache_dir() == tmp_path / "envcache"
    path = download(server.url, progress=False)
    assert path == tmp_path / "envcache" / NAME
    assert path.read_bytes() == DATA


def test_cache_dir_fallbacks(tmp_path, monkeypatch):
    monkeypatch.delenv("RTDETR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rtdetr"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "rtdetr"
