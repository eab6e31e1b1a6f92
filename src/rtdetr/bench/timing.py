"""How a benchmark measures: interleaved steps with idle pauses, thread settings, the machine, other load."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import platform
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from rtdetr.core.cpu import cpu_capabilities
from rtdetr.predict.predictor import Predictor
from rtdetr.predict.sources import Frame
from rtdetr.bench.images import decode_image


PAUSE = 0.01         # seconds idle before each timed step (see `interleaved`)


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
