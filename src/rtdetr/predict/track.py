"""Tracking: the detections of each video frame linked over time, one id per object.

    import rtdetr
    det = rtdetr.load_model("rtdetrv2_r18vd")
    for r in det.track("street.mp4", stream=True):           # or a webcam index (0), or an RTSP/HTTP URL
        print(r.frame, r.track_ids, r.boxes.xyxy)            # ids 1, 2, ... one per object
    det.track("street.mp4", save=True)                       # runs/track/exp: street.mp4 (annotated), street.txt (MOT)

Each frame goes through the `Predictor` (as `predict` does, with a low `conf`, 0.1 by default:
ByteTrack matches low-scoring boxes to existing tracks in a second pass, which keeps objects
through partial occlusion and blur; only boxes scoring `high_conf_det_threshold` or more
start or first match tracks), then through the tracker. The tracked `Result` holds only the
tracked boxes: the tracker drops detections it did not match or has not yet confirmed (a new
object gets its id on its `minimum_consecutive_frames`-th frame, 2 by default), and its boxes,
scores, labels and masks are those rows, best score first, with `track_ids` [N] beside them.

The tracker is ByteTrack from Roboflow's `trackers` package (`pip install 'rtdetr[track]'`), chosen
over supervision's `sv.ByteTrack` because:
  - `sv.ByteTrack` is gone: deprecated in supervision 0.28 ("use ByteTrackTracker from the
    trackers package instead"), removed in 0.31 (the current 0.31.2 has no tracker at all);
    `trackers` (2.6.1, Sep 2026) is where Roboflow maintains it, with SORT, OC-SORT and BoT-SORT
    behind the same `update(sv.Detections) -> sv.Detections` (any of them can be passed as
    `tracker=`);
  - it takes our detections without copies: `sv.Detections` of the numpy views of our CPU
    tensors (boxes, scores, labels) plus a row index, which comes back with each tracked box;
  - on the test video (tests/predict/test_track.py: three shapes, two crossing, one with
    fluctuating scores and a 4-frame gap) both gave 0 id switches.
Its cost: `trackers` needs opencv-python (about 190 MB installed, imported by `import trackers`)
besides supervision; it is an optional extra for that reason. Its ids start at 0; ours are its
ids + 1, since MOT Challenge files number objects from 1.

Sources: a video file, a webcam index (an int, or a string of digits: /dev/videoN through
v4l2 on Linux, avfoundation on macOS), or a stream URL FFmpeg opens (rtsp://, rtmp://, http://,
https://, udp://, tcp://, srt://), all read by PyAV (`rtdetr[video]`). Not pictures nor folders
of them (a one-line `SourceError`): frames need an order and a rate; make a video of them first
(`ffmpeg -framerate 25 -i %06d.jpg frames.mp4`).

Saving (save=True) writes, into the run folder (`runs/track/exp`, `exp2`, ... or `out`):
    <stem>.mp4   the annotated video (`Result.plot()`: one colour per track, "#id class score")
    <stem>.txt   the tracks in MOT Challenge's layout, one line per tracked box:
                 frame,id,x,y,w,h,conf,-1,-1,-1  (frame from 1, x, y the top-left corner, pixels)
"""
from __future__ import annotations

import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from tqdm import tqdm

from rtdetr.core.errors import ImageReadError, first_line
from rtdetr.core.images import IMAGE_SUFFIXES
from rtdetr.predict.predictor import Predictions, Predictor
from rtdetr.predict.results import Boxes, Masks, Result
from rtdetr.predict.run import next_run_dir
from rtdetr.predict.sources import Frame, SourceError
from rtdetr.predict.video import INSTALL_HINT, VideoWriter, count_frames, frame_rate, read_frames

TRACK_HINT = "pip install 'rtdetr[track]'"
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
# ByteTrackTracker's options, given through `track(...)`; None keeps the tracker's own default.
TRACKER_OPTIONS = ("track_activation_threshold", "high_conf_det_threshold", "minimum_iou_threshold",
                   "lost_track_buffer", "minimum_consecutive_frames")


def require_trackers():
    try:
        import trackers
    except ImportError:
        raise ImportError(f"tracking needs Roboflow's trackers package: {TRACK_HINT}") from None
    return trackers


