"""What this CPU can do, detected once: the instruction sets that decide whether reduced
precision (bf16, int8) runs, and how fast.

    from rtdetr.core.cpu import cpu_capabilities
    caps = cpu_capabilities()
    caps.native_bf16, caps.int8_dot, caps.summary()   # e.g. "x86_64 AVX2 FMA AVX512 VNNI (no native bf16)"

Read from /proc/cpuinfo (Linux, x86 and ARM) or `sysctl` (macOS); nothing is executed to probe.
The paths that depend on a feature ask here and say in one line what is missing
(`UnsupportedOnThisCPU`); tests replace the report with `set_cpu_capabilities` to run both
branches on any machine.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

# /proc/cpuinfo flag names (x86 "flags", ARM "Features") that matter here.
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx_ne_convert", "amx_bf16", "amx_int8", "amx_tile", "avx512_fp16")
ARM_FLAGS = ("asimd", "asimddp", "bf16", "i8mm", "sve", "sve2")
_MACOS_KEYS = {"hw.optional.arm.FEAT_BF16": "bf16", "hw.optional.arm.FEAT_I8MM": "i8mm",
               "hw.optional.arm.FEAT_DotProd": "asimddp", "hw.optional.neon": "asimd"}


class UnsupportedOnThisCPU(ValueError):
    """A precision or kernel this CPU (or runtime on it) cannot run; the message is one line."""


@dataclass(frozen=True)
class CpuCapabilities:
    """The features of this CPU that decide what reduced precision runs, and how."""

    arch: str                                   # "x86_64", "aarch64", ...
    model: str                                  # the CPU's name as the OS reports it
    flags: tuple[str, ...] = field(default=())  # of X86_FLAGS / ARM_FLAGS, those present

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "AMD64", "i686", "x86")

    @property
    def arm(self) -> bool:
        return self.arch in ("aarch64", "arm64")

    @property
    def avx512(self) -> bool:
        return self.has("avx512f")

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware: AVX512-BF16 or AMX-BF16 (x86), FEAT_BF16 (ARM)."""
        if self.x86:
            return self.has("avx512_bf16") or self.has("amx_bf16")
        return self.arm and self.has("bf16")

    @property
    def int8_dot(self) -> bool:
        """An int8 dot-product instruction that cannot saturate: VNNI / AVX-VNNI / AMX (x86), SDOT or
        I8MM (ARM). x86 without it multiplies uint8 x int8 pairs into a saturating int16."""
        if self.x86:
            return self.has("avx512_vnni") or self.has("avx_vnni") or self.has("amx_int8")
        return self.arm and (self.has("asimddp") or self.has("i8mm"))

    @property
    def int8_saturates(self) -> bool:
        """x86 without VNNI: uint8 x int8 products summed in pairs saturate at int16 (vpmaddubsw)."""
        return self.x86 and not self.int8_dot

    def missing_bf16(self) -> str:
        """The instruction sets native bf16 needs here, named for a message."""
        return "ARM FEAT_BF16" if self.arm else "AVX512_BF16 or AMX-BF16"

    def summary(self) -> str:
        """One line, e.g. 'x86_64 AVX2 AVX512 VNNI, no native bf16, int8 dot products'."""
        if self.x86:
            isa = ["AVX2"] if self.has("avx2") else ["no AVX2"]
            isa += ["AVX512"] if self.avx512 else []
            isa += ["AVX512-VNNI"] if self.has("avx512_vnni") else (["AVX-VNNI"] if self.has("avx_vnni") else ["no VNNI"])
            isa += ["AMX"] if self.has("amx_tile") else []
        elif self.arm:
            isa = ["NEON"] if self.has("asimd") else []
            isa += [name for f, name in (("asimddp", "DOTPROD"), ("i8mm", "I8MM"), ("sve", "SVE")) if self.has(f)]
        else:
            isa = []
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        return f"{self.arch} {' '.join(isa)}, {bf16}".replace("  ", " ")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(flags=list(self.flags), native_bf16=self.native_bf16, int8_dot=self.int8_dot, int8_saturates=self.int8_saturates,
                 summary=self.summary())
        return d


def _linux_flags(text: str) -> tuple[str, str]:
    """(model name, flags line) from /proc/cpuinfo text; x86 and ARM name them differently."""
    model, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if not model and key in ("model name", "hardware", "cpu model"):
            model = value.strip()
        elif not flags and key in ("flags", "features"):
            flags = value
    return model, flags


def detect(cpuinfo: str | None = None, arch: str | None = None) -> CpuCapabilities:
    """Read the capabilities (from `cpuinfo` text when given, for tests; else from this machine)."""
    arch = arch or platform.machine()
    wanted = ARM_FLAGS if arch in ("aarch64", "arm64") else X86_FLAGS
    if cpuinfo is None and platform.system() == "Darwin":
        return CpuCapabilities(arch, _sysctl("machdep.cpu.brand_string") or platform.processor(),
                               tuple(f for key, f in _MACOS_KEYS.items() if _sysctl(key) == "1"))
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = _linux_flags(cpuinfo)
    present = set(flags.split())
    return CpuCapabilities(arch, model or platform.processor() or arch, tuple(f for f in wanted if f in present))


def _sysctl(key: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


_OVERRIDE: list[CpuCapabilities] = []


@functools.lru_cache(maxsize=1)
def _detected() -> CpuCapabilities:
    return detect()


def cpu_capabilities() -> CpuCapabilities:
    """This CPU's capabilities (detected once), or the report set by `set_cpu_capabilities`."""
    return _OVERRIDE[-1] if _OVERRIDE else _detected()


def set_cpu_capabilities(caps: CpuCapabilities | None) -> None:
    """Make `cpu_capabilities()` return `caps` (None: the detected report again). For tests, to
    exercise the branches of another kind of CPU."""
    _OVERRIDE.clear()
    if caps is not None:
        _OVERRIDE.append(caps)
