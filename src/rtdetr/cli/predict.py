"""`rtdetr predict`: detections on image files, folders, globs and videos, written to a run folder.

    rtdetr predict --weights rtdetrv2_r18vd_120e_coco_rerun_48.1.pth photos/ street.mp4 'more/*.jpg'
    rtdetr predict --model rtdetrv2_r18vd --conf 0.4 --imgsz 480,800 --decoder-layers 2 photos/
    rtdetr predict --weights best.pt --tile 640 --overlap 0.2 --batch 8 aerial/   # small objects, large pictures

Exit status: 0 when every input was read, 1 when some could not be (the rest is still done,
and each failure is listed, one line, at the end and in failures.txt), 2 on an error that
stops the run (a missing path, unusable weights).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from rtdetr.core.sizes import check_imgsz


def add_predict_command(subparsers) -> argparse.ArgumentParser:
    """Add `predict` to the sub-parsers of `rtdetr.cli.app.build_parser()`."""
    p = subparsers.add_parser("predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__)
    p.add_argument("source", nargs="+",
                   help="image files, folders, glob patterns (quote them: 'photos/*.jpg') or video files")
    p.add_argument("--model", "-m", default=None,
                   help="zoo name (official weights unless --weights says otherwise) or a checkpoint saved by rtdetr")
    p.add_argument("--weights", "-w", default=None,
                   help="a weights file (its architecture is recognised from the official file name or from "
                        "an rtdetr checkpoint; else add --model), a zoo name, 'official', or 'none' (random)")
    p.add_argument("--conf", "--threshold", type=float, default=0.5, help="keep detections scoring at least this "
                   "(default 0.5; 0 keeps all 300, for COCO evaluation)")
    p.add_argument("--imgsz", type=parse_imgsz, default=None, metavar="SIZE",
                   help="network input size: 640 (square) or H,W such as 480,800; multiples of 32 (default: the size "
                        "a checkpoint was trained at, else 640)")
    p.add_argument("--decoder-layers", type=int, default=None, help="decoder layers to run (fewer is faster)")
    p.add_argument("--batch", type=int, default=1, help="pictures per forward pass (default 1)")
    p.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                   help="predict pictures larger than this by overlapping PIXELS x PIXELS tiles (each at the "
                        "network size) plus one full-picture pass, merged: small objects in large pictures; "
                        "--batch tiles per forward pass (default: one pass per picture)")
    p.add_argument("--overlap", type=float, default=0.2,
                   help="with --tile: the fraction of a tile its neighbours share, in [0, 0.9) (default 0.2)")
    p.add_argument("--max-det", type=int, default=300, help="detections considered per picture (default 300)")
    p.add_argument("--mask-threshold", type=float, default=0.5,
                   help="segmentation models: a pixel is in a mask at this probability or more (default 0.5)")
    p.add_argument("--no-mask-crop", action="store_true",
                   help="segmentation models: keep mask pixels outside their detection's box (masks are learnt "
                        "inside their boxes: outside them the map is not trained)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--half", action="store_true", help="float16 on CUDA")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino"], default=None,
                   help="for an .onnx file: which runtime runs it (default onnxruntime; .xml files run on openvino)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="OpenVINO's inference precision (default fp32; OpenVINO's own default would be bf16 "
                        "on CPUs that have it)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of an exported model's runtime")
    p.add_argument("--no-optimize", action="store_true",
                   help="run the model as loaded instead of its fused inference copy (slower, same detections)")
    p.add_argument("--out", "-o", default=None, help="run folder (default: the next of runs/predict/exp, exp2...)")
    p.add_argument("--project", default="runs/predict", help="parent of the numbered run folders (default runs/predict)")
    p.add_argument("--name", default="exp", help="run folder name: exp, exp2, exp3... (default exp)")
    p.add_argument("--no-save", action="store_true", help="no annotated pictures (the JSON files are still written)")
    p.add_argument("--no-exif", action="store_true", help="do not turn photos upright by their EXIF orientation")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
    return p


def cmd_predict(args: argparse.Namespace) -> int:
    """Detect objects in images, folders, globs and videos; writes annotated pictures and COCO-format JSON."""
    from rtdetr.predict.predictor import Predictor, PredictWarning
    device = cli_device(args.device)
    half = args.half and device.type == "cuda"
    if args.half and not half:
        print(f"rtdetr: warning: --half needs a CUDA device; running in float32 on {device}", file=sys.stderr)
    model = load_cli_model(args.model, args.weights, device, runtime_options(args))
    predictor = Predictor(model, conf=args.conf, imgsz=args.imgsz, batch=args.batch,
                          decoder_layers=args.decoder_layers, max_det=args.max_det, device=device, half=half,
                          exif=not args.no_exif, optimize=not args.no_optimize,
                          mask_threshold=args.mask_threshold, mask_crop=not args.no_mask_crop,
                          tile=args.tile, overlap=args.overlap)
    h, w = predictor.imgsz
    tiles = f", tiles of {args.tile} px overlapping {args.overlap:g}" if args.tile is not None else ""
    print(f"{describe(model, args.decoder_layers)} on {device} at {h}x{w}, conf {args.conf}{tiles}", file=sys.stderr)

    source = args.source[0] if len(args.source) == 1 else args.source
    start = time.perf_counter()
    stats = RunStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictWarning)   # failures are summarised below instead
        for result in predictor(source, stream=True, save=True, save_images=not args.no_save, out=args.out,
                                project=args.project, name=args.name, progress=not args.quiet):
            stats.add(result)
    print(stats.summary(time.perf_counter() - start, predictor.save_dir, not args.no_save))
    if predictor.failures:
        print(f"{len(predictor.failures)} input(s) could not be read (also in {predictor.save_dir / 'failures.txt'}):")
        for f in predictor.failures:
            print(f"  {f.message}")
        return 1
    return 0


def parse_imgsz(text: str) -> tuple[int, int]:
    """'640' -> (640, 640); '480,800' or '480x800' -> (480, 800) (multiples of 32: checked where it is used)."""
    try:
        return check_imgsz(text, stride=1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def describe(model, decoder_layers: int | None) -> str:
    """'rtdetrv2_r18vd (3/3 decoder layers)', or what an exported model runs on."""
    if hasattr(model, "decoder"):
        layers = decoder_layers or model.decoder.eval_layers
        return f"{model.cfg.name} ({layers}/{model.decoder.num_layers} decoder layers)"
    net = getattr(model, "model", model)
    return f"{type(net).__name__} ({getattr(net, 'precision', '?')})"


def runtime_options(args: argparse.Namespace) -> dict:
    """--runtime / --precision / --threads as `load_model` keywords for an exported model."""
    options = {"runtime": args.runtime, "precision": args.precision, "threads": args.threads}
    return {k: v for k, v in options.items() if v is not None}


def cli_device(name: str | None):
    """The torch device of a --device option: the one named, else cuda when there is one, else cpu."""
    import torch
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_cli_model(model: str | None, weights: str | None, device, exported_options: dict | None = None):
    """The `Detector` named by --model and/or --weights (see the options' help); `exported_options`
    (runtime, precision, threads) are for exported files only, an error otherwise."""
    from rtdetr.api import EXPORTED_SUFFIXES, OFFICIAL, load_model
    if exported_options and (weights is None or Path(weights).suffix.lower() not in EXPORTED_SUFFIXES):
        raise ValueError(f"--{next(iter(exported_options))} is for exported models (--weights model.onnx / "
                         f"model.xml); this model runs in PyTorch")
    if model is not None:
        w = None if weights is not None and weights.lower() == "none" else (weights or OFFICIAL)
        return load_model(model, weights=w, device=device, **(exported_options or {}))
    if weights is None or weights.lower() in ("none", OFFICIAL):
        raise ValueError("which model? give --weights FILE, or --model NAME for its official weights (see `rtdetr models`)")
    return load_model(weights, device=device, **(exported_options or {}))


class RunStats:
    """Counts for the closing summary of `rtdetr predict`."""

    def __init__(self):
        self.pictures = self.images = 0
        self.videos: set[str] = set()
        self.classes: Counter[str] = Counter()
        self.speed: Counter[str] = Counter()

    def add(self, result) -> None:
        self.pictures += 1
        if result.frame is None:
            self.images += 1
        else:
            self.videos.add(result.path)
        self.classes.update(result.class_names)
        self.speed.update(result.speed)

    def summary(self, seconds: float, save_dir: Path | None, images_saved: bool) -> str:
        frames = self.pictures - self.images
        what = f"{self.images} image(s)" + (f", {len(self.videos)} video(s) ({frames} frames)" if self.videos else "")
        found = ", ".join(f"{n} {name}" for name, n in self.classes.most_common()) or "nothing"
        lines = [f"{what} in {seconds:.1f} s: {sum(self.classes.values())} detection(s): {found}"]
        if self.pictures:
            ms = {k: v / self.pictures for k, v in self.speed.items()}
            lines.append(f"per picture: {ms.get('preprocess', 0):.1f} ms preprocess, "
                         f"{ms.get('inference', 0):.1f} ms inference, {ms.get('postprocess', 0):.1f} ms postprocess")
        saved = (["annotated pictures"] if images_saved and self.images else []) + \
                (["annotated videos"] if images_saved and self.videos else []) + ["predictions.json", "images.json"]
        lines.append(f"saved to {save_dir}: {', '.join(saved)}")
        return "\n".join(lines)
