"""`rtdetr track`: objects followed through a video, a webcam or a stream (`rtdetr.predict.track`).

    rtdetr track street.mp4 --weights rtdetrv2_r18vd_120e_coco_rerun_48.1.pth
    rtdetr track 0 --model rtdetrv2_r18vd --imgsz 480,640          # webcam 0
    rtdetr track rtsp://camera.local/stream --weights best.pt --lost-buffer 60

Writes the run folder (runs/track/exp, exp2, ... or --out), as `rtdetr predict` does: the
annotated video `<stem>.mp4` (not with --no-save) and the tracks `<stem>.txt` in MOT Challenge's
layout (frame,id,x,y,w,h,conf,-1,-1,-1). Needs `pip install 'rtdetr[track]'`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_track_command(subparsers) -> argparse.ArgumentParser:
    """Add `track` to the sub-parsers of `rtdetr.cli.app.build_parser()`."""
    from rtdetr.cli.predict import parse_imgsz
    p = subparsers.add_parser("track", help=cmd_track.__doc__, description=cmd_track.__doc__)
    p.add_argument("source", help="a video file, a webcam index (0, 1...) or a stream URL (rtsp://, http://...)")
    p.add_argument("--model", "-m", default=None, help="zoo name (official weights unless --weights says otherwise) "
                   "or a checkpoint saved by rtdetr")
    p.add_argument("--weights", "-w", default=None, help="a weights file, a zoo name, 'official' or 'none', as for "
                   "rtdetr predict")
    p.add_argument("--conf", type=float, default=0.1, help="detections given to the tracker score at least this "
                   "(default 0.1: ByteTrack's second pass uses the low ones)")
    p.add_argument("--imgsz", type=parse_imgsz, default=None, metavar="SIZE",
                   help="network input size: 640 or H,W (multiples of 32; default: the size a checkpoint was "
                        "trained at, else 640)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--half", action="store_true", help="float16 on CUDA")
    p.add_argument("--track-thresh", type=float, default=None,
                   help="a new track starts from a detection scoring at least this (trackers' default 0.7)")
    p.add_argument("--high-thresh", type=float, default=None,
                   help="detections scoring at least this are matched first (trackers' default 0.6)")
    p.add_argument("--match-iou", type=float, default=None,
                   help="least IoU of a detection with a track's predicted box to match it (trackers' default 0.1)")
    p.add_argument("--lost-buffer", type=int, default=None,
                   help="a lost track is kept this many 30-fps frames (trackers' default 30)")
    p.add_argument("--min-frames", type=int, default=None,
                   help="frames in a row before a new track gets its id (trackers' default 2)")
    p.add_argument("--fps", type=float, default=None, help="frame rate for the tracker (default: the video's)")
    p.add_argument("--out", "-o", default=None, help="run folder (default: the next of runs/track/exp, exp2...)")
    p.add_argument("--project", default="runs/track", help="parent of the numbered run folders")
    p.add_argument("--name", default="exp", help="run folder name: exp, exp2... (default exp)")
    p.add_argument("--no-save", action="store_true", help="no annotated video (the MOT file is still written)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_track)
    return p


def cmd_track(args: argparse.Namespace) -> int:
    """Track objects through a video, webcam or stream; writes the annotated video and MOT-format tracks."""
    from rtdetr.cli.predict import cli_device, describe, load_cli_model
    from rtdetr.predict.run import next_run_dir
    from rtdetr.predict.track import require_trackers, track
    require_trackers()                                  # the missing extra: one line, before the model loads
    device = cli_device(args.device)
    model = load_cli_model(args.model, args.weights, device)
    print(f"{describe(model, None)} on {device}, conf {args.conf}", file=sys.stderr)
    out = Path(args.out) if args.out is not None else next_run_dir(args.project, args.name)
    start = time.perf_counter()
    frames, boxes, ids = 0, 0, set()
    for result in track(model, args.source, conf=args.conf, imgsz=args.imgsz, device=device,
                        half=args.half and device.type == "cuda", stream=True, save=True, save_video=not args.no_save,
                        out=out, progress=not args.quiet, frame_rate=args.fps,
                        track_activation_threshold=args.track_thresh, high_conf_det_threshold=args.high_thresh,
                        minimum_iou_threshold=args.match_iou, lost_track_buffer=args.lost_buffer,
                        minimum_consecutive_frames=args.min_frames):
        frames, boxes = frames + 1, boxes + len(result)
        ids.update(result.track_ids.tolist())
    seconds = time.perf_counter() - start
    print(f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} fps): {len(ids)} track(s), "
          f"{boxes} tracked boxes")
    print(f"saved to {out}: {'the annotated video, ' if not args.no_save else ''}the tracks in MOT format (.txt)")
    return 0
