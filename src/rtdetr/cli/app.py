"""The `rtdetr` command line."""
from __future__ import annotations

import argparse
import os
import sys

from rtdetr.core.hub import WeightsDownloadError
from rtdetr.models import zoo


def cmd_models(args: argparse.Namespace) -> int:
    """The zoo: every architecture, its COCO AP, release file and licence; files marked * are on
    Google Drive and need a browser (`rtdetr download NAME` says where to put them)."""
    print(f"{'model':<24} {'COCO AP':>7}  {'licence':<10}  weights file")
    for name in zoo.list_models():
        w = zoo.get_entry(name).weights
        file = "-" if w is None else w.filename + ("" if w.direct else " *")
        print(f"{name:<24} {w.coco_ap if w else '-':>7}  {w.licence if w else '-':<10}  {file}")
    print("* on Google Drive: download it in a browser (`rtdetr download NAME` prints where to put it)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch the release weights of zoo models into the cache."""
    from rtdetr.models.weights import resolve_weights
    for name in args.names:
        print(f"{name}: {resolve_weights(name)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Load weights into an architecture and run one forward pass; prints what it saw."""
    import torch
    from rtdetr.api import load_model
    weights = None if args.weights.lower() == "none" else args.weights
    model = load_model(args.model, weights=weights, decoder_layers=args.decoder_layers)
    h, w = args.imgsz
    with torch.no_grad():
        out = model(torch.rand(1, 3, h, w))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{model.cfg.name}: {n_params / 1e6:.2f}M parameters, {model.num_classes} classes, "
          f"{model.decoder.eval_layers}/{model.decoder.num_layers} decoder layers; "
          f"pred_logits {list(out['pred_logits'].shape)}, pred_boxes {list(out['pred_boxes'].shape)} at {h}x{w}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the synthetic shapes data set, train the small demo model on the CPU, evaluate, predict."""
    from rtdetr.cli.demo import run_demo
    run_demo(args.out, seed=args.seed, epochs=args.epochs, minutes=args.minutes, imgsz=args.imgsz, workers=args.workers,
             task=args.task)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model to ONNX (post-processing inside by default), optionally converted for OpenVINO
    and / or quantised to int8, and / or laid out as a Triton model repository."""
    from rtdetr.api import load_model
    from rtdetr.core.sizes import check_imgsz
    from rtdetr.export import export_onnx, save_openvino
    if args.int8 and args.calib is None:
        raise ValueError("--int8 needs calibration images: --calib FOLDER (images, or a data set: its train split)")
    weights = None if args.weights.lower() == "none" else args.weights
    model = load_model(args.model, weights=weights)
    out = args.out or f"{model.cfg.name}.onnx"
    size = check_imgsz(args.imgsz or model.default_imgsz or 640)   # a trained checkpoint: the size it was trained at
    path = export_onnx(model, out, imgsz=size, opset=args.opset, dynamic_hw=args.dynamic_hw,
                       postprocess=not args.raw, num_top=args.num_top, decoder_layers=args.decoder_layers)
    print(f"wrote {path}")
    if args.triton:
        from rtdetr.export.triton import serve_command, write_triton_repository
        model_dir = write_triton_repository(path, args.triton)
        print(f"wrote {model_dir}/config.pbtxt and {model_dir}/1/model.onnx (a Triton model repository: {args.triton})")
        print(f"serve it: {serve_command(args.triton)}")
        print("(Triton needs an NVIDIA GPU machine with Docker and the NVIDIA container toolkit; not run here)")
    if args.int8:
        from rtdetr.export.quantize import quantize_int8
        int8 = quantize_int8(path, calibration=args.calib, max_images=args.calib_images,
                             imgsz=size if args.dynamic_hw else None)
        print(f"wrote {int8} (int8: run it with ONNX Runtime, or OpenVINO for int8 kernels)")
    if args.format == "openvino":
        print(f"wrote {save_openvino(path)}")
        if args.int8:  # OpenVINO reads the QDQ pairs and runs the quantised convolutions in int8
            print(f"wrote {save_openvino(int8)}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Time inference paths end to end (decode, pre-processing, inference, post-processing), interleaved."""
    from pathlib import Path

    from rtdetr.api import load_model
    from rtdetr.bench.benchmark import check_paths, run_benchmark
    paths = check_paths(args.paths) if args.paths else None  # a bad name fails before the model loads
    weights = None if args.weights.lower() == "none" else args.weights
    if weights is None:
        print(f"{args.model}: random weights (--weights none): the latency holds, the detections mean nothing")
    model = load_model(args.model, weights=weights)
    report = run_benchmark(model, paths, imgsz=args.imgsz,   # None: the size a checkpoint was trained at
                           batches=args.batch, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           image=args.image, conf=args.conf, workdir=args.workdir, onnx=args.onnx,
                           onnx_int8=args.onnx_int8, calibration=args.calibration, pause=args.pause_ms / 1e3,
                           weights=_weights_label(args.model, weights), data=args.data,
                           data_images=args.data_images, ap_drop=args.ap_drop)
    print(report.table())
    out = args.json or Path("runs/benchmark") / f"{report.model}.json"
    report.to_json(out)
    print(f"wrote {out}")
    return 0


def _weights_label(model: str, weights: str | None) -> str:
    """What the benchmark's header says was loaded: a checkpoint or exported file given as MODEL
    carries its own weights (the default 'official' means nothing for it)."""
    from pathlib import Path
    if weights is None:
        return "none (random)"
    if weights == "official" and Path(model).is_file():
        return f"those in {model}"
    return str(weights)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdetr", description="RT-DETR object detection")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help=cmd_demo.__doc__)
    p.add_argument("--out", default="runs/demo", help="folder for the data, the run and the pictures")
    p.add_argument("--minutes", type=float, default=None,
                   help="training time budget; the epochs follow from it (default 9.2, or none with --epochs)")
    p.add_argument("--epochs", type=int, default=None, help="a fixed number of epochs instead of the time budget")
    p.add_argument("--imgsz", type=int, default=None, help="default 224 (detect) or 160 (segment)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=("detect", "segment"), default="detect",
                   help="boxes, or boxes and instance masks (default: detect)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help=cmd_models.__doc__)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("download", help=cmd_download.__doc__)
    p.add_argument("names", nargs="+", choices=zoo.list_models(), metavar="NAME")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("check", help=cmd_check.__doc__)
    p.add_argument("model", help="zoo name, or a checkpoint saved by rtdetr")
    p.add_argument("--weights", default="official", help="'official' (default), a zoo name, a file, or 'none' (random)")
    p.add_argument("--decoder-layers", type=int, default=None)
    p.add_argument("--imgsz", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("export", help=cmd_export.__doc__)
    p.add_argument("model", help="zoo name, or a checkpoint saved by rtdetr")
    p.add_argument("--weights", default="official", help="'official' (default), a zoo name, a file, or 'none'")
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    p.add_argument("--out", default=None, help="the .onnx file to write (default: MODEL.onnx)")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="SIZE",
                   help="H W (or one size; default: the size a checkpoint was trained at, else 640)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--decoder-layers", type=int, default=None)
    p.add_argument("--num-top", type=int, default=300, help="detections per image kept by the graph")
    p.add_argument("--raw", action="store_true", help="output pred_logits / pred_boxes instead of detections")
    p.add_argument("--dynamic-hw", action="store_true", help="any input height and width (slower export)")
    p.add_argument("--int8", action="store_true",
                   help="also write MODEL.int8.onnx, quantised to int8 (and its OpenVINO IR with --format openvino)")
    p.add_argument("--calib", default=None, metavar="DATA",
                   help="calibration images for --int8: a folder of images, or a data set folder (its train split)")
    p.add_argument("--calib-images", type=int, default=32, metavar="N", help="calibration images used (default 32)")
    p.add_argument("--triton", default=None, metavar="DIR",
                   help="also write an NVIDIA Triton model repository of the ONNX graph there (DIR/NAME/config.pbtxt)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help=cmd_benchmark.__doc__)
    p.add_argument("model", help="zoo name, or a checkpoint saved by rtdetr")
    p.add_argument("--weights", default="official", help="'official' (default), a zoo name, a file, or 'none' (random)")
    p.add_argument("--paths", nargs="+", default=None, metavar="PATH",
                   help="torch torch-fused torch-fused-bf16 onnxruntime openvino openvino-bf16 onnxruntime-int8 "
                        "openvino-int8 openvino-int8-bf16 (default: all; one that cannot run here, for want of a "
                        "package or an instruction set, is skipped with the reason)")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="SIZE",
                   help="H W (or one size; default: the size a checkpoint was trained at, else 640)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], metavar="N", help="batch sizes, e.g. 1 8")
    p.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: torch's)")
    p.add_argument("--runs", type=int, default=20, help="timed iterations (each runs every path once)")
    p.add_argument("--warmup", type=int, default=3, help="iterations run first and not counted")
    p.add_argument("--image", default=None, help="a picture file (default: a generated 1280x720 JPEG)")
    p.add_argument("--conf", type=float, default=0.5)
    p.add_argument("--json", default=None, help="where to write the report (default: runs/benchmark/MODEL.json)")
    p.add_argument("--workdir", default=None, help="folder for the exports (default: a temporary one)")
    p.add_argument("--onnx", default=None, help="an existing ONNX export to use instead of exporting")
    p.add_argument("--onnx-int8", default=None, help="an existing int8 ONNX graph to use instead of quantizing")
    p.add_argument("--calibration", default=None, help="int8 calibration images (default: with --data, its train split; else the benchmark picture)")
    p.add_argument("--pause-ms", type=float, default=10.0, help="idle time before each timed step")
    p.add_argument("--data", default=None, metavar="DATASET",
                   help="also measure each path's box AP50:95 and AP50 on this data set's val split, run by that path")
    p.add_argument("--data-images", type=int, default=None, metavar="N", help="evaluate the first N val images (default: all)")
    p.add_argument("--ap-drop", type=float, default=0.01, metavar="AP",
                   help="flag a path whose AP50:95 is more than this (absolute) below eager torch's (default 0.01: "
                        "1 AP point, the usual bar for a lossless precision change)")
    p.set_defaults(func=cmd_benchmark)

    from rtdetr.cli.predict import add_predict_command
    from rtdetr.cli.serve import add_serve_command
    from rtdetr.cli.track import add_track_command
    from rtdetr.cli.train import add_train_commands
    add_predict_command(sub)
    add_serve_command(sub)
    add_track_command(sub)
    add_train_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rtdetr.core.memory import reuse_large_allocations
    reuse_large_allocations()  # see rtdetr.core.memory: large CPU tensors without page faults
    try:
        status = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here when output is buffered
        return status
    # Every error of ours is a ValueError with a one-line message (CheckpointError, DatasetError,
    # ImageReadError, SourceError, UnsupportedOnThisCPU), or a failed download.
    except (WeightsDownloadError, ValueError, TypeError, ImportError) as e:
        print(f"rtdetr: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rtdetr models | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
