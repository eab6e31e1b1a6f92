"""Keeping large CPU buffers for reuse instead of handing them back to the OS after every op.

A detector's activations on the CPU are large (one stride-2 map of an RT-DETR at 640x640 is
26 MB per image; at batch 4, 105 MB) and short-lived: every op allocates its output and the
next frees it. glibc's malloc serves requests above its mmap threshold (at most 32 MB by
default) with fresh `mmap` pages and unmaps them on `free`, so every such tensor is page-faulted
in again, 4 KB at a time, on its first write. Measured (rtdetrv2_r18vd, 640x640, 2 threads,
benchmarks/malloc.py, ms per image): eager batch 1 354 -> 330, batch 4 458 -> 319 (0.70x); the
fused copy batch 1 197 -> 193, batch 4 265 -> 194 (0.73x): without it, batches were slower per
image than single pictures. Raising the thresholds keeps freed memory in the
heap for the next tensor; the cost is that the process keeps its peak heap instead of returning
it to the OS (the same trade tcmalloc and jemalloc make, which PyTorch's CPU tuning guides
recommend for this reason).

`reuse_large_allocations()` is process-wide and idempotent; the command line, the predictor and
the trainer call it when they run on the CPU. It does nothing where malloc is not glibc's, and
setting the environment variable RTDETR_KEEP_MALLOC=1 turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

THRESHOLD = 1 << 30  # bytes: allocations below this come from (and return to) the heap
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_done: bool | None = None


def reuse_large_allocations() -> bool:
    """Raise glibc's mmap and trim thresholds to `THRESHOLD` once; True if they are raised."""
    global _done
    if _done is None:
        _done = _set_thresholds()
    return _done


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get("RTDETR_KEEP_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has mallopt with other meanings)
    except (OSError, AttributeError):
        return False
    return libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD) == 1
