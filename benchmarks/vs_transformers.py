"""Model-only CPU latency: our inference paths against Hugging Face transformers' RT-DETR (v2).

    .venv/bin/pip install -e ".[hf]"                                   # transformers
    .venv/bin/python benchmarks/vs_transformers.py                     # rtdetrv2_r18vd, 1x3x640x640, 2 threads
    .venv/bin/python benchmarks/vs_transformers.py --model rtdetrv2_r50vd --runs 30

Both models are built from their configurations with random weights (latency does not depend
on the weights; nothing is downloaded): ours from the zoo, Hugging Face's `RTDetrV2ForObjectDetection`
from an equivalent `RTDetrV2Config` (ResNet-vd backbone of the same depth, hidden size 256, the
same encoder expansion and decoder layers, 300 queries, 80 classes). Their parameter counts are
printed side by side, so that the comparison is seen to be like for like.

Every entry times the same call on the same [1, 3, H, W] tensor (a generated picture,
pre-processed as the predictor does), under torch.inference_mode:
  hf-eager          Hugging Face's model, `model(pixel_values=x)`, eager float32
  torch             our model as loaded, eager float32
  torch-fused       what our predictor runs by default (`optimize_for_inference` copy, float32)
  onnxruntime, openvino, openvino-bf16, *-int8   our ONNX export (raw outputs, no
                    post-processing in the graph, as the models above) in those runtimes
Post-processing is left out on both sides. Timed interleaved (`rtdetr.bench.interleaved`:
round robin, order rotated each iteration, a short idle pause before each call), warm-up
excluded. Prints p50 / p95 and ratios to our eager model and to Hugging Face's; writes JSON
(default benchmarks/results/vs_transformers.json).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch

import rtdetr
from rtdetr.bench import (PAUSE, Exports, OtherLoad, Stats, available_paths, build_predictor,
                          busy_note, check_paths, decode_image, interleaved, machine_info, model_call,
                          synthetic_picture, timed, torch_threads)
from rtdetr.core.memory import reuse_large_allocations
from rtdetr.core.images import preprocess

HF = "hf-eager"
DEFAULT_PATHS = ["torch", "torch-fused", "onnxruntime", "openvino", "openvino-bf16", "onnxruntime-int8",
                 "openvino-int8", "openvino-int8-bf16"]
# The Hugging Face configuration equivalent to each of our zoo models (everything not listed
# is RTDetrV2Config's default, which is the official r50vd setting: hidden 256, FFN 1024,
# 8 heads, 300 queries, 4 sampling points per level). ResNet-18 keeps live batch norms and
# ResNet-50 frozen ones, as in our zoo (and the official models).
HF_CONFIGS = {
    "rtdetrv2_r18vd": dict(backbone=dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic"),
                           encoder_in_channels=[128, 256, 512], hidden_expansion=0.5, decoder_layers=3,
                           freeze_backbone_batch_norms=False),
    "rtdetrv2_r50vd": dict(backbone=dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                                         layer_type="bottleneck"),
                           encoder_in_channels=[512, 1024, 2048], hidden_expansion=1.0, decoder_layers=6,
                           freeze_backbone_batch_norms=True),
}


def hf_model(name: str, num_classes: int = 80) -> torch.nn.Module:
    """Hugging Face's RT-DETRv2 for our zoo model `name`, random weights, eval mode (no download)."""
    from transformers import RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection

    spec = dict(HF_CONFIGS[name])
    backbone = RTDetrResNetConfig(**spec.pop("backbone"), out_features=["stage2", "stage3", "stage4"])
    config = RTDetrV2Config(backbone_config=backbone, use_pretrained_backbone=False, num_labels=num_classes,
                            d_model=256, num_queries=300, **spec)
    return RTDetrV2ForObjectDetection(config).eval()


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_steps(name: str, paths: list[str], imgsz: tuple[int, int], threads: int, workdir: Path):
    """{entry: (step for `interleaved`, what it runs)} and the two models' parameter counts."""
    ours = rtdetr.load_model(name, weights=None)
    hf = hf_model(name, ours.num_classes)
    counts = {"ours": parameters(ours), "hf": parameters(hf)}
    picture = decode_image(synthetic_picture())
    x = preprocess(picture, imgsz).unsqueeze(0)
    exports = Exports(workdir, ours, imgsz, [picture], postprocess=False)  # raw outputs, as the models
    steps = {HF: (timed(lambda: hf(pixel_values=x)), "Hugging Face transformers RTDetrV2ForObjectDetection, eager")}
    for path in paths:
        print(f"preparing {path}")
        predictor, detail = build_predictor(path, ours, exports, imgsz, threads, conf=0.5)
        call = model_call(predictor)
        steps[path] = (timed(lambda call=call: call(x)), detail)
    return steps, counts


