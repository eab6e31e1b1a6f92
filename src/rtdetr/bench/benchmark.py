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
its own `preprocess` (resize, normalise, stack), `inference` (the model or runtime call; for a
graph with the post-processing inside, that too) and `postprocess` (what remains outside: top-k,
boxes to the picture's pixels, the `conf` filter, the `Result`s). `e2e` is the wall time around
all of it, so it includes what falls between the stages; `sum` is the sum of the four stages.
All times are milliseconds per batch.

Why interleaved: on a shared machine, load comes and goes. Each iteration runs every (path,
batch) once, in an order rotated by one each time, so that load falls on every path alike.
Each step starts after a short idle pause (10 ms, untimed): the worker threads of the runtime
that ran before (PyTorch's, ONNX Runtime's and OpenVINO's pools spin-wait for a while after a
call) must not compete with the next path, which a single-runtime application would not see.
Warm-up iterations are run the same way and discarded.

The report holds every sample, the percentiles (numpy's, linear interpolation), throughput
(images / s = images run / total e2e time), ratios to the eager `torch` path, whether the paths
found the same number of detections on the picture, the machine, and how many cores other
processes kept busy while timing (with a note when that was significant). It reports what was
measured and nothing more.
"""
from __future__ import annotations

import datetime
import importlib
import importlib.util
import io
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from rtdetr.core import images as imageio
from rtdetr.core.cpu import cpu_capabilities
from rtdetr.core.sizes import check_imgsz
from rtdetr.models.nn.detector import RTDETR, module_of
from rtdetr.predict.predictor import Predictor
from rtdetr.predict.sources import Frame
from rtdetr.runtime.precision import int8_note, openvino_precision_problem, torch_bf16_problem

PATHS = ("torch", "torch-fused", "torch-fused-bf16", "onnxruntime", "openvino", "openvino-bf16",
         "onnxruntime-int8", "openvino-int8", "openvino-int8-bf16")
STAGES = ("decode", "preprocess", "inference", "postprocess", "sum", "e2e")
PERCENTILES = (50, 95, 99)
REFERENCE = "torch"  # ratios and the detection check are relative to eager float32
PAUSE = 0.01         # seconds idle before each timed step (see `interleaved`)

# The Python packages each path needs at run time (onnx too for exporting the graph).
_NEEDS = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"),
          "onnxruntime-int8": ("onnx", "onnxruntime"), "openvino-int8": ("onnx", "openvino")}
_NEEDS["openvino-bf16"] = _NEEDS["openvino-int8-bf16"] = _NEEDS["openvino"]


# ---------------------------------------------------------------- statistics and the report

@dataclass
class Stats:
    """Milliseconds of one stage over the timed iterations."""

    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float
    samples: list[float]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        a = np.asarray(samples, dtype=np.float64)
        p50, p95, p99 = (float(v) for v in np.percentile(a, PERCENTILES))
        return cls(p50, p95, p99, float(a.mean()), float(a.min()), float(a.max()), [float(v) for v in a])


@dataclass
class PathResult:
    """One path at one batch size: per-stage statistics (ms per batch), throughput and ratios."""

    path: str
    batch: int
    detail: str                       # what ran, e.g. "openvino bf16, post-processing in the graph"
    stages: dict[str, Stats]
    images_per_s: float               # batch * runs / total e2e time
    inference_images_per_s: float     # batch * runs / total inference time
    ratio_inference: float | None = None  # p50 / the torch path's p50 at the same batch size
    ratio_e2e: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> PathResult:
        return cls(**{**d, "stages": {k: Stats(**v) for k, v in d["stages"].items()}})


@dataclass
class Agreement:
    """Detections at or above `conf` on the benchmark picture, one path against the reference."""

    detections: int
    reference: str
    reference_detections: int
    top_score: float | None
    agrees: bool


@dataclass
class BenchmarkReport:
    """Everything one run measured; `table()` for the screen, `to_json()` for a file."""

    model: str
    weights: str
    imgsz: tuple[int, int]
    batches: list[int]
    runs: int
    warmup: int
    threads: int
    conf: float
    pause: float
    image: dict
    machine: dict
    results: list[PathResult]
    skipped: dict[str, str] = field(default_factory=dict)    # path -> why it did not run
    agreement: dict[str, Agreement] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(r.path for r in self.results))

    def result(self, path: str, batch: int = 1) -> PathResult:
        for r in self.results:
            if r.path == path and r.batch == batch:
                return r
        raise KeyError(f"no result for path {path!r} at batch {batch}")

    def table(self) -> str:
        """A plain-text table per batch size: p50 per stage, e2e p95 / p99, throughput, ratios."""
        return format_table(self)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON text; written to `path` (folders created) when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> BenchmarkReport:
        d = dict(d)
        d["imgsz"] = tuple(d["imgsz"])
        d["results"] = [PathResult.from_dict(r) for r in d["results"]]
        d["agreement"] = {k: Agreement(**v) for k, v in d["agreement"].items()}
        return cls(**d)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> BenchmarkReport:
        """From JSON text, or from the file it was written to."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------- paths

def check_paths(paths: Sequence[str]) -> list[str]:
    """The paths, in order and without repeats; one-line error for a name that is not a path."""
    for p in paths:
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r}; valid paths: {', '.join(PATHS)}")
    return list(dict.fromkeys(paths))


def missing(path: str) -> str | None:
    """Why `path` cannot run here (a package, the int8 quantizer or an instruction set missing),
    or None if it can."""
    for module in _NEEDS.get(path, ()):
        if importlib.util.find_spec(module) is None:
            return f"needs the {module} package (pip install {module})"
    if "-int8" in path and int8_quantizer() is None:
        return "needs rtdetr.export.quantize.quantize_int8, which this installation does not have"
    if path == "torch-fused-bf16":
        return torch_bf16_problem()
    if path.startswith("openvino") and path.endswith("-bf16"):
        return openvino_precision_problem("bf16")
    return None


def available_paths() -> list[str]:
    """Every path that can run here."""
    return [p for p in PATHS if missing(p) is None]


def int8_quantizer() -> Callable | None:
    """`rtdetr.export.quantize.quantize_int8` if this installation has it (imported only when needed)."""
    try:
        module = importlib.import_module("rtdetr.export.quantize")
    except ImportError:
        return None
    return getattr(module, "quantize_int8", None)


@dataclass
class Exports:
    """The exported graphs the runtime paths share, made once (or given) in `workdir`.

    postprocess: graphs end in the post-processing, as `rtdetr export` writes them (default),
    or give the raw outputs (for model-only comparisons).
    """

    workdir: Path
    model: torch.nn.Module
    imgsz: tuple[int, int]
    calibration: object  # what `quantize_int8` takes: a folder, files or arrays
    onnx: Path | None = None
    onnx_int8: Path | None = None
    postprocess: bool = True

    def fp32(self) -> Path:
        if self.onnx is None:
            from rtdetr.export.onnx import export_onnx
            h, w = self.imgsz
            name = f"model_{h}x{w}{'' if self.postprocess else '_raw'}.onnx"
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
                warnings.simplefilter("ignore")
                self.onnx = export_onnx(self.model, self.workdir / name, imgsz=self.imgsz,
                                        postprocess=self.postprocess)
        return self.onnx

    def int8(self) -> Path:
        if self.onnx_int8 is None:
            out = self.workdir / f"{self.fp32().stem}_int8.onnx"
            self.onnx_int8 = Path(int8_quantizer()(self.fp32(), out, calibration=self.calibration, imgsz=self.imgsz))
        return self.onnx_int8


def build_predictor(path: str, model, exports: Exports, imgsz: tuple[int, int], threads: int,
                    conf: float) -> tuple[Predictor, str]:
    """The `Predictor` for one path, and a line saying what it runs."""
    from rtdetr.runtime.fused import optimize_for_inference
    from rtdetr.runtime.exported import OnnxRuntimeModel, OpenVinoModel

    kw = dict(conf=conf, imgsz=imgsz)
    if path == "torch":
        return Predictor(model, optimize=False, **kw), "PyTorch eager, float32"
    if path == "torch-fused":
        return Predictor(model, optimize=True, **kw), "PyTorch, optimize_for_inference float32 (predictor default)"
    if path == "torch-fused-bf16":
        fast = optimize_for_inference(model, imgsz, dtype=torch.bfloat16)
        return Predictor(fast, **kw), "PyTorch, optimize_for_inference, bfloat16 backbone + encoder"
    graph = exports.int8() if "-int8" in path else exports.fp32()
    if path.startswith("onnxruntime"):
        runtime = OnnxRuntimeModel(graph, threads=threads)
    else:
        precision = "bf16" if path.endswith("-bf16") else "fp32"
        with warnings.catch_warnings():  # a precision the CPU lacks: `detail` says what ran instead
            warnings.simplefilter("ignore", RuntimeWarning)
            runtime = OpenVinoModel(graph, precision=precision, threads=threads)
    return Predictor(runtime, **kw), describe_runtime(runtime)


def describe_runtime(runtime) -> str:
    """What an exported model runs: runtime, precision actually used, where post-processing happens."""
    precision = runtime.precision
    if precision == "int8" and getattr(runtime, "float_precision", None):
        precision += f" (the rest {runtime.float_precision})"
    where = "post-processing in the graph" if runtime.postprocessed else "raw outputs"
    return f"{runtime.runtime} {precision}, {where}, {runtime.path.name}"


def model_call(predictor: Predictor) -> Callable[[torch.Tensor], object]:
    """What the predictor runs as its `inference` stage, alone: x [N, 3, H, W] -> outputs (call it
    under torch.inference_mode). For model-only timing, e.g. against other implementations."""
    model, layers = predictor.model, predictor.decoder_layers
    if getattr(model, "postprocessed", False):
        return lambda x: model.detect(x, torch.tensor([[x.shape[3], x.shape[2]]] * len(x)), num_top=predictor.max_det)
    if getattr(predictor, "optimize", False):
        from rtdetr.runtime.fused import inference_copy
        return lambda x: inference_copy(model, predictor.imgsz, layers)(x)
    return lambda x: model(x, num_decoder_layers=layers)


# ---------------------------------------------------------------- timing

Step = Callable[[], dict[str, float]]  # runs once, returns {stage: ms}


def interleaved(steps: dict[str, Step], runs: int, warmup: int,
                pause: float = PAUSE) -> dict[str, dict[str, list[float]]]:
    """Run each step `warmup + runs` times, round robin, order rotated by one each iteration.

    A step is a callable that runs once and returns its stage timings in ms ({stage: ms});
    the result is {step: {stage: [ms per timed iteration]}}, warm-up iterations left out.
    pause: seconds of idle time before each step (not timed), so that the worker threads a
    runtime leaves spin-waiting after its call have gone to sleep before the next one starts.
    """
    names = list(steps)
    samples: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for i in range(warmup + runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            if pause > 0:
                time.sleep(pause)
            timings = steps[name]()
            if i >= warmup:
                for stage, ms in timings.items():
                    samples[name].setdefault(stage, []).append(ms)
    return samples


def timed(fn: Callable[[], object], stage: str = "inference") -> Step:
    """A step for `interleaved` that times one call of `fn` as `stage`."""
    def step() -> dict[str, float]:
        t0 = time.perf_counter()
        fn()
        return {stage: (time.perf_counter() - t0) * 1e3}
    return step


def pipeline_step(predictor: Predictor, data: bytes, batch: int) -> Step:
    """A step for `interleaved`: decode `batch` copies of `data`, then `predictor.predict_batch`."""
    def step() -> dict[str, float]:
        t0 = time.perf_counter()
        frames = [Frame(decode_image(data), None, i) for i in range(batch)]
        t1 = time.perf_counter()
        results = predictor.predict_batch(frames)
        t2 = time.perf_counter()
        # The predictor reports ms per picture (the batch's time / batch size); back to per batch.
        stages = {"decode": (t1 - t0) * 1e3, **{k: v * batch for k, v in results[0].speed.items()}}
        stages["sum"] = sum(stages[s] for s in ("decode", "preprocess", "inference", "postprocess"))
        stages["e2e"] = (t2 - t0) * 1e3
        return stages
    return step


@contextmanager
def torch_threads(n: int):
    """torch.set_num_threads(n) for the block, then back to what it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- the picture

def decode_image(data: bytes, exif: bool = True) -> np.ndarray:
    """Encoded picture bytes (JPEG, PNG, ...) -> [H, W, 3] uint8 RGB, exactly as
    `rtdetr.core.images.read_image` decodes a file."""
    return imageio.decode_image(io.BytesIO(data), exif)


def synthetic_picture(width: int = 1280, height: int = 720, seed: int = 0, quality: int = 90) -> bytes:
    """A made-up outdoor-like picture as JPEG bytes: sky and ground gradients, soft blobs,
    shapes with shading and sensor-like grain. Decoding cost grows with detail: a flat synthetic
    picture would decode faster than a photograph, so this one has texture (about 230 KB at
    1280x720, quality 90, a photograph's order of size)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky, ground = np.array([120, 165, 215]), np.array([95, 110, 70])
    horizon = 0.45 + 0.05 * np.sin(np.linspace(0, 3 * np.pi, width))[None, :, None]
    base = np.where(y < horizon, sky + (255 - sky) * y * 0.6, ground * (1.3 - 0.5 * y))
    blobs = Image.fromarray(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    img = Image.fromarray(np.clip(base * 0.75 + np.asarray(blobs) * 0.25, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(14):  # objects: 3% to 20% of the width, in the lower two thirds
        w, h = (int(width * rng.uniform(0.03, 0.2)) + 1, int(height * rng.uniform(0.04, 0.3)) + 1)
        x0, y0 = rng.integers(0, max(1, width - w)), rng.integers(height // 3, max(height // 3 + 1, height - h))
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        shape = draw.ellipse if rng.random() < 0.4 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour, outline=tuple(c // 2 for c in colour), width=3)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 7, (height, width, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def describe_image(data: bytes, source: str) -> dict:
    with Image.open(io.BytesIO(data)) as img:
        return {"source": source, "format": img.format, "width": img.width, "height": img.height,
                "bytes": len(data)}


# ---------------------------------------------------------------- machine

def machine_info(threads: int) -> dict:
    """Where and with what the numbers were taken."""
    caps = cpu_capabilities()
    info = {"cpu": caps.model, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_flags": list(caps.flags), "cpu_capabilities": caps.to_dict(),
            "platform": platform.platform(), "python": platform.python_version(),
            "threads": threads, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__}
    for module in ("onnx", "onnxruntime", "openvino", "numpy", "PIL"):
        info[module] = _version(module)
    return info


class OtherLoad:
    """How many cores other processes kept busy, on average, while the block ran (Linux; else None).

    All CPU time the system ran (/proc/stat: user, nice, system, irq, softirq and steal, which
    is time the hypervisor gave to other machines) minus this process's own, over the wall time.
    Unlike the load average, this does not count this run's own threads and does not lag.

        with OtherLoad() as other:
            ...
        other.cores   # e.g. 0.03 on a quiet machine, 1.8 when another job ran throughout
    """

    cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self._start = _cpu_counters()
        return self

    def __exit__(self, *exc) -> None:
        end = _cpu_counters()
        if self._start is not None and end is not None:
            (w0, all0, own0), (w1, all1, own1) = self._start, end
            self.cores = round(max(0.0, (all1 - all0) - (own1 - own0)) / max(w1 - w0, 1e-9), 3)


def _cpu_counters() -> tuple[float, float, float] | None:
    """(wall seconds, CPU seconds run by every process, CPU seconds run by this one)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return time.perf_counter(), (user + nice + system + irq + softirq + steal) / tick, time.process_time()


def busy_note(other_cores: float | None, limit: float = 0.2) -> str | None:
    """A warning when other processes competed for the cores while timing."""
    if other_cores is None or other_cores <= limit:
        return None
    return (f"other processes kept {other_cores:.2f} cores busy on average while timing: times are inflated, "
            f"and unevenly (thread pools suffer differently from oversubscription); compare with care")


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:  # a broken optional install is not the benchmark's business
        return "unimportable"


# ---------------------------------------------------------------- the run

def run_benchmark(model, paths: Sequence[str] | None = None, *, imgsz: int | tuple[int, int] = 640,
                  batches: Sequence[int] = (1,), runs: int = 20, warmup: int = 3, threads: int | None = None,
                  image: bytes | str | Path | None = None, conf: float = 0.5, workdir: str | Path | None = None,
                  onnx: str | Path | None = None, onnx_int8: str | Path | None = None, calibration=None,
                  pause: float = PAUSE, weights: str = "?",
                  log: Callable[[str], None] | None = print) -> BenchmarkReport:
    """Measure `paths` of `model` (an `RTDETR`) on one picture, interleaved; see the module docstring.

    paths:    names from `PATHS` (default: all); one that cannot run here (a package or an
              instruction set missing) is skipped, with the reason in `report.skipped` and a note
    imgsz:    network input size (int or (h, w)); batches: batch sizes, each measured
    runs / warmup: timed / discarded iterations (each runs every path at every batch size once)
    threads:  torch intra-op threads, ONNX Runtime intra-op threads and OpenVINO inference threads
              (default: torch's current number)
    image:    encoded picture bytes or a file (default: `synthetic_picture()`, 1280x720 JPEG)
    workdir:  where exports go (default: a temporary folder, removed afterwards)
    onnx / onnx_int8: existing exports to use instead of exporting (the fp32 graph must end in
              post-processing or give raw outputs, as `export_onnx` writes them)
    calibration: images for the int8 quantizer (a folder or a list of files or arrays; default:
              the benchmark picture alone, enough for timing; not for accuracy)
    pause:    idle seconds before each timed step (see `interleaved`)
    weights:  how the weights were chosen, recorded in the report (e.g. "none (random)")
    log:      where progress notes go (None: nowhere)
    """
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
    imgsz = check_imgsz(imgsz)
    data, source = _read_image(image)
    skipped = {p: why for p in paths if (why := missing(p)) is not None}
    for p, why in skipped.items():
        log(f"skipping {p}: {why}")
    paths = [p for p in paths if p not in skipped]
    if not paths:
        raise ValueError(f"none of the requested paths can run here ({'; '.join(f'{p}: {w}' for p, w in skipped.items())})")

    with tempfile.TemporaryDirectory(prefix="rtdetr-bench-") as tmp, torch_threads(threads):
        folder = Path(workdir) if workdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        calib = calibration if calibration is not None else [decode_image(data)]
        exports = Exports(folder, model, imgsz, calib,
                          Path(onnx) if onnx else None, Path(onnx_int8) if onnx_int8 else None)
        predictors, details = {}, {}
        for p in paths:
            log(f"preparing {p}")
            predictors[p], details[p] = build_predictor(p, model, exports, imgsz, threads, conf)
        agreement = check_agreement(predictors, data)
        steps = {(p, b): pipeline_step(predictors[p], data, b) for p in paths for b in batches}
        log(f"timing {len(paths)} path(s) x batch {', '.join(map(str, batches))}: {warmup} warm-up + {runs} runs")
        with OtherLoad() as other:
            samples = interleaved(steps, runs, warmup, pause)

    results = [_path_result(p, b, details[p], samples[(p, b)]) for p in paths for b in batches]
    _add_ratios(results)
    machine = {**machine_info(threads), "other_load_cores": other.cores}
    notes = _notes(agreement, weights, conf) + [n for n in [busy_note(other.cores)] if n]
    if any("-int8" in p for p in paths) and (note := int8_note()):
        notes.append(note)
    return BenchmarkReport(
        model=getattr(getattr(model, "cfg", None), "name", type(model).__name__), weights=weights, imgsz=imgsz,
        batches=list(batches), runs=runs, warmup=warmup, threads=threads, conf=conf, pause=pause,
        image=describe_image(data, source), machine=machine, results=results, skipped=skipped,
        agreement=agreement, notes=notes)


def _read_image(image: bytes | str | Path | None) -> tuple[bytes, str]:
    if image is None:
        return synthetic_picture(), "generated (rtdetr.bench.benchmark.synthetic_picture, 1280x720 JPEG)"
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), "bytes given"
    path = Path(image)
    if not path.is_file():
        raise ValueError(f"{path}: no such image file")
    return path.read_bytes(), str(path)


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


def _path_result(path: str, batch: int, detail: str, samples: dict[str, list[float]]) -> PathResult:
    stages = {s: Stats.of(samples[s]) for s in STAGES}
    images = batch * len(samples["e2e"])
    return PathResult(path, batch, detail, stages, images_per_s=1e3 * images / sum(samples["e2e"]),
                      inference_images_per_s=1e3 * images / sum(samples["inference"]))


def _add_ratios(results: list[PathResult]) -> None:
    refs = {r.batch: r for r in results if r.path == REFERENCE}
    for r in results:
        if r.batch in refs:
            ref = refs[r.batch].stages
            r.ratio_inference = r.stages["inference"].p50 / ref["inference"].p50
            r.ratio_e2e = r.stages["e2e"].p50 / ref["e2e"].p50


def _notes(agreement: dict[str, Agreement], weights: str, conf: float) -> list[str]:
    notes = [f"{p}: {a.detections} detections >= conf {conf} on the picture, {a.reference} found "
             f"{a.reference_detections}: the paths DISAGREE" for p, a in agreement.items() if not a.agrees]
    if weights.startswith("none"):
        notes.append("random weights: latency is representative, detections are not (counts may all be 0)")
    return notes


# ---------------------------------------------------------------- the table

def format_table(report: BenchmarkReport) -> str:
    """p50 of each stage (ms per batch), e2e p95 / p99, images / s, and ratios to torch."""
    m = report.machine
    h, w = report.imgsz
    lines = [f"{report.model} (weights: {report.weights}), {h}x{w}, {report.threads} threads, "
             f"{report.runs} runs after {report.warmup} warm-up, interleaved; picture "
             f"{report.image['width']}x{report.image['height']} {report.image['format']}",
             f"{m['cpu']}: {m.get('cpu_capabilities', {}).get('summary', '?')} ({m['usable_cores']} usable cores; other processes used "
             f"{_cores(m.get('other_load_cores'))} while timing), torch {m['torch']}, "
             f"onnxruntime {m['onnxruntime']}, openvino {m['openvino']}"]
    head = (f"{'path':<20}{'decode':>8}{'pre':>8}{'infer':>9}{'post':>8}{'e2e':>9}{'p95':>9}{'p99':>9}"
            f"{'img/s':>8}{'infer/torch':>12}{'e2e/torch':>10}  dets")
    for batch in report.batches:
        lines += ["", f"batch {batch}: ms per batch, p50 unless marked", head, "-" * len(head)]
        for r in (r for r in report.results if r.batch == batch):
            s = r.stages
            a = report.agreement.get(r.path)
            dets = "" if a is None else f"{a.detections}{'' if a.agrees else ' DISAGREES'}"
            lines.append(f"{r.path:<20}{s['decode'].p50:>8.2f}{s['preprocess'].p50:>8.2f}{s['inference'].p50:>9.2f}"
                         f"{s['postprocess'].p50:>8.2f}{s['e2e'].p50:>9.2f}{s['e2e'].p95:>9.2f}{s['e2e'].p99:>9.2f}"
                         f"{r.images_per_s:>8.2f}{_ratio(r.ratio_inference):>12}{_ratio(r.ratio_e2e):>10}  {dets}")
    lines += ["", "what ran:"] + [f"  {r.path:<20}{r.detail}" for r in report.results if r.batch == report.batches[0]]
    lines += [f"skipped {p}: {why}" for p, why in report.skipped.items()]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _cores(x: float | None) -> str:
    return "? cores" if x is None else f"{x:.2f} cores"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"
