"""`rtdetr train` and `rtdetr val`: every TrainConfig field is a command-line option."""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields

from rtdetr.train.config import TrainConfig, defaults

OPTIONAL_NONE = ("none", "null", "")


def _parse_optional(kind):
    def parse(text: str):
        return None if text.lower() in OPTIONAL_NONE else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _parse_resume(text: str):
    return {"true": True, "false": False}.get(text.lower(), text)


def _help(default) -> str:
    return "(default: the recipe's)" if default is None else "(default %(default)s)"


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, typed from its annotation. A field whose default is None
    keeps None when the option is not given: the run then takes the recipe's value."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in ("class_names",):
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        default = f.default
        if f.name == "data":
            parser.add_argument(flag, required=True, help="data set folder or file (COCO, YOLO data.yaml, VOC)")
        elif f.name == "imgsz":
            parser.add_argument(flag, type=int, nargs="+", default=default, metavar="SIZE",
                                help="H W, or one size for square (default: the recipe's eval size)")
        elif f.name == "losses":
            parser.add_argument(flag, nargs="+", default=default, metavar="NAME",
                                help="criterion losses by name: vfl or mal, boxes, local (default: the recipe's)")
        elif f.name == "resume":
            parser.add_argument(flag, type=_parse_resume, nargs="?", const=True, default=False,
                                help="resume the run folder's last.pt, or a given last.pt")
        elif f.name == "model":
            parser.add_argument(flag, default=default, help="zoo name or 'demo' (default %(default)s)")
        elif hint is bool or set(args) == {bool, type(None)}:  # --x / --no-x; neither: the default (None: recipe)
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help="(default: the recipe's or the model's)" if default is None else None)
        elif hint in (int, float, str):
            parser.add_argument(flag, type=hint, default=default, help=_help(default))
        else:  # Optional[...] / unions: "none" means None
            kind = next(a for a in args if a is not type(None))
            kind = kind if kind in (int, float, str) else str
            parser.add_argument(flag, type=_parse_optional(kind), default=default, help=_help(default))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: getattr(args, k) for k in defaults() if hasattr(args, k)}
    values["data"] = args.data
    return TrainConfig.from_kwargs(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from rtdetr.train.trainer import train
    result = train(config_from_args(args))
    if result.best is not None:
        print(f"best AP50:95 {result.best.ap:.4f}, AP50 {result.best.ap50:.4f} (epoch {result.best_epoch + 1}); "
              f"weights in {result.run_dir / 'weights'}")
    else:  # never validated, or a validation split without objects: no epoch was better than another
        print(f"no validation scored, so no best.pt; the weights are in {result.run_dir / 'weights' / 'last.pt'}")
    return 0


def cmd_tune_distill(args: argparse.Namespace) -> int:
    from rtdetr.train.tune_distill import report_table, tune_distill
    report = tune_distill(config_from_args(args), args.grid)
    print(report_table(report))
    print(f"wrote {args.project}/{args.name}.json")
    return 0


def cmd_val(args: argparse.Namespace) -> int:
    from rtdetr.api import val
    imgsz = None if args.imgsz is None else args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz)
    result = val(args.weights, args.data, split=args.split, imgsz=imgsz, batch=args.batch, workers=args.workers,
                 device=args.device, decoder_layers=args.decoder_layers, runtime=args.runtime,
                 precision=args.precision, threads=args.threads)
    print(result.summary())
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
    return 0


def add_train_commands(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a detector", description=TrainConfig.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_options(p)
    p.set_defaults(func=cmd_train)

    from rtdetr.train.tune_distill import __doc__ as tune_doc
    p = sub.add_parser("tune-distill", help="measure GAM's band: one run per static distillation weight",
                       description=tune_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_options(p)
    p.add_argument("--grid", type=float, nargs="+", default=[1.0, 5.0, 20.0], metavar="WEIGHT",
                   help="the static distillation weights to try (default %(default)s)")
    p.set_defaults(func=cmd_tune_distill, name="tune_distill")

    p = sub.add_parser("val", help="COCO metrics of a checkpoint or an exported model on a data set split")
    p.add_argument("--weights", required=True,
                   help="a checkpoint saved by rtdetr (best.pt, last.pt), or an exported model (.onnx, .xml)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int, nargs="+", default=None,
                   help="H W, or one size (default: an exported model's own size, else 640)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--decoder-layers", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino"], default=None,
                   help="for an .onnx file: which runtime runs it (default onnxruntime; .xml files run on openvino)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"], default=None,
                   help="an exported model's precision: OpenVINO's fp32 / bf16 / fp16, or int8 for a graph "
                        "quantised by `rtdetr export --int8` (its float parts in fp32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of an exported model's runtime")
    p.set_defaults(func=cmd_val)
