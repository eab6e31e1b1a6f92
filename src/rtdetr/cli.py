"""The `rtdetr` command line."""
from __future__ import annotations

import argparse
import sys

from . import zoo
from .checkpoint import CheckpointError
from .data import DatasetError
from .hub import WeightsDownloadError


def cmd_models(args: argparse.Namespace) -> int:
    """The zoo: every architecture, its COCO AP and release file."""
    print(f"{'model':<24} {'COCO AP':>7}  weights file")
    for name in zoo.list_models():
        w = zoo.get_entry(name).weights
        print(f"{name:<24} {w.coco_ap if w else '-':>7}  {w.filename if w else '-'}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch the release weights of zoo models into the cache."""
    from .api import resolve_weights
    for name in args.names:
        print(f"{name}: {resolve_weights(name)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Load weights into an architecture and run one forward pass; prints what it saw."""
    import torch
    from .api import load_model
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
    from .demo import run_demo
    run_demo(args.out, seed=args.seed, epochs=args.epochs, imgsz=args.imgsz, workers=args.workers)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model to ONNX (post-processing inside by default), optionally converted for OpenVINO."""
    from .api import load_model
    from .deploy import export_onnx, save_openvino
    weights = None if args.weights.lower() == "none" else args.weights
    model = load_model(args.model, weights=weights)
    out = args.out or f"{model.cfg.name}.onnx"
    h, w = args.imgsz if len(args.imgsz) == 2 else (args.imgsz[0], args.imgsz[0])
    path = export_onnx(model, out, imgsz=(h, w), opset=args.opset, dynamic_hw=args.dynamic_hw,
                       postprocess=not args.raw, num_top=args.num_top, decoder_layers=args.decoder_layers)
    print(f"wrote {path}")
    if args.format == "openvino":
        print(f"wrote {save_openvino(path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtdetr", description="RT-DETR object detection")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help=cmd_demo.__doc__)
    p.add_argument("--out", default="runs/demo", help="folder for the data, the run and the pictures")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--imgsz", type=int, default=224)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--imgsz", type=int, nargs="+", default=[640, 640], metavar="SIZE", help="H W (or one size)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--decoder-layers", type=int, default=None)
    p.add_argument("--num-top", type=int, default=300, help="detections per image kept by the graph")
    p.add_argument("--raw", action="store_true", help="output pred_logits / pred_boxes instead of detections")
    p.add_argument("--dynamic-hw", action="store_true", help="any input height and width (slower export)")
    p.set_defaults(func=cmd_export)

    from .predict.cli import add_predict_command
    from .train.cli import add_train_commands
    add_predict_command(sub)
    add_train_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, WeightsDownloadError, DatasetError, ValueError, TypeError, ImportError) as e:
        print(f"rtdetr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
