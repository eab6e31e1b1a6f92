"""A benchmark's report: per-path statistics, the agreement check, the table and the JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rtdetr.bench.accuracy import Accuracy


STAGES = ("decode", "preprocess", "inference", "postprocess", "sum", "e2e")


PERCENTILES = (50, 95, 99)


REFERENCE = "torch"  # ratios and the detection check are relative to eager float32


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
    # With a data set: each path's box AP on its val split (`bench.accuracy`), and what was
    # evaluated: {'data', 'split', 'images', 'ap_drop', 'reference'}.
    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    evaluation: dict | None = None

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
        d["accuracy"] = {k: Accuracy(**v) for k, v in d.get("accuracy", {}).items()}
        return cls(**d)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> BenchmarkReport:
        """From JSON text, or from the file it was written to."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


def path_result(path: str, batch: int, detail: str, samples: dict[str, list[float]]) -> PathResult:
    stages = {s: Stats.of(samples[s]) for s in STAGES}
    images = batch * len(samples["e2e"])
    return PathResult(path, batch, detail, stages, images_per_s=1e3 * images / sum(samples["e2e"]),
                      inference_images_per_s=1e3 * images / sum(samples["inference"]))


def add_ratios(results: list[PathResult]) -> None:
    refs = {r.batch: r for r in results if r.path == REFERENCE}
    for r in results:
        if r.batch in refs:
            ref = refs[r.batch].stages
            r.ratio_inference = r.stages["inference"].p50 / ref["inference"].p50
            r.ratio_e2e = r.stages["e2e"].p50 / ref["e2e"].p50


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
    if report.evaluation is not None:
        e = report.evaluation
        lines.append(f"AP: COCO box AP50:95 / AP50 of each path, run by that path, on {e['data']} ({e['split']}, "
                     f"{e['images']} images); ! = AP50:95 more than {e['ap_drop']:g} below {e['reference']}'s")
    accuracy = report.accuracy
    head = (f"{'path':<20}{'decode':>8}{'pre':>8}{'infer':>9}{'post':>8}{'e2e':>9}{'p95':>9}{'p99':>9}"
            f"{'img/s':>8}{'infer/torch':>12}{'e2e/torch':>10}" + (f"{'AP50:95':>9}{'AP50':>7}" if accuracy else "")
            + "  dets")
    for batch in report.batches:
        lines += ["", f"batch {batch}: ms per batch, p50 unless marked", head, "-" * len(head)]
        for r in (r for r in report.results if r.batch == batch):
            s = r.stages
            a = report.agreement.get(r.path)
            dets = "" if a is None else f"{a.detections}{'' if a.agrees else ' DISAGREES'}"
            lines.append(f"{r.path:<20}{s['decode'].p50:>8.2f}{s['preprocess'].p50:>8.2f}{s['inference'].p50:>9.2f}"
                         f"{s['postprocess'].p50:>8.2f}{s['e2e'].p50:>9.2f}{s['e2e'].p95:>9.2f}{s['e2e'].p99:>9.2f}"
                         f"{r.images_per_s:>8.2f}{_ratio(r.ratio_inference):>12}{_ratio(r.ratio_e2e):>10}"
                         f"{_ap_cells(accuracy.get(r.path)) if accuracy else ''}  {dets}")
    lines += ["", "what ran:"] + [f"  {r.path:<20}{r.detail}" for r in report.results if r.batch == report.batches[0]]
    lines += [f"skipped {p}: {why}" for p, why in report.skipped.items()]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _ap_cells(a: Accuracy | None) -> str:
    """AP50:95 (with '!' when flagged) and AP50, 3 decimals; '-' where not measured or undefined."""
    if a is None or a.ap < 0:
        return f"{'-':>9}{'-':>7}"
    return f"{a.ap:>8.3f}{'!' if a.flagged else ' '}{a.ap50:>7.3f}"


def _cores(x: float | None) -> str:
    return "? cores" if x is None else f"{x:.2f} cores"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"
