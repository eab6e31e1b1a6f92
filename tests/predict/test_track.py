"""Tracking (`rtdetr.predict.track`, `Detector.track`, `rtdetr track`) on a generated video whose
objects' paths are known: three 40x40 squares, red and green crossing in an X (their boxes
overlap up to IoU 0.38 at frame 29), blue on a sine curve with scores that dip below ByteTrack's
high threshold (frames 15-17) and vanish for 4 frames (30-33).

The stand-in detector sees through overlaps: the squares are drawn channel by channel (where red
and green overlap the pixels are yellow), and query c boxes the pixels whose channel c is high,
so each square's box is its whole square, in every frame; the right answer is the path itself.
"""
from __future__ import annotations

import http.server
import math
import sys
import threading
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from rtdetr.api import Detector
from rtdetr.cli import app as cli
from rtdetr.cli import predict as predict_cli
from rtdetr.core.errors import ImageReadError
from rtdetr.predict.draw import draw_detections
from rtdetr.predict.sources import SourceError
from rtdetr.predict.track import track
from tests.predict.conftest import ColourDetector, picture, save_picture, write_video

W, H, N, FPS, SIDE = 320, 256, 60, 25, 40
IMGSZ = (H, W)                        # the network input is the frame itself: no resampling of edges
CHANNEL = {"red": 0, "green": 1, "blue": 2}   # also the class label of each square


def top_left(name: str, t: int) -> tuple[float, float]:
    """Where square `name` is in frame t (0-based): its top-left corner, pixels."""
    if name == "red":
        return 10 + 4.5 * t, 60.0                         # straight, left to right
    if name == "green":
        return 270 - 4.5 * t, 20 + 2.0 * t                # straight, right to left and down: crosses red
    return 20 + 4.0 * t, 170 + 30 * math.sin(2 * math.pi * t / 40)   # blue: a sine curve


def truth(name: str, t: int) -> tuple[float, float, float, float]:
    x, y = top_left(name, t)
    return x, y, x + SIDE, y + SIDE


def scene() -> list[np.ndarray]:
    frames = []
    for t in range(N):
        img = np.zeros((H, W, 3), np.uint8)
        for name, c in CHANNEL.items():
            x, y = (round(v) for v in top_left(name, t))
            img[y:y + SIDE, x:x + SIDE, c] = 255
        frames.append(img)
    return frames


def blue_score(t: int) -> float:
    """Blue's score in frame t: 0 (not detected) in 30-33, 0.4 (< the 0.6 high threshold, > conf) in
    15-17, else alternating 0.9 / 0.75."""
    return 0.0 if 30 <= t < 34 else 0.4 if 15 <= t < 18 else (0.9 if t % 2 else 0.75)


class ChannelDetector(ColourDetector):
    """Query c boxes the pixels whose channel c is above 0.5 (class c); frame t = the t-th call
    (batch 1). Red and green score 0.9, blue `blue_score(t)`."""

    def forward(self, x: torch.Tensor, num_decoder_layers: int | None = None) -> dict[str, torch.Tensor]:
        t = len(self.calls)
        self.calls.append({"shape": tuple(x.shape)})
        _, _, h, w = x.shape
        logits = torch.full((1, 3, self.num_classes), -20.0)
        boxes = torch.full((1, 3, 4), 0.5)
        for name, c in CHANNEL.items():
            score = blue_score(t) if name == "blue" else 0.9
            ys, xs = torch.nonzero(x[0, c] > 0.5, as_tuple=True)
            if score == 0 or len(xs) == 0:
                continue
            x1, x2, y1, y2 = xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h
            boxes[0, c] = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
            logits[0, c, c] = math.log(score / (1 - score))
        return {"pred_logits": logits, "pred_boxes": boxes}


def make_detector() -> ChannelDetector:
    return ChannelDetector(num_classes=3, class_names=list(CHANNEL))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("track") / "shapes.mp4", scene(), fps=FPS)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def id_switches(rows: list[tuple[int, int, tuple]]) -> tuple[int, dict[str, list[int]]]:
    """MOTA-style id switches of tracked boxes (frame t 0-based, track id, xyxy) against the known
    paths: each box is matched to the square it overlaps at IoU >= 0.5 (at most one: the squares'
    boxes never overlap more than 0.38); a square whose matched id differs from its previous one
    is a switch. Also each square's ids in frame order. A box matching no square fails."""
    switches, ids = 0, {name: [] for name in CHANNEL}
    for t, tid, box in rows:
        matches = [name for name in CHANNEL if iou(box, truth(name, t)) >= 0.5]
        assert len(matches) == 1, f"frame {t}: tracked box {box} matches {matches or 'no square'}"
        seen = ids[matches[0]]
        switches += bool(seen) and seen[-1] != tid
        seen.append(tid)
    return switches, ids


# Frames in which each square is tracked: from its 2nd frame (ByteTrack's 2 frames to confirm a
# track) to the last, less blue's 4 undetected frames.
TRACKED_FRAMES = {"red": list(range(1, N)), "green": list(range(1, N)),
                  "blue": [t for t in range(1, N) if not 30 <= t < 34]}


