"""`rtdetr benchmark` / `run_benchmark`: the report's structure and arithmetic, not the speeds.

One small run (the demo model with random weights at 160x160, batches 1 and 2, 3 runs) is
shared by most tests; latency does not depend on the weights. Speeds themselves are not
checked: the tests run on shared, busy machines.
"""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import rtdetr
from rtdetr.cli.app import main
from rtdetr import bench as benchmark
from rtdetr.bench import paths as bench_paths
from rtdetr.bench import (PATHS, STAGES, BenchmarkReport, Stats, available_paths, check_agreement,
                          check_paths, decode_image, interleaved, missing, run_benchmark,
                          synthetic_picture)

IMGSZ = 160
BATCHES = (1, 2)
RUNS = 3
# To stay fast, not every path: OpenVINO bf16 is the openvino path with another precision,
# openvino-int8 the int8 graph in OpenVINO; torch-fused-bf16 runs in a test of its own.
WANTED = ["torch", "torch-fused", "onnxruntime", "openvino", "onnxruntime-int8"]


@pytest.fixture(scope="module")
def model():
    return rtdetr.load_model("demo", weights=None)


@pytest.fixture(scope="module")
def report(model) -> BenchmarkReport:
    paths = [p for p in WANTED if p in available_paths()]
    return run_benchmark(model, paths, imgsz=IMGSZ, batches=BATCHES, runs=RUNS, warmup=0, threads=2,
                         pause=0, weights="none (random)", log=None)


def test_every_path_batch_and_stage_is_reported(report):
    expected = [p for p in WANTED if p in available_paths()]
    assert report.paths == expected
    assert [(r.path, r.batch) for r in report.results] == [(p, b) for p in expected for b in BATCHES]
    for r in report.results:
        assert set(r.stages) == set(STAGES)
        assert all(len(s.samples) == RUNS for s in r.stages.values())
        assert r.images_per_s > 0 and r.inference_images_per_s >= r.images_per_s
    assert report.imgsz == (IMGSZ, IMGSZ) and report.threads == 2 and report.batches == list(BATCHES)


def test_percentiles_are_numpys_and_ordered(report):
    for r in report.results:
        for s in r.stages.values():
            p50, p95, p99 = np.percentile(s.samples, [50, 95, 99])
            assert (s.p50, s.p95, s.p99) == pytest.approx((p50, p95, p99), rel=1e-12)
            assert s.min <= s.p50 <= s.p95 <= s.p99 <= s.max
            assert s.mean == pytest.approx(np.mean(s.samples))


def test_e2e_covers_its_stages(report):
    """e2e is timed around the stages, so each sample is at least their sum (rounding aside)."""
    for r in report.results:
        parts = [r.stages[s].samples for s in ("decode", "preprocess", "inference", "postprocess")]
        sums = np.sum(parts, axis=0)
        assert np.allclose(sums, r.stages["sum"].samples)
        assert (np.asarray(r.stages["e2e"].samples) >= sums - 1e-3).all()


def test_ratios_are_to_eager_torch(report):
    for b in BATCHES:
        torch_p50 = report.result("torch", b).stages
        for r in (r for r in report.results if r.batch == b):
            assert r.ratio_inference == pytest.approx(r.stages["inference"].p50 / torch_p50["inference"].p50)
            assert r.ratio_e2e == pytest.approx(r.stages["e2e"].p50 / torch_p50["e2e"].p50)
    assert report.result("torch", 1).ratio_e2e == 1.0


def test_paths_agree_on_the_picture(report):
    assert set(report.agreement) == set(report.paths)
    for a in report.agreement.values():
        assert a.reference == "torch" and a.agrees
    assert any("random weights" in n for n in report.notes)


def test_disagreement_is_flagged():
    def fake(n):
        scores = torch.linspace(0.9, 0.6, n)
        return SimpleNamespace(predict_batch=lambda frames: [SimpleNamespace(scores=scores)])
    got = check_agreement({"torch": fake(20), "a": fake(21), "b": fake(14)}, synthetic_picture(64, 48))
    assert got["torch"].agrees and got["a"].agrees      # within max(1, 10%) of 20
    assert not got["b"].agrees and got["b"].reference_detections == 20


