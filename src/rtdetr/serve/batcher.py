"""Micro-batching: pictures that arrive together go through the model in one call.

Requests put a `Job` in the queue and await its future. One asyncio task takes the jobs: after
the oldest one has waited `wait_s` (or as soon as `max_batch` are waiting) it runs up to
`max_batch` of those that share the oldest one's network size in one call of `run`, on one
worker thread: the model is not thread-safe, so exactly one batch runs at a time, and the
event loop stays free to read new requests meanwhile (they queue up for the next batch).
Pictures of other sizes stay queued, in order, for the next round.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any


@dataclass
class Job:
    """One picture to run: `image` [H, W, 3] uint8 RGB at network size `imgsz`; `conf` and
    `max_det` are what its request asked for (the batch runs at the loosest of them)."""

    image: Any
    imgsz: tuple[int, int]
    conf: float
    max_det: int
    future: asyncio.Future = field(default=None, repr=False)
    queued: float = field(default_factory=perf_counter)


@dataclass
class BatchOutput:
    """What one picture got from its batch: the predictor's `Result`, and the wall time of the
    whole model call it was part of (`inference_ms`) with the number of pictures in it."""

    result: Any
    inference_ms: float
    batch_size: int


class MicroBatcher:
    """Collects `Job`s into batches and runs each batch with `run(jobs) -> list[Result]` on one thread.

    Start it with `start()` inside the running event loop (the app's lifespan), stop it with `stop()`.
    """

    def __init__(self, run: Callable[[list[Job]], list], *, max_batch: int = 8, wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"the batch wait must be 0 or more, got {wait_s}")
        self.run, self.max_batch, self.wait_s = run, int(max_batch), float(wait_s)
        self._pending: list[Job] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: the model runs one batch at a time (it is not thread-safe).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtdetr-model")
        self.batch_sizes: Counter[int] = Counter()   # batches run so far, by size (/v1/model shows them)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="rtdetr-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._pending:
            if not job.future.done():
                job.future.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, job: Job) -> BatchOutput:
        """Queue one picture and wait for its output; a model error is raised here, in every request of the batch."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running (start it in the app's lifespan)")
        job.future = asyncio.get_running_loop().create_future()
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Requests whose client left are dropped here rather than run.
            self._pending = [j for j in self._pending if not j.future.done()]
            if not self._pending:
                continue
            # Wait for company until the oldest job has waited wait_s, or a batch is full.
            deadline = self._pending[0].queued + self.wait_s
            while len(self._same_size()) < self.max_batch and (left := deadline - perf_counter()) > 0:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
                self._wakeup.clear()
            batch = self._same_size()[: self.max_batch]
            taken = {id(j) for j in batch}
            self._pending = [j for j in self._pending if id(j) not in taken]
            await self._run_batch(loop, batch)
            if self._pending:
                self._wakeup.set()

    def _same_size(self) -> list[Job]:
        """The waiting jobs that can share a batch with the oldest one: those of its network size."""
        size = self._pending[0].imgsz
        return [j for j in self._pending if j.imgsz == size]

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Job]) -> None:
        t0 = perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.run, batch)
        except Exception as e:  # a model error fails this batch's requests, not the service
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        ms = 1000 * (perf_counter() - t0)
        self.batch_sizes[len(batch)] += 1
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(BatchOutput(result, ms, len(batch)))