def make_tracker(frame_rate: float, **options):
    """A `trackers.ByteTrackTracker` for a video of `frame_rate` fps; `options` (TRACKER_OPTIONS,
    None ones left out) override its defaults (0.7, 0.6, 0.1, 30 frames at 30 fps, 2 in 2.6.1)."""
    unknown = set(options) - set(TRACKER_OPTIONS)
    if unknown:
        raise TypeError(f"unknown tracker option(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in options.items() if v is not None}
    return require_trackers().ByteTrackTracker(frame_rate=float(frame_rate), **given)


# ---------------------------------------------------------------------------- sources
@dataclass
class VideoSource:
    """A video to track through: its name, frames per second, frame count (0: unknown, live) and frames."""

    name: str              # Result.path: the file, the URL, or "webcam0"
    stem: str              # the output files' name: <stem>.mp4, <stem>.txt
    fps: Fraction
    count: int
    frames: Iterator[np.ndarray]   # [H, W, 3] uint8 RGB


def open_source(source: str | Path | int) -> VideoSource:
    """The video named by `source` (see the module docstring); a bad one is a one-line error
    (`SourceError`, or `ImageReadError` when PyAV cannot open or decode it)."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return _webcam(int(source))
    if isinstance(source, str) and urlparse(source).scheme.lower() in STREAM_SCHEMES:
        u = urlparse(source)
        container = _open_av(source, None, {"rw_timeout": "10000000"} if u.scheme.startswith(("http", "tcp")) else {})
        return _live(container, source, Path(u.path).stem or u.hostname or "stream")
    if not isinstance(source, (str, Path)):
        raise SourceError(f"cannot track a {type(source).__name__}: give a video file, a webcam index or a stream URL")
    path = Path(source).expanduser()
    if path.is_dir():
        raise SourceError(f"{path}: a folder; tracking takes a video file, a webcam index or a stream URL "
                          f"(make a video of the frames first: ffmpeg -framerate 25 -i %06d.jpg frames.mp4)")
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise SourceError(f"{path}: a picture; tracking follows objects through a video "
                          f"(for one picture: rtdetr predict)")
    try:
        fps = frame_rate(path)
    except ImageReadError:      # no PyAV
        raise
    except Exception:           # not a readable video: read_frames says why, in one line
        fps = Fraction(30)
    return VideoSource(str(path), path.stem, fps, count_frames(path), read_frames(path))


def _webcam(index: int) -> VideoSource:
    system = platform.system()
    if system == "Linux":
        container = _open_av(f"/dev/video{index}", "v4l2", {})
    elif system == "Darwin":
        container = _open_av(str(index), "avfoundation", {"framerate": "30"})
    else:
        raise SourceError(f"webcam {index}: webcams by index are read on Linux (v4l2) and macOS (avfoundation); "
                          f"here, give the camera's stream URL")
    return _live(container, f"webcam{index}", f"webcam{index}")


def _open_av(target: str, format: str | None, options: dict):
    try:
        import av
    except ImportError:
        raise ImageReadError(f"{target}: reading videos needs PyAV: {INSTALL_HINT}") from None
    try:
        container = av.open(target, format=format, options=options)
    except Exception as e:  # av.FFmpegError and friends: one line
        reason = first_line(ValueError(getattr(e, "strerror", None) or e))   # FFmpeg's words, without the errno
        raise ImageReadError(f"{target}: cannot open ({reason})") from None
    if not container.streams.video:
        container.close()
        raise ImageReadError(f"{target}: has no video stream")
    return container


def _live(container, name: str, stem: str) -> VideoSource:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    return VideoSource(name, stem, Fraction(rate) if rate else Fraction(30), stream.frames or 0,
                       _decode(container, name))


def _decode(container, name: str) -> Iterator[np.ndarray]:
    n = 0
    with container:
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except Exception as e:
            raise ImageReadError(f"{name}: decoding failed after {n} frames ({first_line(e)})") from None
    if n == 0:
        raise ImageReadError(f"{name}: no frames could be decoded")


# ---------------------------------------------------------------------------- tracking
def to_detections(result: Result):
    """`sv.Detections` of a result for the tracker: numpy views of its xyxy [N, 4] float32, scores [N]
    and labels [N] (no copies), and data["row"] [N], each box's row, which the tracker carries along."""
    import supervision as sv
    return sv.Detections(xyxy=result.boxes.xyxy.numpy(), confidence=result.scores.numpy(),
                         class_id=result.labels.numpy(), data={"row": np.arange(len(result))})


def tracked_result(result: Result, tracked) -> Result:
    """The rows of `result` the tracker gave an id (`tracked`: its output `sv.Detections`, with
    data["row"]; tracker_id -1 = not tracked), best score first, with `track_ids` = id + 1."""
    ids = np.asarray(tracked.tracker_id, dtype=np.int64).reshape(-1)
    rows = np.asarray(tracked.data["row"], dtype=np.int64).reshape(-1)[ids >= 0]
    order = np.argsort(rows, kind="stable")            # the result's rows are best score first
    rows, ids = torch.from_numpy(rows[order]), torch.from_numpy(ids[ids >= 0][order] + 1)
    masks = Masks(result.masks.data[rows], result.masks.orig_shape) if result.masks is not None else None
    return replace(result, boxes=Boxes(result.boxes.xyxy[rows], result.boxes.orig_shape), scores=result.scores[rows],
                   labels=result.labels[rows], masks=masks, track_ids=ids)


def mot_lines(result: Result) -> list[str]:
    """MOT Challenge rows of a tracked result: "frame,id,x,y,w,h,conf,-1,-1,-1", frame counted from 1."""
    return [f"{result.frame + 1},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.4f},-1,-1,-1"
            for i, (x, y, w, h), s in zip(result.track_ids.tolist(), result.boxes.ltwh.tolist(),
                                          result.scores.tolist())]


def track(model, source: str | Path | int, *, tracker: Any = "bytetrack", conf: float = 0.1, stream: bool = False,
          save: bool = False, save_video: bool = True, out: str | Path | None = None,
          project: str | Path = "runs/track", name: str = "exp", progress: bool | None = None,
          frame_rate: float | None = None,
          track_activation_threshold: float | None = None, high_conf_det_threshold: float | None = None,
          minimum_iou_threshold: float | None = None, lost_track_buffer: int | None = None,
          minimum_consecutive_frames: int | None = None, **predict_options) -> Predictions | Iterator[Result]:
    """Track objects through a video: a list of tracked `Result`s (`track_ids` set), or a
    generator with stream=True (for webcams and streams, which do not end).

    tracker: "bytetrack" (trackers' ByteTrackTracker, made with the options below), or a tracker
             of the `trackers` package already made (SORTTracker, OCSORTTracker, BoTSORTTracker...;
             it is reset first; the options below are then not allowed)
    conf:    detections kept for the tracker (low: see the module docstring)
    save:    write `<stem>.mp4` (unless save_video=False) and `<stem>.txt` (MOT) into the run
             folder (`out`, or the next free `project/name`)
    frame_rate: the video's own by default (scales `lost_track_buffer`, counted in 30-fps frames)
    track_activation_threshold, high_conf_det_threshold, minimum_iou_threshold, lost_track_buffer,
    minimum_consecutive_frames: ByteTrackTracker's, its defaults when None
    predict_options: `Predictor`'s (imgsz, batch, device, half, decoder_layers, ...)
    """
    options = dict(track_activation_threshold=track_activation_threshold,
                   high_conf_det_threshold=high_conf_det_threshold, minimum_iou_threshold=minimum_iou_threshold,
                   lost_track_buffer=lost_track_buffer, minimum_consecutive_frames=minimum_consecutive_frames)
    if isinstance(tracker, str):
        if tracker != "bytetrack":
            raise ValueError(f"tracker must be 'bytetrack' or a tracker of the trackers package, got {tracker!r}")
        require_trackers()                      # the missing extra fails before anything is read
    elif not callable(getattr(tracker, "update", None)):
        raise TypeError(f"tracker must be 'bytetrack' or a tracker of the trackers package "
                        f"(with .update(sv.Detections)), got a {type(tracker).__name__}")
    elif any(v is not None for v in options.values()) or frame_rate is not None:
        raise ValueError("tracker options (thresholds, buffer, frame_rate) are for tracker='bytetrack'; "
                         "set them on the tracker you made")
    predictor = Predictor(model, conf=conf, **predict_options)
    video = open_source(source)
    if isinstance(tracker, str):
        tracker = make_tracker(frame_rate or video.fps, **options)
    else:
        tracker.reset()
    save_dir = (Path(out) if out is not None else next_run_dir(project, name)) if save else None
    run = _run(predictor, video, tracker, save_dir, save_video, progress)
    if stream:
        return run
    results = Predictions(run)
    results.failures, results.save_dir = [], save_dir
    return results


def _run(predictor: Predictor, video: VideoSource, tracker, save_dir: Path | None, save_video: bool,
         progress: bool | None) -> Iterator[Result]:
    writer = mot = None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        mot = open(save_dir / f"{video.stem}.txt", "w")
        writer = VideoWriter(save_dir / f"{video.stem}.mp4", video.fps) if save_video else None
    bar = tqdm(total=video.count or None, disable=not (progress if progress is not None else sys.stderr.isatty()),
               unit="frame", desc="track")
    uses_frame = getattr(tracker, "tracker_id", "") in ("botsort", "mcbyte")   # camera-motion compensation
    batch: list[Frame] = []

    def emit(frames: list[Frame]) -> Iterator[Result]:
        for frame, result in zip(frames, predictor.predict_batch(frames)):
            out = tracker.update(to_detections(result), frame=frame.image if uses_frame else None)
            result = tracked_result(result, out)
            if mot is not None:
                mot.writelines(line + "\n" for line in mot_lines(result))
            if writer is not None:
                writer.write(result.plot())
            bar.update(1)
            yield result

    try:
        for n, image in enumerate(video.frames):
            batch.append(Frame(image, video.name, n, frame=n))
            if len(batch) == predictor.batch:
                yield from emit(batch)
                batch = []
        if batch:
            yield from emit(batch)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if mot is not None:
            mot.close()
