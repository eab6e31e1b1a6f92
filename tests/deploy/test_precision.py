"""Reduced precision only where it runs: each branch of `rtdetr.runtime.precision`, on any machine.

The capability report is replaced (`set_cpu_capabilities`, and OpenVINO's optimisation
capabilities by monkeypatch) to take the branch of another kind of CPU: AVX2 only (AMD Zen 3),
AVX-512 with VNNI but no bf16 (Ice Lake), AMX (Sapphire Rapids). What really runs bf16 runs
only where this CPU has it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rtdetr
from rtdetr.cli.app import main
from rtdetr.core.cpu import UnsupportedOnThisCPU, cpu_capabilities, detect, set_cpu_capabilities
from rtdetr import bench as benchmark
from rtdetr.bench import benchmark as bench_run
from rtdetr.runtime import optimize_for_inference, precision
from rtdetr.bench import missing, run_benchmark
from tests.test_cpu import ICELAKE, SAPPHIRE_RAPIDS, ZEN3

AVX2_ONLY, AVX512_NO_BF16, AMX = (detect(t, "x86_64") for t in (ZEN3, ICELAKE, SAPPHIRE_RAPIDS))
OV_WITHOUT_BF16 = frozenset({"FP32", "INT8", "BIN", "EXPORT_IMPORT"})
OV_WITH_BF16 = OV_WITHOUT_BF16 | {"BF16"}


@pytest.fixture
def cpu_kind(monkeypatch):
    """Call with (capabilities, OpenVINO's capabilities) to act as that kind of CPU for the test."""
    def become(caps, ov_caps):
        set_cpu_capabilities(caps)
        monkeypatch.setattr(precision, "openvino_capabilities", lambda device="CPU": ov_caps)
    yield become
    set_cpu_capabilities(None)


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return rtdetr.create_model("demo").eval()


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message and len(message) < 300, message
    return message


def test_torch_bf16_refused_without_native_bf16(cpu_kind, demo):
    for caps in (AVX2_ONLY, AVX512_NO_BF16):
        cpu_kind(caps, OV_WITHOUT_BF16)
        with pytest.raises(UnsupportedOnThisCPU) as e:
            optimize_for_inference(demo, imgsz=160, dtype=torch.bfloat16)
        assert "AVX512_BF16 or AMX-BF16" in one_line(e) and caps.summary() in str(e.value)
        assert "no native bf16" in missing("torch-fused-bf16")
    optimize_for_inference(demo, imgsz=160)  # float32 runs on every CPU


def test_torch_bf16_offered_with_native_bf16(cpu_kind):
    cpu_kind(AMX, OV_WITH_BF16)
    assert precision.torch_bf16_problem() is None and missing("torch-fused-bf16") is None
    assert missing("openvino-bf16") is None and missing("openvino-int8-bf16") is None


@pytest.mark.skipif(not cpu_capabilities().native_bf16, reason="this CPU has no native bf16: the refusal is tested above")
def test_bfloat16_trunk_runs_here(demo):
    """dtype=bfloat16 runs the backbone and encoder in bfloat16; the decoder and outputs stay float32."""
    fast = optimize_for_inference(demo, imgsz=256, dtype=torch.bfloat16)
    assert fast.dtype == torch.bfloat16 and fast.decoder.anchors.dtype == torch.float32
    with torch.inference_mode():
        out = fast(torch.rand(1, 3, 256, 256))
    assert all(v.dtype == torch.float32 and v.isfinite().all() for v in out.values())


def test_openvino_bf16_follows_openvinos_report(cpu_kind):
    cpu_kind(AVX512_NO_BF16, OV_WITHOUT_BF16)
    why = precision.openvino_precision_problem("bf16")
    assert "OpenVINO does not run bf16" in why and "AVX512_BF16" in why and "use precision fp32" in why
    assert missing("openvino-bf16") == why == missing("openvino-int8-bf16")
    assert precision.openvino_precision_problem("fp32") is None
    assert "fp16" in precision.openvino_precision_problem("fp16")
    cpu_kind(AVX512_NO_BF16, OV_WITH_BF16)  # OpenVINO's word decides
    assert precision.openvino_precision_problem("bf16") is None


def test_benchmark_skips_what_cannot_run_and_says_why(cpu_kind, demo, monkeypatch):
    """The default (every path) on an AVX2-only CPU: the bf16 paths are skipped with their reason,
    the rest run; the header names the CPU's capabilities and the JSON holds them."""
    cpu_kind(AVX2_ONLY, OV_WITHOUT_BF16)
    reasons = {p: missing(p) for p in benchmark.PATHS}
    assert {p for p, why in reasons.items() if why} >= {"torch-fused-bf16", "openvino-bf16", "openvino-int8-bf16"}
    # Only torch runs, to keep the test short; the other runnable paths are left out with a reason.
    monkeypatch.setattr(bench_run, "missing", lambda p: reasons[p] or (None if p == "torch" else "left out"))
    notes = []
    report = run_benchmark(demo, None, imgsz=160, runs=1, warmup=0, threads=2, pause=0, log=notes.append)
    assert report.paths == ["torch"]
    assert set(report.skipped) == set(benchmark.PATHS) - {"torch"}
    for p in ("torch-fused-bf16", "openvino-bf16", "openvino-int8-bf16"):
        assert report.skipped[p] == reasons[p] and f"skipping {p}: " in "\n".join(notes)
    table = report.table()
    assert AVX2_ONLY.summary() in table and "skipped torch-fused-bf16: this CPU has no native bf16" in table
    assert report.machine["cpu_capabilities"]["int8_saturates"] is True


def test_int8_note_on_cpus_without_vnni(cpu_kind):
    cpu_kind(AVX2_ONLY, OV_WITHOUT_BF16)
    assert "no VNNI" in precision.int8_note()
    cpu_kind(AVX512_NO_BF16, OV_WITHOUT_BF16)
    assert precision.int8_note() is None


def test_openvino_model_and_predict_command_refuse_bf16(cpu_kind, tmp_path, capsys, demo):
    """OpenVINO would run fp32 silently; asked for bf16 where it does not run it, the model
    refuses in one line and `rtdetr predict --precision bf16` exits 2 with that line."""
    pytest.importorskip("openvino")
    from PIL import Image

    from rtdetr.export import export_onnx
    from rtdetr.runtime import OpenVinoModel
    graph = export_onnx(demo, tmp_path / "demo.onnx", imgsz=160)
    cpu_kind(AVX2_ONLY, OV_WITHOUT_BF16)
    with pytest.raises(UnsupportedOnThisCPU) as e:
        OpenVinoModel(graph, precision="bf16")
    assert "OpenVINO does not run bf16" in one_line(e)
    picture = tmp_path / "p.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(picture)
    capsys.readouterr()
    assert main(["predict", "--weights", str(graph), "--runtime", "openvino", "--precision", "bf16", str(picture),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtdetr: error: OpenVINO does not run bf16") and "\n" not in err
    assert OpenVinoModel(graph, precision="fp32").precision == "fp32"
