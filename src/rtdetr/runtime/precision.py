"""Which reduced precisions run here, per runtime, and why not when they do not.

Each function returns None when the precision runs, else one line naming what is missing; the
callers (`optimize_for_inference`, `OpenVinoModel`, `rtdetr benchmark`, `rtdetr predict
--precision`) refuse or skip with that line.

    torch bf16 (the fused trunk): offered only on CPUs with native bf16 (`cpu.native_bf16`).
        PyTorch's oneDNN kernels refuse bf16 without AVX512BW/VL/DQ or AVX-NE-CONVERT (AVX2-only
        CPUs), and with AVX-512 but no AVX512_BF16 they emulate it, slower than float32.
    OpenVINO bf16 / fp16: where OpenVINO's CPU plugin lists BF16 / FP16 among its optimisation
        capabilities (it decides from the same instruction sets); elsewhere it would silently
        run float32.
"""
from __future__ import annotations

import functools

from rtdetr.core.cpu import UnsupportedOnThisCPU, cpu_capabilities

__all__ = ["UnsupportedOnThisCPU", "torch_bf16_problem", "openvino_precision_problem", "openvino_capabilities",
           "int8_note"]


def torch_bf16_problem() -> str | None:
    """Why PyTorch's bf16 trunk is not offered on this CPU, or None."""
    caps = cpu_capabilities()
    if caps.native_bf16:
        return None
    return (f"this CPU has no native bf16 ({caps.missing_bf16()} missing; {caps.summary()}): "
            f"PyTorch would emulate bfloat16, slower than float32, or refuse it")


@functools.lru_cache(maxsize=None)
def _openvino_capabilities(device: str) -> frozenset[str]:
    import openvino as ov
    return frozenset(ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES"))


def openvino_capabilities(device: str = "CPU") -> frozenset[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES for `device`, e.g. {'FP32', 'INT8', 'BF16', ...}."""
    return _openvino_capabilities(device)


def openvino_precision_problem(precision: str, device: str = "CPU") -> str | None:
    """Why OpenVINO would not run `precision` ("fp32", "bf16", "fp16") on `device`, or None."""
    if precision == "fp32":
        return None
    caps = openvino_capabilities(device)
    if precision.upper() in caps:
        return None
    hint = f" ({cpu_capabilities().missing_bf16()} missing; {cpu_capabilities().summary()})" \
        if device == "CPU" and precision == "bf16" else ""
    return (f"OpenVINO does not run {precision} on this {device}{hint}: it offers "
            f"{', '.join(sorted(caps))}; use precision fp32")


def int8_note() -> str | None:
    """What int8 costs on this CPU, when it is worth saying (x86 without VNNI), else None."""
    caps = cpu_capabilities()
    if caps.int8_saturates:
        return ("no VNNI on this CPU: int8 convolutions add products in 16-bit pairs, slower than with "
                "VNNI; files made by rtdetr (7-bit weights) cannot saturate them, 8-bit ones can")
    return None


def refuse_if(problem: str | None) -> None:
    """Raise `UnsupportedOnThisCPU(problem)` when there is one."""
    if problem is not None:
        raise UnsupportedOnThisCPU(problem)
