"""`reuse_large_allocations`: large tensors stop costing a page fault per 4 KB on every allocation.

Page faults are counted, not timed (getrusage's minor-fault counter), in fresh processes: the
setting is process-wide. Filling a new 64 MB tensor ten times faults in all of its 16,384 pages
each time under glibc's defaults (freed memory above the mmap threshold goes back to the OS):
163,850 faults measured; once the thresholds are raised, one or two tensors' worth in all.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rtdetr.core.memory import reuse_large_allocations

# The probe loads what a prediction process loads (the model stack and the predictor). How much
# of the heap is reused depends on the layout the imports leave: measured with torch alone, and
# with torch and torchvision under AVX2 kernels, anywhere from 0 to 6 of the 10 tensors still
# faulted in (up to 98,304 faults) although the thresholds were raised; with these imports,
# 0 to 32,769 faults over 16 runs, on AVX-512 and AVX2 kernels alike.
PROBE = """
import resource, sys, torch
import rtdetr.api, rtdetr.predict.predictor
from rtdetr.core.memory import reuse_large_allocations
raised = reuse_large_allocations()
torch.empty(16 * 1024 * 1024).fill_(1.0)   # warm: the first 64 MB always faults in
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16 * 1024 * 1024).fill_(1.0)
print(raised, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 64 * 1024 * 1024 // 4096


def faults(keep_malloc: bool) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "RTDETR_KEEP_MALLOC"}
    if keep_malloc:
        env["RTDETR_KEEP_MALLOC"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    raised, count = out.stdout.split()
    return raised == "True", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not reuse_large_allocations(),
                    reason="glibc's malloc only")
def test_large_tensors_are_reused_instead_of_faulted_in_again():
    raised, reused = faults(keep_malloc=False)
    kept, default = faults(keep_malloc=True)
    assert raised and not kept
    assert default > 5 * PAGES          # ~10 x 16,384: every fill faults the whole tensor in again
    # The heap grows to fit the first one or two blocks (measured over 12 runs: 16,384 faults 8
    # times, 32,768 4 times); after that a freed block is handed back out, already mapped.
    assert reused <= 2.5 * PAGES and default > 4 * reused


def test_idempotent():
    assert reuse_large_allocations() == reuse_large_allocations()
