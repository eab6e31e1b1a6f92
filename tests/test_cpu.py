"""`rtdetr.core.cpu`: the capability report, read from /proc/cpuinfo texts of the CPU kinds people have."""
from __future__ import annotations

import pytest

from rtdetr.core.cpu import CpuCapabilities, cpu_capabilities, detect, set_cpu_capabilities

# Flags lines as the Linux kernel prints them (shortened to the flags that matter plus some others).
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 sha_ni vaes vpclmulqdq
"""
ICELAKE = """model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_vbmi2
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16
"""
ALDER_LAKE = """model name\t: 12th Gen Intel(R) Core(TM) i7-1260P
flags\t\t: avx avx2 fma avx_vnni
"""
NEOVERSE_N1 = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
"""
NEOVERSE_V1 = """Features\t: fp asimd aes sha2 crc32 atomics asimddp sve i8mm bf16 svebf16
"""


@pytest.mark.parametrize("text, arch, bf16, int8_dot, saturates", [
    (ZEN3, "x86_64", False, False, True),
    (ICELAKE, "x86_64", False, True, False),
    (SAPPHIRE_RAPIDS, "x86_64", True, True, False),
    (ALDER_LAKE, "x86_64", False, True, False),
    (NEOVERSE_N1, "aarch64", False, True, False),
    (NEOVERSE_V1, "aarch64", True, True, False),
])
def test_capabilities_of_each_kind(text, arch, bf16, int8_dot, saturates):
    caps = detect(text, arch)
    assert (caps.native_bf16, caps.int8_dot, caps.int8_saturates) == (bf16, int8_dot, saturates)
    d = caps.to_dict()
    assert d["native_bf16"] == bf16 and d["summary"] == caps.summary()


def test_summary_names_what_matters():
    assert detect(ZEN3, "x86_64").summary() == "x86_64 AVX2 no VNNI, no native bf16"
    assert detect(ZEN3, "x86_64").model == "AMD EPYC 7B13 64-Core Processor"
    assert detect(ICELAKE, "x86_64").summary() == "x86_64 AVX2 AVX512 AVX512-VNNI, no native bf16"
    assert detect(SAPPHIRE_RAPIDS, "x86_64").summary() == "x86_64 AVX2 AVX512 AVX512-VNNI AMX, native bf16"
    assert detect(NEOVERSE_V1, "aarch64").summary() == "aarch64 NEON DOTPROD I8MM SVE, native bf16"
    # ARM's missing instruction set is named in ARM's terms.
    assert detect(NEOVERSE_N1, "aarch64").missing_bf16() == "ARM FEAT_BF16"
    assert detect(ZEN3, "x86_64").missing_bf16() == "AVX512_BF16 or AMX-BF16"


def test_flag_names_are_whole_words():
    """'avx512_bf16' in the flags must not make 'bf16' true on ARM, nor 'avx512f' match 'avx512fp16'."""
    caps = detect("flags\t: avx2 avx512_fp16\n", "x86_64")
    assert not caps.avx512 and caps.flags == ("avx2", "avx512_fp16")
    assert not detect("Features\t: asimd svebf16\n", "aarch64").native_bf16


def test_this_machine_and_the_override():
    real = cpu_capabilities()
    assert real.arch and real is cpu_capabilities()  # detected once
    fake = CpuCapabilities("x86_64", "test CPU", ("avx2", "fma"))
    set_cpu_capabilities(fake)
    try:
        assert cpu_capabilities() is fake and fake.int8_saturates
    finally:
        set_cpu_capabilities(None)
    assert cpu_capabilities() is real
