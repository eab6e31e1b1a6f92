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


# -- accuracy beside latency (data=)

from rtdetr.bench import accuracy as bench_accuracy
from rtdetr.data import make_synthetic_dataset
from rtdetr.eval.validate import validate
from rtdetr.predict.predictor import Predictor
from rtdetr.runtime.exported import OnnxRuntimeModel
from rtdetr.runtime.fused import optimize_for_inference
from rtdetr.models.nn.detector import module_of

ACCURACY_PATHS = ["torch", "torch-fused", "onnxruntime"]


@pytest.fixture(scope="module")
def val_data(model, tmp_path_factory):
    """4 val pictures whose ground truth is the eager model's own 3 best boxes on each (as the
    evaluation feeds it: `val_transforms`): with random weights AP is then well above 0, so a
    path's AP is a number that can be compared."""
    from rtdetr.data import load_dataset
    from rtdetr.data.transforms import val_transforms
    from rtdetr.models.postprocess import postprocess
    root = make_synthetic_dataset(tmp_path_factory.mktemp("acc") / "ds", num_train=2, num_val=4, image_size=(96, 128))
    file = root / "annotations" / "instances_val.json"
    gt = json.loads(file.read_text())
    gt["annotations"] = []
    for image, target in load_dataset(root, "val", transforms=val_transforms((IMGSZ, IMGSZ))):
        with torch.no_grad():
            det = postprocess(model.model.eval()(image[None]), target["orig_size"][None])[0]
        for (x1, y1, x2, y2), label in zip(det["boxes"][:3].tolist(), det["labels"][:3].tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": int(target["image_id"]),
                                      "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                      "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    file.write_text(json.dumps(gt))
    return root


@pytest.fixture(scope="module")
def acc_report(model, val_data, tmp_path_factory) -> BenchmarkReport:
    paths = [p for p in ACCURACY_PATHS if p in available_paths()]
    return run_benchmark(model, paths, imgsz=IMGSZ, runs=1, warmup=0, threads=2, pause=0, log=None,
                         data=val_data, workdir=tmp_path_factory.mktemp("exports"))


def test_each_paths_ap_is_validate_of_its_own_artefact(model, val_data, acc_report, tmp_path_factory):
    """The independent truth: `validate()` of the same artefact, made here (same weights, same
    export). Same artefact and images, so equal up to summation order: 1e-6."""
    truth = {"torch": validate(model, val_data, imgsz=IMGSZ, workers=0),
             "torch-fused": validate(optimize_for_inference(model, IMGSZ), val_data, imgsz=IMGSZ, workers=0)}
    if "onnxruntime" in acc_report.paths:
        graph = next(tmp_path_factory.getbasetemp().glob("exports*/model_*x*.onnx"))
        truth["onnxruntime"] = validate(OnnxRuntimeModel(graph, threads=2), val_data, workers=0)
    assert set(acc_report.accuracy) == set(acc_report.paths) == set(truth)
    for p, t in truth.items():
        a = acc_report.accuracy[p]
        assert a.ap == pytest.approx(t.ap, abs=1e-6) and a.ap50 == pytest.approx(t.ap50, abs=1e-6), p
        assert a.images == 4 and not a.flagged
    assert acc_report.accuracy["torch"].ap > 0.5                 # the ground truth is its own boxes
    assert acc_report.accuracy["torch"].drop is None
    assert acc_report.evaluation == {"data": str(val_data), "split": "val", "images": 4, "ap_drop": 0.01,
                                     "reference": "torch"}


def test_table_and_json_hold_ap_beside_latency(acc_report):
    table = acc_report.table()
    head = next(line for line in table.splitlines() if line.startswith("path "))
    assert head.index("e2e") < head.index("AP50:95") < head.index("AP50 ")   # beside the latency columns
    rows = [line for line in table.splitlines() if line.split(" ")[0] in acc_report.paths]
    row = rows[0]
    assert f"{acc_report.accuracy['torch'].ap:.3f}" in row and f"{acc_report.accuracy['torch'].ap50:.3f}" in row
    back = BenchmarkReport.from_json(acc_report.to_json())
    assert back == acc_report
    d = json.loads(acc_report.to_json())
    assert set(d["accuracy"]["torch"]) >= {"ap", "ap50", "images", "drop", "flagged"}
    assert not any("!" in r for r in rows)  # fp32 paths: no flag


def test_a_path_that_loses_ap_is_flagged(model, val_data, monkeypatch):
    """torch-fused's boxes moved by a quarter of the picture: its AP falls, the eager one's not."""
    real = bench_accuracy.artefact

    def shifted(predictor):
        module = real(predictor)
        if module is module_of(model):  # the eager reference stays as it is
            return module

        class Shifted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module

            def forward(self, x):
                out = dict(self.inner(x))
                out["pred_boxes"] = (out["pred_boxes"] + torch.tensor([0.25, 0.25, 0.0, 0.0])).clamp(0, 1)
                return out
        return Shifted().eval()

    monkeypatch.setattr(bench_accuracy, "artefact", shifted)
    got = run_benchmark(model, ["torch", "torch-fused"], imgsz=IMGSZ, runs=1, warmup=0, threads=2, pause=0,
                        log=None, data=val_data, data_images=2)
    a, ref = got.accuracy["torch-fused"], got.accuracy["torch"]
    assert a.images == ref.images == 2 and got.evaluation["images"] == 2
    assert a.flagged and a.drop == pytest.approx(ref.ap - a.ap) and a.drop > 0.01
    row = next(line for line in got.table().splitlines() if line.startswith("torch-fused "))
    assert f"{a.ap:.3f}!" in row
    assert any(n.startswith("torch-fused: AP50:95") and "--ap-drop 0.01" in n for n in got.notes)
    assert "note: torch-fused: AP50:95" in got.table()


def test_cli_benchmark_with_data(val_data, tmp_path, capsys):
    out = tmp_path / "b.json"
    status = main(["benchmark", "demo", "--weights", "none", "--paths", "torch", "--imgsz", str(IMGSZ),
                   "--runs", "1", "--warmup", "0", "--threads", "2", "--pause-ms", "0", "--json", str(out),
                   "--data", str(val_data), "--data-images", "3", "--ap-drop", "0.05"])
    text = capsys.readouterr().out
    assert status == 0 and "AP50:95" in text and "3 images" in text
    d = json.loads(out.read_text())
    assert d["evaluation"]["images"] == 3 and d["evaluation"]["ap_drop"] == 0.05 and d["accuracy"]["torch"]["ap"] >= 0


def test_the_header_names_a_checkpoints_own_weights(tmp_path):
    """MODEL given as a file carries its weights: the header says so, not the default 'official'."""
    from rtdetr.cli.app import _weights_label
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"")
    assert _weights_label(str(ckpt), "official") == f"those in {ckpt}"
    assert _weights_label("rtdetrv2_r18vd", "official") == "official"
    assert _weights_label(str(ckpt), None) == "none (random)"
    assert _weights_label("demo", "w.pt") == "w.pt"


@pytest.mark.skipif("onnxruntime-int8" not in available_paths(), reason="onnxruntime is not installed")
def test_int8_is_calibrated_on_the_data_whose_ap_it_reports(model, val_data, monkeypatch, tmp_path):
    """With --data, the int8 graph's AP is measured, so it is calibrated on that data set (the
    quantizer reads its train split), not on the one synthetic timing picture; without it, on that
    picture. The quantizer is a stand-in recording what it was given (the fp32 graph passes as int8)."""
    import shutil
    given = []

    def quantizer(fp32, out, calibration=None, imgsz=None):
        given.append(calibration)
        shutil.copy(fp32, out)
        return out

    monkeypatch.setattr(bench_paths, "int8_quantizer", lambda: quantizer)
    kw = dict(imgsz=IMGSZ, runs=1, warmup=0, threads=2, pause=0, log=None)
    run_benchmark(model, ["onnxruntime-int8"], data=val_data, data_images=1, workdir=tmp_path / "a", **kw)
    run_benchmark(model, ["onnxruntime-int8"], workdir=tmp_path / "b", **kw)
    assert given[0] == val_data
    assert isinstance(given[1], list) and len(given[1]) == 1 and given[1][0].ndim == 3