def table(rows: dict[str, dict], header: str) -> str:
    lines = [header, f"{'entry':<18}{'p50 ms':>9}{'p95 ms':>9}{'vs torch':>10}{'vs HF':>8}  what ran", "-" * 100]
    for name, r in rows.items():
        vs_torch = f"{r['ratio_vs_torch']:.2f}x" if r["ratio_vs_torch"] is not None else "-"
        lines.append(f"{name:<18}{r['p50']:>9.1f}{r['p95']:>9.1f}{vs_torch:>10}{r['ratio_vs_hf']:>7.2f}x  {r['detail']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rtdetrv2_r18vd", choices=sorted(HF_CONFIGS))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--paths", nargs="+", default=None, help=f"our paths (default: {' '.join(DEFAULT_PATHS)})")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause-ms", type=float, default=PAUSE * 1e3)
    parser.add_argument("--workdir", type=Path, default=None, help="where the exports go (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vs_transformers.json")
    args = parser.parse_args()
    reuse_large_allocations()  # as rtdetr's command line, predictor and trainer do (rtdetr.core.memory)

    paths = check_paths(args.paths) if args.paths else [p for p in DEFAULT_PATHS if p in available_paths()]
    imgsz = (args.imgsz, args.imgsz)
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # exporter and runtime notes, not results
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        steps, counts = build_steps(args.model, paths, imgsz, args.threads, workdir)
        print(f"parameters: ours {counts['ours'] / 1e6:.2f}M, Hugging Face {counts['hf'] / 1e6:.2f}M "
              f"({(counts['hf'] / counts['ours'] - 1) * 100:+.2f}%)")
        print(f"timing {len(steps)} entries: {args.warmup} warm-up + {args.runs} runs, interleaved")
        with torch.inference_mode(), OtherLoad() as other:
            samples = interleaved({k: step for k, (step, _) in steps.items()}, args.runs, args.warmup,
                                  args.pause_ms / 1e3)

    stats = {k: Stats.of(v["inference"]) for k, v in samples.items()}
    rows = {k: {**vars(s), "detail": steps[k][1],
                "ratio_vs_torch": s.p50 / stats["torch"].p50 if "torch" in stats else None,
                "ratio_vs_hf": s.p50 / stats[HF].p50} for k, s in stats.items()}
    machine = machine_info(args.threads)
    machine.update(transformers=__import__("transformers").__version__, other_load_cores=other.cores)
    header = (f"{args.model}, model only, 1x3x{args.imgsz}x{args.imgsz}, {args.threads} threads, {args.runs} runs "
              f"after {args.warmup} warm-up, interleaved; {machine['cpu']} (other processes: {other.cores} cores), "
              f"torch {machine['torch']}, transformers {machine['transformers']}")
    print(table(rows, header))
    busy = busy_note(other.cores)
    if busy:
        print(f"note: {busy}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "imgsz": list(imgsz), "batch": 1, "runs": args.runs, "warmup": args.warmup,
            "threads": args.threads, "pause_ms": args.pause_ms, "parameters": counts, "machine": machine,
            "notes": [busy] if busy else []}
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
