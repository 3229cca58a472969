"""Dynamic micro-batching: jobs with the same key wait briefly for each other and run as one model call."""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lifecycle.serving.telemetry import Metrics

log = logging.getLogger("llm-lifecycle.serve")


@dataclass
class Job:
    key: tuple          # jobs batch together only when their keys are equal
    payload: dict
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


def length_groups(lengths: list[int], slack: float) -> list[list[int]]:
    """Indices grouped by length, shortest first: a group's longest is at most `slack` x its shortest (the padding
    a group's shortest rows pay)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= slack * max(1, lengths[groups[-1][0]]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class Batcher:
    """Dynamic micro-batching: the first job of a batch waits up to `max_wait_ms` for up to `max_batch_size - 1`
    others with the same key; the batch runs in one worker thread, so the event loop keeps serving."""

    def __init__(self, run_batch, max_batch_size: int, max_wait_ms: float, metrics: Metrics, executor):
        self.run_batch, self.max_batch_size, self.max_wait = run_batch, max_batch_size, max_wait_ms / 1000
        self.metrics, self.executor = metrics, executor
        self.queue: asyncio.Queue = asyncio.Queue()
        self.held: collections.deque = collections.deque()  # jobs that did not fit the last batch's key

    async def submit(self, key: tuple, payload: dict) -> Any:
        job = Job(key, payload, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def next_batch(self) -> list[Job]:
        first = self.held.popleft() if self.held else await self.queue.get()
        batch, others = [first], collections.deque()
        for job in list(self.held):
            if len(batch) < self.max_batch_size and job.key == first.key:
                batch.append(job)
            else:
                others.append(job)
        self.held = others
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                job = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
            except (TimeoutError, asyncio.QueueEmpty):
                break
            (batch if job.key == first.key else self.held).append(job)
        return batch

    async def work(self) -> None:
        while True:
            batch = [j for j in await self.next_batch() if not j.future.done()]  # timed-out jobs are dropped
            if batch:
                await self.run(batch)

    async def run(self, batch: list[Job]) -> None:
        """One model call for `batch`; when it fails, each job runs again alone, so that only the job that cannot run
        fails (the requests are checked before they are queued: this isolates what no check foresaw)."""
        task = batch[0].key[0]
        self.metrics.batch_size.labels(task).observe(len(batch))
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch, batch)
        except Exception as err:  # one bad job fails its request, never its batch or the server
            self.metrics.failed_batches.labels(task, str(len(batch) > 1).lower()).inc()
            if len(batch) > 1:
                log.warning("batch of %d %s jobs failed (%r): running each alone", len(batch), task, err)
                for job in batch:
                    if not job.future.done():
                        await self.run([job])
                return
            log.exception("a %s job failed", task)
            if not batch[0].future.done():
                batch[0].future.set_exception(err)
            return
        for job, result in zip(batch, results):
            if not job.future.done():
                job.future.set_result(result)
