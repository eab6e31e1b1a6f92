"""End-to-end latency of a detector's inference paths, measured side by side in one run.

    from rtdetr.bench.benchmark import run_benchmark
    report = run_benchmark(model, paths=["torch", "torch-fused", "onnxruntime"], imgsz=640,
                           batches=(1, 8), runs=20, warmup=3, threads=2)
    print(report.table())
    report.to_json("runs/benchmark/rtdetrv2_r18vd.json")

Paths (`PATHS`), each run through the library's own `Predictor`, as `rtdetr predict` runs it:
  torch             the model itself, eager float32 (`Predictor(optimize=False)`)
  torch-fused       the predictor's default: the `optimize_for_inference` copy, float32
  torch-fused-bf16  that copy with a bfloat16 backbone and encoder
  onnxruntime       the ONNX graph (post-processing inside) in ONNX Runtime, float32
  openvino          the same graph in OpenVINO, float32; openvino-bf16: bfloat16
  onnxruntime-int8, openvino-int8   the graph quantized by `rtdetr.export.quantize.quantize_int8`
  openvino-int8-bf16  that int8 graph in OpenVINO with its float parts in bfloat16

What one sample is: for one path and batch size, the picture's encoded bytes (in memory) are
decoded N times (`decode`), then `Predictor.predict_batch` runs on the N pictures and reports
its own `preprocess` (resize, normalise, stack), `inference` (the backend's `detect`: the network
and the post-processing, top-k and boxes scaled to the picture's pixels, for every path alike)
and `postprocess` (what remains: the `conf` filter and the `Result`s). `e2e` is the wall time around
all of it, so it includes what falls between the stages; `sum` is the sum of the four stages.
All times are milliseconds per batch.

Why interleaved: on a shared machine, load comes and goes. Each iteration runs every (path,
batch) once, in an order rotated by one each time, so that load falls on every path alike.
Each step starts after a short idle pause (10 ms, untimed): the worker threads of the runtime
that ran before (PyTorch's, ONNX Runtime's and OpenVINO's pools spin-wait for a while after a
call) must not compete with the next path, which a single-runtime application would not see.
Warm-up iterations are run the same way and discarded.

With a data set (`data=`), each path's COCO box AP50:95 and AP50 on its val split, computed by
that path's own artefact at its own precision after timing (`bench.accuracy`), stand beside its
latency; a path more than `ap_drop` below eager torch is flagged ('!' and a note).

The report holds every sample, the percentiles (numpy's, linear interpolation), throughput
(images / s = images run / total e2e time), ratios to the eager `torch` path, whether the paths
found the same number of detections on the picture, the machine, and how many cores other
processes kept busy while timing (with a note when that was significant). It reports what was
measured and nothing more.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rtdetr.core.sizes import check_imgsz
from rtdetr.models.nn.detector import RTDETR, module_of
from rtdetr.predict.predictor import Predictor, default_imgsz
from rtdetr.predict.sources import Frame
from rtdetr.runtime.precision import int8_note
from rtdetr.bench.report import Agreement, BenchmarkReport, REFERENCE, add_ratios, path_result
from rtdetr.bench.images import decode_image, describe_image, read_image
from rtdetr.bench.timing import OtherLoad, PAUSE, busy_note, interleaved, machine_info, pipeline_step, torch_threads
from rtdetr.bench.paths import Exports, PATHS, build_predictor, check_paths, missing
from rtdetr.bench.accuracy import AP_DROP, Accuracy, ValImages, path_accuracy


def run_benchmark(model, paths: Sequence[str] | None = None, *, imgsz: int | tuple[int, int] | None = None,
                  batches: Sequence[int] = (1,), runs: int = 20, warmup: int = 3, threads: int | None = None,
                  image: bytes | str | Path | None = None, conf: float = 0.5, workdir: str | Path | None = None,
                  onnx: str | Path | None = None, onnx_int8: str | Path | None = None, calibration=None,
                  pause: float = PAUSE, weights: str = "?", data: str | Path | None = None,
                  data_images: int | None = None, ap_drop: float = AP_DROP,
                  log: Callable[[str], None] | None = print) -> BenchmarkReport:
    """Measure `paths` of `model` (an `RTDETR`) on one picture, interleaved; see the module docstring.

    paths:    names from `PATHS` (default: all); one that cannot run here (a package or an
              instruction set missing) is skipped, with the reason in `report.skipped` and a note
    imgsz:    network input size (int or (h, w); default: the size a trained checkpoint was trained
              at, else 640); batches: batch sizes, each measured
    runs / warmup: timed / discarded iterations (each runs every path at every batch size once)
    threads:  torch intra-op threads, ONNX Runtime intra-op threads and OpenVINO inference threads
              (default: torch's current number)
    image:    encoded picture bytes or a file (default: `synthetic_picture()`, 1280x720 JPEG)
    workdir:  where exports go (default: a temporary folder, removed afterwards)
    onnx / onnx_int8: existing exports to use instead of exporting (the fp32 graph must end in
              post-processing or give raw outputs, as `export_onnx` writes them)
    calibration: images for the int8 quantizer (a folder or a list of files or arrays; default:
              with `data`, that data set (the quantizer reads its train split), since int8 accuracy
              is then measured; else the benchmark picture alone, enough for timing)
    pause:    idle seconds before each timed step (see `interleaved`)
    weights:  how the weights were chosen, recorded in the report (e.g. "none (random)")
    data:     a data set (COCO, YOLO or VOC folder): each path's box AP50:95 and AP50 on its val
              split, computed by that path's own predictor artefact after timing (`bench.accuracy`);
              a path more than `ap_drop` (absolute, default 0.01) below eager torch is flagged
    data_images: evaluate the first N val images only (default: all)
    log:      where progress notes go (None: nowhere)
    """
    class_names = getattr(model, "class_names", None)  # a Detector's; its module has none
    imgsz = imgsz if imgsz is not None else (default_imgsz(model) or 640)
    model = module_of(model)
    if not isinstance(model, RTDETR):
        raise TypeError(f"run_benchmark needs an RTDETR model (zoo name or checkpoint), got {type(model).__name__}; "
                        f"pass an exported graph as onnx=")
    log = log or (lambda _: None)
    paths = check_paths(paths) if paths is not None else list(PATHS)  # what cannot run is skipped, said why
    threads = torch.get_num_threads() if threads is None else threads
    if runs < 1 or warmup < 0 or threads < 1 or not batches or min(batches) < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0, threads >= 1 and batch sizes >= 1; got runs={runs}, "
                         f"warmup={warmup}, threads={threads}, batches={list(batches)}")
    if ap_drop < 0:
        raise ValueError(f"ap_drop is an absolute AP50:95 drop, at least 0; got {ap_drop}")
    imgsz = check_imgsz(imgsz)
    # The val split is read first: a data set that does not fit the model fails before any export.
    val = ValImages(data, imgsz, data_images, class_names, model.num_classes) if data is not None else None
    picture, source = read_image(image)
    skipped = {p: why for p in paths if (why := missing(p)) is not None}
    for p, why in skipped.items():
        log(f"skipping {p}: {why}")
    paths = [p for p in paths if p not in skipped]
    if not paths:
        raise ValueError(f"none of the requested paths can run here ({'; '.join(f'{p}: {w}' for p, w in skipped.items())})")

    with tempfile.TemporaryDirectory(prefix="rtdetr-bench-") as tmp, torch_threads(threads):
        folder = Path(workdir) if workdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        calib = calibration if calibration is not None else (data if data is not None else [decode_image(picture)])
        exports = Exports(folder, model, imgsz, calib,
                          Path(onnx) if onnx else None, Path(onnx_int8) if onnx_int8 else None)
        predictors, details = {}, {}
        for p in paths:
            log(f"preparing {p}")
            predictors[p], details[p] = build_predictor(p, model, exports, imgsz, threads, conf)
        agreement = check_agreement(predictors, picture)
        steps = {(p, b): pipeline_step(predictors[p], picture, b) for p in paths for b in batches}
        log(f"timing {len(paths)} path(s) x batch {', '.join(map(str, batches))}: {warmup} warm-up + {runs} runs")
        with OtherLoad() as other:
            samples = interleaved(steps, runs, warmup, pause)
        accuracy, evaluation = {}, None
        if val is not None:  # after timing: evaluating warms nothing the timing would see
            ref = {REFERENCE: predictors[REFERENCE]} if REFERENCE in predictors else \
                {REFERENCE: Predictor(model, optimize=False, conf=conf, imgsz=imgsz)}  # eager float32, untimed
            accuracy = path_accuracy({**ref, **predictors}, val, REFERENCE, ap_drop, log)
            evaluation = {"data": val.data, "split": "val", "images": val.images, "ap_drop": ap_drop,
                          "reference": REFERENCE}

    results = [path_result(p, b, details[p], samples[(p, b)]) for p in paths for b in batches]
    add_ratios(results)
    machine = {**machine_info(threads), "other_load_cores": other.cores}
    notes = _notes(agreement, weights, conf) + [n for n in [busy_note(other.cores)] if n]
    notes += accuracy_notes(accuracy, ap_drop, timed=paths)
    if any("-int8" in p for p in paths) and (note := int8_note()):
        notes.append(note)
    return BenchmarkReport(
        model=getattr(getattr(model, "cfg", None), "name", type(model).__name__), weights=weights, imgsz=imgsz,
        batches=list(batches), runs=runs, warmup=warmup, threads=threads, conf=conf, pause=pause,
        image=describe_image(picture, source), machine=machine, results=results, skipped=skipped,
        agreement=agreement, notes=notes, accuracy=accuracy, evaluation=evaluation)


def check_agreement(predictors: dict[str, Predictor], data: bytes,
                    tolerance: float = 0.1) -> dict[str, Agreement]:
    """Each path's number of detections (score >= its predictor's conf) on the picture, against the
    reference path's (torch if measured, else the first): agrees within max(1, tolerance x that)."""
    frames = [Frame(decode_image(data), None, 0)]
    counts = {}
    for p, predictor in predictors.items():
        result = predictor.predict_batch(frames)[0]
        counts[p] = (len(result.scores), float(result.scores[0]) if len(result.scores) else None)
    ref = REFERENCE if REFERENCE in counts else next(iter(counts))
    n_ref = counts[ref][0]
    allowed = max(1, round(tolerance * n_ref))
    return {p: Agreement(n, ref, n_ref, top, abs(n - n_ref) <= allowed) for p, (n, top) in counts.items()}


