"""INT8 recipes on CPUs with and without VNNI: AP50:95 of the same int8 file on each kind.

    .venv/bin/python benchmarks/int8_cpus.py --weights runs/demo/train/weights/best.pt --data runs/demo/data

x86 CPUs without VNNI (AVX2 only: AMD Zen 1-3, Intel before Ice Lake / Alder Lake) run uint8 x
int8 products with `vpmaddubsw`, which adds each pair of products into an int16 that saturates
at 32767: with 8-bit weights (|w| <= 127) and uint8 activations (<= 255) one pair can reach
64770. A CPU with VNNI (or ARM's SDOT) sums in int32 and never saturates. The int8 file is made
once and deployed on both kinds, so its recipe must be exact on both.

This script quantises the fp32 graph of a trained checkpoint with each recipe (`--recipes`),
runs every int8 graph on this CPU and on an emulated CPU of another kind (`qemu-x86_64 -cpu
Haswell`: AVX2 + FMA, no AVX-512, no VNNI; ONNX Runtime picks its kernels from the CPUID that
qemu reports), and evaluates COCO AP50:95 on the val split from the detections each produced.
The emulated run checks accuracy only (it is ~50x slower); `--latency` times each recipe on this
CPU, interleaved, at --size.

Recipes (`quantize_int8` options): w8 = 8-bit weights [-127, 127] + uint8 activations (the
former default), w7 = 7-bit weights [-64, 64] + uint8 activations (reduce_range, the default),
s8 = 8-bit weights + int8 activations.

Needs qemu-user (`apt-get install qemu-user`) for the emulated column; without it only this CPU's.
Prints a table and writes JSON (default benchmarks/results/int8_cpus.json).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECIPES = {"w8": dict(reduce_range=False, activations="uint8"),
           "w7": dict(reduce_range=True, activations="uint8"),
           "s8": dict(reduce_range=False, activations="int8")}
EMULATED = "Haswell"  # qemu's CPU model: AVX2, FMA, no AVX-512, no VNNI


def worker(graph: str, feeds_file: str, out_file: str, runtime: str) -> None:
    """Run `graph` on every recorded feed (only numpy and the runtime imported: this runs under qemu)."""
    data = np.load(feeds_file)
    n = int(data["count"])
    if runtime == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        run = lambda feed: dict(zip(names, session.run(names, feed)))  # noqa: E731
    else:
        import openvino as ov
        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        run = lambda feed: {p.get_any_name(): request.infer(feed)[p] for p in compiled.outputs}  # noqa: E731
    outputs = {}
    for i in range(n):
        feed = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
        for name, value in run(feed).items():
            outputs[f"{i}/{name}"] = value
    np.savez(out_file, count=n, **outputs)


def record_and_evaluate(graph: Path, data: str, replay: dict | None = None, feeds_file: Path | None = None,
                        max_images: int | None = None):
    """AP50:95 of `graph` on the val split through `rtdetr val`'s evaluation. The graph's outputs
    come from ONNX Runtime here, or from `replay` (recorded elsewhere); `feeds_file` records the feeds."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from rtdetr.data import load_dataset
    from rtdetr.data.collate import collate_fn
    from rtdetr.data.transforms import val_transforms
    from rtdetr.runtime import OnnxRuntimeModel
    from rtdetr.eval.coco_eval import CocoEvaluator
    from rtdetr.eval.validate import evaluate

    model = OnnxRuntimeModel(graph, threads=2)
    native, feeds, calls = model._infer, [], [0]

    def infer(feed):
        if feeds_file is not None:
            feeds.append(feed)
        if replay is None:
            return native(feed)
        i, calls[0] = calls[0], calls[0] + 1
        return {name: replay[f"{i}/{name}"] for name in model.output_shapes}

    model._infer = infer
    dataset = load_dataset(data, "val", transforms=val_transforms(model.imgsz))
    images = dataset if max_images is None else Subset(dataset, range(min(max_images, len(dataset))))
    loader = DataLoader(images, batch_size=8, collate_fn=collate_fn, num_workers=0)
    result = evaluate(model, loader, CocoEvaluator.from_dataset(dataset), torch.device("cpu"))
    if feeds_file is not None:
        np.savez(feeds_file, count=len(feeds), **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    return result


def emulated_outputs(graph: Path, feeds_file: Path, runtime: str, tmp: Path) -> dict | str:
    """The graph's outputs on the emulated CPU, or why there are none."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        return "qemu-x86_64 not installed (apt-get install qemu-user)"
    out = tmp / f"{graph.stem}.{runtime}.emulated.npz"
    cmd = [qemu, "-cpu", EMULATED, sys.executable, __file__, "--worker", str(graph), str(feeds_file), str(out), runtime]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line and "TCG doesn't support" not in line]
        return f"emulated run failed: {(lines or ['?'])[-1][:160]}"
    return dict(np.load(out))


def with_outputs(path: Path, names: list[str], out: Path) -> Path:
    """A copy of the graph at `path` that also outputs the tensors `names`."""
    import onnx
    proto = onnx.load(str(path))
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    onnx.save(proto, str(out))
    return out


def trunk_errors(recipes: list[str], emulate: bool, tmp: Path) -> list[dict]:
    """The test suite's witness (tests/deploy/test_quantize.py): rtdetrv2_r18vd with the fixtures'
    recipe weights at 320x320, calibrated on six recipe noise images; relative L2 error of the
    six input projections' outputs (the trunk) on recipe images 0 and 1, per recipe, here and
    emulated."""
    import onnx
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fused import recipe_model

    from rtdetr.export import export_onnx
    from rtdetr.export.quantize import quantize_int8
    from tests.recipe import recipe_image

    size = 320
    fp32 = export_onnx(recipe_model("rtdetrv2_r18vd"), tmp / "r18.onnx", imgsz=size)
    names = [n.output[0] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv" and "input_proj" in n.name]
    as_picture = lambda t: (t[0].permute(1, 2, 0) * 255).round().byte().numpy()  # noqa: E731
    calib = [as_picture(recipe_image(seed, size, size)) for seed in range(100, 106)]
    feeds = tmp / "r18_feeds.npz"
    images = [recipe_image(i, size, size).numpy() for i in (0, 1)]
    np.savez(feeds, count=2, **{f"{i}/images": x for i, x in enumerate(images)},
             **{f"{i}/orig_target_sizes": np.array([[size, size]], np.int64) for i in range(2)})

    def features(graph: Path, emulated: bool) -> list[np.ndarray] | str:
        probe = with_outputs(graph, names, tmp / f"{graph.stem}.probe.onnx")
        if emulated:
            got = emulated_outputs(probe, feeds, "onnxruntime", tmp)
            if isinstance(got, str):
                return got
        else:
            worker(str(probe), str(feeds), str(tmp / "here.npz"), "onnxruntime")
            got = dict(np.load(tmp / "here.npz"))
        return [np.concatenate([got[f"{i}/{n}"].ravel() for n in names]) for i in range(2)]

    reference = features(fp32, False)
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    rows = []
    for name in recipes:
        graph = quantize_int8(fp32, tmp / f"r18.{name}.int8.onnx", calib, **RECIPES[name])
        row = {"recipe": name, "here": max(rel(q, f) for q, f in zip(features(graph, False), reference))}
        if emulate:
            got = features(graph, True)
            row["emulated"] = got if isinstance(got, str) else max(rel(q, f) for q, f in zip(got, reference))
        rows.append(row)
        print(row, flush=True)
    return rows


def latency(fp32: Path, graphs: dict[str, Path], size: tuple[int, int], runs: int) -> dict[str, dict]:
    """Median ms per recipe and runtime on this CPU, interleaved (batch 1, 2 threads)."""
    from rtdetr.runtime import OnnxRuntimeModel, OpenVinoModel
    models = {"onnxruntime fp32": OnnxRuntimeModel(fp32, threads=2)}
    for name, g in graphs.items():
        models[f"onnxruntime int8 {name}"] = OnnxRuntimeModel(g, threads=2)
        models[f"openvino int8 {name}"] = OpenVinoModel(g, "fp32", threads=2)
    x, sizes = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32), np.array([[size[1], size[0]]])
    times = {k: [] for k in models}
    for i in range(2 + runs):
        for k, m in models.items():
            time.sleep(0.2)  # the runtimes' threads spin a while after a call
            t0 = time.perf_counter()
            m.run(x, sizes)
            if i >= 2:
                times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in times.items()}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a trained checkpoint (e.g. the demo's best.pt)")
    parser.add_argument("--data", help="its data set (val split evaluated, train split calibrates)")
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime"], choices=["onnxruntime", "openvino"],
                        help="runtimes run on the emulated CPU (OpenVINO's JIT kernels are slow to emulate)")
    parser.add_argument("--max-images", type=int, default=24,
                        help="val images evaluated (the first N; emulation runs ~100x slower than this CPU)")
    parser.add_argument("--trunk", action="store_true", help="also the test suite's witness: r18 trunk error")
    parser.add_argument("--skip-ap", action="store_true", help="skip the AP part (the demo checkpoint)")
    parser.add_argument("--latency", action="store_true", help="also time each recipe on this CPU")
    parser.add_argument("--latency-model", default="rtdetrv2_r18vd", help="zoo model (recipe weights) for --latency")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), help="--latency input size")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_cpus.json")
    args = parser.parse_args()

    import rtdetr
    from rtdetr.core.cpu import cpu_capabilities
    from rtdetr.export import export_onnx
    from rtdetr.export.quantize import quantize_int8

    caps = cpu_capabilities()
    result = {"cpu": caps.to_dict(), "emulated": f"qemu-x86_64 -cpu {EMULATED}", "weights": args.weights,
              "data": args.data, "imgsz": args.imgsz, "max_images": args.max_images, "accuracy": []}
    with tempfile.TemporaryDirectory(prefix="int8-cpus-") as tmp:
        tmp = Path(tmp)
        if args.trunk:
            result["trunk"] = trunk_errors(args.recipes, True, tmp)
        rows = []
        if not args.skip_ap:
            rows = result["accuracy"] = accuracy(args, tmp)
        if args.latency:
            model = rtdetr.create_model(args.latency_model).eval()
            big = export_onnx(model, tmp / "latency.onnx", imgsz=tuple(args.size))
            calib = [np.asarray(np.random.default_rng(i).integers(0, 255, (480, 640, 3)), np.uint8) for i in range(4)]
            lat_graphs = {n: quantize_int8(big, tmp / f"latency.{n}.int8.onnx", calib, **RECIPES[n])
                          for n in args.recipes}
            result["latency"] = latency(big, lat_graphs, tuple(args.size), args.runs)
    report(args, caps, result, rows)


def accuracy(args, tmp: Path) -> list[dict]:
    """AP50:95 of the fp32 graph and of each recipe's int8 graph, here and emulated."""
    import rtdetr
    from rtdetr.export import export_onnx
    from rtdetr.export.quantize import quantize_int8
    net = rtdetr.load_model(args.weights)
    fp32 = export_onnx(net, tmp / "fp32.onnx", imgsz=args.imgsz)
    feeds = tmp / "feeds.npz"
    n = args.max_images
    base = record_and_evaluate(fp32, args.data, feeds_file=feeds, max_images=n)
    rows = [{"recipe": "fp32", "here": base.ap, "here_ap50": base.ap50}]
    graphs = {}
    for name in args.recipes:
        graphs[name] = quantize_int8(fp32, tmp / f"{name}.int8.onnx", Path(args.data) / "train",
                                     **RECIPES[name])
        here = record_and_evaluate(graphs[name], args.data, max_images=n)
        row = {"recipe": name, "here": here.ap, "here_ap50": here.ap50}
        for runtime in args.runtimes:
            got = emulated_outputs(graphs[name], feeds, runtime, tmp)
            if isinstance(got, str):
                row[f"emulated_{runtime}"] = got
            else:
                emulated = record_and_evaluate(graphs[name], args.data, replay=got, max_images=n)
                row[f"emulated_{runtime}"], row[f"emulated_{runtime}_ap50"] = emulated.ap, emulated.ap50
        rows.append(row)
        print(row, flush=True)
    return rows


def report(args, caps, result: dict, rows: list[dict]) -> None:
    if "trunk" in result:
        print("\ntrunk relative error vs fp32 (r18, recipe weights, 320x320; the test bounds it at 0.04)")
        for r in result["trunk"]:
            emulated = r.get("emulated", float("nan"))
            print(f"{r['recipe']:<8} here {r['here']:.4f}  emulated AVX2 "
                  f"{emulated if isinstance(emulated, str) else f'{emulated:.4f}'}")
    print(f"\nCPU here: {caps.model}: {caps.summary()}; emulated: qemu -cpu {EMULATED} (AVX2, no VNNI); "
          f"the first {args.max_images} val images")
    print(f"{'recipe':<8}{'AP here':>10}{'AP50 here':>11}" + "".join(f"{'AP ' + r[:4] + ' emul.':>18}" for r in args.runtimes))
    for r in rows:
        cells = "".join(f"{r.get(f'emulated_{rt}', float('nan')) if not isinstance(r.get(f'emulated_{rt}'), str) else float('nan'):>18.4f}"
                        for rt in args.runtimes)
        print(f"{r['recipe']:<8}{r['here']:>10.4f}{r['here_ap50']:>11.4f}{cells}")
    for r in rows:
        for rt in args.runtimes:
            if isinstance(r.get(f"emulated_{rt}"), str):
                print(f"{r['recipe']} {rt} emulated: {r[f'emulated_{rt}']}")
    if "latency" in result:
        print(f"\nlatency on this CPU, {args.latency_model} {args.size[0]}x{args.size[1]}, batch 1, 2 threads, "
              f"median of {args.runs} interleaved")
        for k, v in result["latency"].items():
            print(f"{k:<28}{v['median_ms']:>9.1f} ms  (min {v['min_ms']:.1f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
