"""`rtdetr serve`: the HTTP detection service (`rtdetr.serve`) on uvicorn.

    rtdetr serve --weights best.pt                       # http://127.0.0.1:8000: POST /v1/detect, the page at /
    rtdetr serve --weights model.onnx --host 0.0.0.0 --port 8080 --max-batch 8 --conf 0.4
    rtdetr serve --model rtdetrv2_r18vd --workers 2      # two processes, each with its own model

The model is named as for `rtdetr predict` (a checkpoint carries its architecture; an .onnx or
.xml file is an exported graph run by ONNX Runtime / OpenVINO). Needs the serve extra
(`pip install 'rtdetr[serve]'`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from rtdetr.cli.predict import parse_imgsz

# Where `--workers N` hands the settings to the worker processes, which build their app with
# `app_from_env` (uvicorn starts N processes only from an import string).
SETTINGS_ENV = "RTDETR_SERVE_SETTINGS"
MISSING_EXTRA = "rtdetr serve needs the serve extra: pip install 'rtdetr[serve]'"


def add_serve_command(subparsers) -> argparse.ArgumentParser:
    """Add `serve` to the sub-parsers of `rtdetr.cli.app.build_parser()`."""
    p = subparsers.add_parser("serve", help=cmd_serve.__doc__, description=cmd_serve.__doc__)
    p.add_argument("--weights", "-w", default=None,
                   help="a checkpoint (its architecture inside), an exported .onnx / .xml, a zoo name, "
                        "'official' or 'none' (random; with --model)")
    p.add_argument("--model", "-m", default=None, help="zoo name (official weights unless --weights says otherwise)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="torch for checkpoints; for an .onnx file onnxruntime (default) or openvino")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None, help="OpenVINO's inference precision")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of an exported model's runtime")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1,
                   help="processes, each with its own model and a share of the CPU threads (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="pictures run together in one model call (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a picture waits for others to share its model call (default 5)")
    p.add_argument("--conf", type=float, default=0.5, help="default conf of a request that gives none (default 0.5)")
    p.add_argument("--max-det", type=int, default=300, help="default max_det of a request (default 300)")
    p.add_argument("--imgsz", type=parse_imgsz, default=None, metavar="SIZE",
                   help="default network input size: 640 or H,W (default: the model's own, else 640)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default 20)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest picture (default 40)")
    p.add_argument("--no-exif", action="store_true", help="do not turn photos upright by their EXIF orientation")
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model over HTTP: POST /v1/detect (a picture in, JSON detections out), GET /v1/model, /healthz, /docs."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (FastAPI's form parser)
        import uvicorn
    except ImportError:
        raise ImportError(MISSING_EXTRA) from None
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    settings = {k: getattr(args, k) for k in ("weights", "model", "runtime", "precision", "threads", "device",
                                              "workers", "max_batch", "batch_wait_ms", "conf", "max_det",
                                              "imgsz", "max_upload_mb", "max_megapixels", "no_exif")}
    # Loaded here in every case, so that a bad file or option is one line now, not a traceback
    # in each worker process.
    app = build_app(settings)
    print(f"rtdetr serve: {app.state.service.info['name']} at http://{args.host}:{args.port} "
          f"(POST /v1/detect, the page at /, /docs)", file=sys.stderr)
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port)
        return 0
    del app
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    uvicorn.run("rtdetr.cli.serve:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers)
    return 0


def build_app(settings: dict):
    """The app for `rtdetr serve`'s settings (its options, by their names)."""
    # Looked up when called (as `rtdetr track` does), not bound at import time.
    from rtdetr.cli.predict import cli_device, load_cli_model
    from rtdetr.serve import create_app
    device = cli_device(settings["device"])
    options = {k: settings[k] for k in ("runtime", "precision", "threads") if settings[k] is not None}
    if options.get("runtime") == "torch":  # the one runtime of a checkpoint; an exported file has others
        from rtdetr.api import EXPORTED_SUFFIXES
        if settings["weights"] and settings["weights"].lower().endswith(EXPORTED_SUFFIXES):
            raise ValueError(f"--runtime torch runs checkpoints; {settings['weights']} is an exported graph "
                             f"(--runtime onnxruntime or openvino)")
        del options["runtime"]
    detector = load_cli_model(settings["model"], settings["weights"], device, options)
    return create_app(detector, max_batch=settings["max_batch"], batch_wait_ms=settings["batch_wait_ms"],
                      max_upload_mb=settings["max_upload_mb"], max_megapixels=settings["max_megapixels"],
                      default_conf=settings["conf"], default_max_det=settings["max_det"],
                      imgsz=settings["imgsz"], exif=not settings["no_exif"])


def app_from_env():
    """The app of one `--workers N` process (uvicorn's factory), from the settings in $RTDETR_SERVE_SETTINGS."""
    import torch
    settings = json.loads(os.environ[SETTINGS_ENV])
    # N processes share the cores: each takes its part instead of all of them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings["workers"]))
    return build_app(settings)


__all__ = ["add_serve_command", "app_from_env", "build_app", "cmd_serve"]