def accuracy_notes(accuracy: dict[str, Accuracy], ap_drop: float, timed: Sequence[str]) -> list[str]:
    """A line per flagged path (the '!' in the table), and what stands in for the numbers when
    the reference could not be scored or was evaluated without being timed."""
    ref = accuracy.get(REFERENCE)
    if ref is None:
        return []
    if ref.ap < 0:
        return [f"AP: no objects in the {ref.images} val image(s) to score; accuracy not compared"]
    notes = [] if REFERENCE in timed else [f"AP reference {REFERENCE} (eager float32, not timed): "
                                           f"AP50:95 {ref.ap:.3f}, AP50 {ref.ap50:.3f}"]
    notes += [f"{p}: AP50:95 {a.ap:.4f} is {a.drop:.4f} below {REFERENCE}'s {ref.ap:.4f}, more than "
              f"--ap-drop {ap_drop:g}: this path costs accuracy" for p, a in accuracy.items() if a.flagged]
    return notes


def _notes(agreement: dict[str, Agreement], weights: str, conf: float) -> list[str]:
    notes = [f"{p}: {a.detections} detections >= conf {conf} on the picture, {a.reference} found "
             f"{a.reference_detections}: the paths DISAGREE" for p, a in agreement.items() if not a.agrees]
    if weights.startswith("none"):
        notes.append("random weights: latency is representative, detections are not (counts may all be 0)")
    return notes
