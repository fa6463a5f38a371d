"""Several micro-batches in flight to Triton, sinks written strictly in consumption order.

`submit` blocks while `max_in_flight` batches are pending: that is the back-pressure that stops
consumption while Triton, Redis or Kafka is down. `on_done(token, stats)` runs after every sink has
acknowledged a batch, in submit order: the caller acks / commits the batch's offsets there.

Dependency outages never fail a batch (the clients retry them). Anything else that fails a batch is a bug or
a broken invariant: `on_failure(exc)` is called at once — not at the next `submit`, which may never come when
no further event arrives — so the caller can stop (the worker exits for its supervisor) instead of sitting
on partitions it no longer processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from stream import metrics
from stream.health import HEALTH
from stream.pipeline.process import BatchStats, Pipeline, Prepared
from stream.pipeline.records import InRecord
from stream.pipeline.timing import BatchTiming, Recorder, now_ms

log = logging.getLogger("listings.conveyor")

Done = Callable[[Any, BatchStats], Awaitable[None]]
Failed = Callable[[BaseException], None]


class Conveyor:
    def __init__(
        self,
        pipeline: Pipeline,
        max_in_flight: int,
        on_done: Done,
        on_failure: Failed | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.on_done = on_done
        self.on_failure = on_failure
        self.recorder = recorder or Recorder()
        self._pending = 0
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._queue: asyncio.Queue[tuple[asyncio.Task[Prepared], Any] | None] = asyncio.Queue()
        self._sink_task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self.stats = BatchStats()

    def start(self) -> None:
        self._sink_task = asyncio.create_task(self._sink_loop(), name="listings-sinks")

    async def submit(self, records: list[InRecord], token: Any, timing: BatchTiming | None = None) -> None:
        if self._failure is not None:
            raise RuntimeError("the sink stage failed") from self._failure
        await self._slots.acquire()
        if timing is not None:
            timing.dispatched_ms = now_ms()  # the batch's stages (and its span) start here, not before the slot wait
        metrics.IN_FLIGHT.inc()
        self._pending += 1
        HEALTH.work(self._pending)
        task = asyncio.create_task(self.pipeline.prepare(records, timing))
        await self._queue.put((task, token))

    async def _sink_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            task, token = item
            try:
                prepared = await task
                t = prepared.timing
                t.add("sink_wait", (now_ms() - t.marks.get("classified", now_ms())) / 1000)
                stats = await self.pipeline.commit_outputs(prepared)
                self.stats.add(stats)
                t.mark("sinks_done")
                await self.on_done(token, stats)
                t.add("ack", (now_ms() - t.marks["sinks_done"]) / 1000)
                self.recorder.record(t)
                HEALTH.progress()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # nothing of this batch was acknowledged: its offsets stay uncommitted and are redelivered
                log.exception("batch failed; stopping so its events are redelivered")
                self._failure = exc
                if self.on_failure is not None:
                    self.on_failure(exc)
                raise
            finally:
                metrics.IN_FLIGHT.dec()
                self._pending -= 1
                HEALTH.work(self._pending)
                self._slots.release()

    async def drain(self) -> None:
        """Wait until every submitted batch went through its sinks, then stop the sink stage."""
        await self._queue.put(None)
        if self._sink_task is not None:
            await self._sink_task

    async def cancel(self) -> None:
        """Stop at once: the sink stage and every batch still being classified (left running, a batch retrying a
        Triton that is away would go on after the client closed, opening a connection nobody closes)."""
        waiting: list[asyncio.Task[Prepared]] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                item[0].cancel()
                waiting.append(item[0])
        if self._sink_task is not None:
            self._sink_task.cancel()  # and the batch it awaits
            waiting.append(self._sink_task)  # type: ignore[arg-type]
        await asyncio.gather(*waiting, return_exceptions=True)