def test_every_square_keeps_one_id(video, tmp_path):
    results = Detector(make_detector()).track(video, imgsz=IMGSZ, save=True, out=tmp_path / "run")
    assert [r.frame for r in results] == list(range(N))
    rows = [(r.frame, tid, box) for r in results for tid, box in zip(r.track_ids.tolist(), r.boxes.xyxy.tolist())]
    switches, ids = id_switches(rows)
    assert switches == 0
    assert {name: len(set(v)) for name, v in ids.items()} == {"red": 1, "green": 1, "blue": 1}
    assert sorted(v[0] for v in ids.values()) == [1, 2, 3]          # 1-based, as MOT files number them
    frames = {name: [t for t, tid, _ in rows if tid == v[0]] for name, v in ids.items()}
    assert frames == TRACKED_FRAMES       # blue's low-score frames kept (2nd pass), its gap bridged
    r = results[29]                        # red and green overlap: rows in step with the ids
    assert r.track_ids.dtype == torch.int64 and len(r.track_ids) == len(r.boxes) == len(r.scores) == 3
    for tid, label in zip(r.track_ids.tolist(), r.labels.tolist()):
        assert ids[list(CHANNEL)[label]][0] == tid
    assert r.scores.tolist() == sorted(r.scores.tolist(), reverse=True)

    # The MOT file: one row per tracked box, in MOT Challenge's 10 columns. Each box is within 1 px
    # of its square at every edge (the path rounded to whole pixels, then 4:2:0 MPEG-4 blurring
    # colour edges by up to a pixel), so its IoU with the path is at least (38/40)^2 = 0.90.
    lines = (tmp_path / "run" / "shapes.txt").read_text().splitlines()
    assert len(lines) == sum(len(v) for v in TRACKED_FRAMES.values()) == 173
    by_id = {v[0]: name for name, v in ids.items()}
    worst = 1.0
    for line in lines:
        frame, tid, x, y, w, h, conf, *rest = line.split(",")
        assert rest == ["-1", "-1", "-1"]
        t, box = int(frame) - 1, (float(x), float(y), float(x) + float(w), float(y) + float(h))
        name = by_id[int(tid)]
        worst = min(worst, iou(box, truth(name, t)))
        assert float(conf) == pytest.approx(blue_score(t) if name == "blue" else 0.9, abs=1e-4)
    assert worst >= 0.9, worst

    # The annotated video: every frame, at the source's rate.
    import av
    with av.open(str(tmp_path / "run" / "shapes.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == N
        assert c.streams.video[0].average_rate == FPS


def test_plot_leads_each_label_with_its_id(tmp_path):
    """A tracked result is drawn by the same code, coloured by track id, its label "#id class score"."""
    frames = [picture(128, 96, (10, 30, 50, 70))] * 3            # red, class 0: colour 0 != colour 1
    clip = write_video(tmp_path / "one.mp4", frames, fps=FPS)
    r = track(make_detector(), clip, imgsz=(96, 128))[1]           # a track has its id from its 2nd frame
    assert r.track_ids.tolist() == [1] and r.labels.tolist() == [0]
    assert np.array_equal(r.plot(), draw_detections(r.orig_img, r.boxes.xyxy, [1], ["#1 red 0.90"]))
    assert np.array_equal(r.plot(labels=False, scores=False), draw_detections(r.orig_img, r.boxes.xyxy, [1], ["#1"]))
    assert not np.array_equal(r.plot(), replace(r, track_ids=None).plot())


def test_stream_url(video, tmp_path):
    """An http:// URL, served here, is read by FFmpeg as a stream (no frame count)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(video.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{video.name}"
        results = list(track(make_detector(), url, imgsz=IMGSZ, stream=True, save=True, save_video=False,
                             out=tmp_path))
    finally:
        server.shutdown()
    assert len(results) == N and results[0].path == url
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes.txt"]
    assert len((tmp_path / "shapes.txt").read_text().splitlines()) == 173


def test_cli(video, tmp_path, monkeypatch, capsys):
    d = make_detector()
    monkeypatch.setattr(predict_cli, "load_cli_model", lambda model, weights, device, options=None: d)
    rc = cli.main(["track", str(video), "--weights", "w.pth", "--imgsz", f"{H},{W}", "--project", str(tmp_path),
                   "--lost-buffer", "0", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["shapes.mp4", "shapes.txt"]
    # --lost-buffer 0: blue's track ends at its gap and a new one starts 2 frames after it: 4 tracks.
    assert f"{N} frames" in out and "4 track(s)" in out
    ids = {int(line.split(",")[1]) for line in (tmp_path / "exp" / "shapes.txt").read_text().splitlines()}
    assert ids == {1, 2, 3, 4}


@pytest.mark.parametrize("make, message", [
    (lambda p: save_picture(p / "a.jpg", picture(64, 64, (0, 0, 8, 8))), "a picture; tracking follows objects"),
    (lambda p: p, "a folder; tracking takes a video file"),
    (lambda p: p / "missing.mp4", "no such file"),
])
def test_sources_that_are_not_videos(tmp_path, make, message):
    with pytest.raises(SourceError, match=message):
        track(make_detector(), make(tmp_path))


def test_missing_extra_is_one_line(video, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trackers", None)          # `import trackers` raises ImportError
    one_line = r"^tracking needs Roboflow's trackers package: pip install 'rtdetr\[track\]'$"
    with pytest.raises(ImportError, match=one_line):
        track(make_detector(), video)
    monkeypatch.setattr(predict_cli, "load_cli_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert cli.main(["track", str(video), "--weights", "w.pth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rtdetr: error: tracking needs Roboflow's trackers package: pip install 'rtdetr[track]'"]


def test_unreadable_videos_are_one_line(tmp_path):
    """A webcam that is not there, and a file that is no video: one line naming them."""
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    for source, where in [(63, "63"), ("63", "63"), (noise, str(noise))]:
        with pytest.raises((ImageReadError, SourceError)) as e:
            list(track(make_detector(), source, imgsz=IMGSZ))
        assert where in str(e.value) and "\n" not in str(e.value)