def test_json_round_trips(report, tmp_path):
    file = tmp_path / "sub" / "report.json"
    text = report.to_json(file)
    assert json.loads(file.read_text()) == json.loads(text)
    assert BenchmarkReport.from_json(file) == report
    assert BenchmarkReport.from_json(text) == report


def test_table_lists_every_path(report):
    table = report.table()
    for p in report.paths:
        assert f"\n{p} " in table
    assert "1.00x" in table and "batch 2" in table


def test_unknown_path_is_one_line_listing_the_valid_ones():
    with pytest.raises(ValueError) as e:
        check_paths(["torch", "tensorrt-fp8"])
    message = str(e.value)
    assert "\n" not in message and "tensorrt-fp8" in message
    assert all(p in message for p in PATHS)


def test_missing_runtime_is_skipped_and_said(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # find_spec -> None: "not installed"
    monkeypatch.setattr(bench_paths, "int8_quantizer", lambda: None)
    assert "pip install openvino" in missing("openvino")
    assert "quantize_int8" in missing("onnxruntime-int8")
    assert not {"openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8", "openvino-int8-bf16"} & set(available_paths())
    notes = []
    got = run_benchmark(model, ["torch-fused", "openvino-bf16"], imgsz=IMGSZ, runs=1, warmup=0, threads=2,
                        pause=0, log=notes.append)
    assert got.paths == ["torch-fused"] and "openvino" in got.skipped["openvino-bf16"]
    assert got.result("torch-fused").ratio_e2e is None  # no torch path measured: no ratios
    assert any(n.startswith("skipping openvino-bf16") for n in notes)
    assert "skipped openvino-bf16" in got.table()


def test_interleaving_rotates_and_drops_warmup():
    calls = []
    steps = {name: (lambda name=name: calls.append(name) or {"inference": 1.0}) for name in "abc"}
    samples = interleaved(steps, runs=3, warmup=1, pause=0)
    assert calls == list("abc" "bca" "cab" "abc")
    assert samples == {n: {"inference": [1.0] * 3} for n in "abc"}


def test_decode_gives_rgb():
    data = synthetic_picture(320, 200)
    image = decode_image(data)
    assert image.shape == (200, 320, 3) and image.dtype == np.uint8
    assert Stats.of([3.0, 1.0, 2.0]).p50 == 2.0


def test_other_load_leaves_out_this_process():
    with benchmark.OtherLoad() as other:
        sum(i * i for i in range(3_000_000))  # busy here: not "other" load
    assert other.cores is None or 0 <= other.cores < 1.5
    assert benchmark.busy_note(0.05) is None and benchmark.busy_note(None) is None
    assert "1.70 cores busy" in benchmark.busy_note(1.7)


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", "demo", "--weights", "none", "--paths", "torch", "torch-fused", "--imgsz", str(IMGSZ),
                 "--runs", "2", "--warmup", "0", "--threads", "2", "--pause-ms", "0", "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "random weights" in shown and "torch-fused" in shown and f"wrote {out}" in shown
    data = json.loads(out.read_text())
    assert {"model", "weights", "imgsz", "batches", "runs", "warmup", "threads", "image", "machine", "results",
            "skipped", "agreement", "notes"} <= set(data)
    assert {"cpu", "logical_cores", "torch", "onnxruntime", "openvino", "threads", "date"} <= set(data["machine"])
    assert data["model"] == "demo" and data["weights"] == "none (random)" and data["runs"] == 2
    assert [r["path"] for r in data["results"]] == ["torch", "torch-fused"]
    assert set(data["results"][0]["stages"]["e2e"]) >= {"p50", "p95", "p99", "mean", "samples"}


def test_cli_unknown_path(capsys):
    assert main(["benchmark", "demo", "--weights", "none", "--paths", "torch", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtdetr: error: unknown path 'nope'") and "\n" not in err and "openvino-int8" in err
