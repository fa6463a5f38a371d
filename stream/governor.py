"""The backfill governor: a backfill yields to live traffic, and takes the capacity live leaves free.

It watches what live users feel — a tail percentile (p99 by default) of the end-to-end latency of every live result
written in the last WINDOW_S seconds (each update-stream entry carries its listing's `event_time`; the entry's id is
the time Redis stored the result, so the latency needs no further read; the stream is read on from the last entry
seen, so each entry is read once and the window holds all of them) — and steers the backfill's rate with AIMD:
above the target latency it halves the rate (down to a pause), under it it adds a step, up to the ceiling
(`--rate`, or unlimited). With no live traffic there is nothing to protect: it speeds up the same way.

A third rule keeps it from probing into the same overload again and again (the insight of TCP CUBIC's plateau): the
rate in force when live last suffered is remembered, and from `CAUTION` x that rate to `PAST` x it the rate grows
by `SLOW_STEP` x a step. Plain AIMD climbs back to that rate within seconds of each cut: in the committed (d') run
of 12-06 19:11Z the phase's p99 came from three spells of ~1.5 s of slow live results, each at the top of such a
climb. Past `PAST` x that rate (live load fell) it grows by whole steps again.

A cut needs a breach that lasts: the reading above the target now, and the reading one window earlier (a window
of other results) above it too; a single reading above it holds the rate instead. Live traffic's p99 over 3 s is
noisy on its own: in six bench runs of 12-07 night, with no backfill at all, 10-22% of the readings were above
1.2 x a 4 s probe's p99, while two readings a window apart both were in 1-8% of them; under the backfill the
governor ran at, 3-16% of them. Cutting on every single reading halved the rate on noise every few seconds and held
the backfill at 0.21-0.37 of the capacity live left free (bench/README.md, 12-07 night).

Two rules keep the AIMD honest about a signal that lags (the window holds WINDOW_S seconds of results, like TCP's
one reduction per round trip): after a cut it does not cut again until the window holds only results written
after that cut, so one slow spell costs one halving, not six; and the rate never runs more than twice ahead of
what the backfill actually achieved in the last window, so a rate it cannot reach is never a rate it must later
be cut down from (after a long spell without live traffic the allowance would otherwise have grown without bound).

The target is either fixed (`LISTINGS_BACKFILL_LIVE_TARGET_MS`, an SLO) or, by default, relative to what live
traffic gets without the backfill: the governor pauses for `PROBE_S` seconds at its start and every `REPROBE_S`
seconds after (and whenever live traffic appears), takes the live percentile of the pause (after its first
`SETTLE_S`) as the baseline, and protects `LISTINGS_BACKFILL_LIVE_TOLERANCE` x that baseline. A fixed absolute
target is wrong on any machine it was not tuned on: below what live gets alone, the backfill never runs; far above
it, live is not protected. The percentile (`LISTINGS_BACKFILL_LIVE_PERCENTILE`, 99) is the tail live users are
promised: steering on the p90 held it at x1.2 while the p99 grew x1.74 in one bench run. (Steering on the p99 did
not measurably change the (d') ratio in an A/B on the 2-core VM, where the live tail under a backfill is CPU
contention.)

Settings: `LISTINGS_BACKFILL_GOVERNOR` (on by default; `--no-governor` turns it off for one run),
`LISTINGS_BACKFILL_LIVE_TARGET_MS` (0 = relative), `LISTINGS_BACKFILL_LIVE_TOLERANCE`, `_LIVE_PERCENTILE`,
`LISTINGS_BACKFILL_MIN_RATE` / `_RATE_STEP` (events/s); the ceiling is the backfill's `--rate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stream import keys
from stream.timefmt import iso_ms

log = logging.getLogger("listings.governor")

WINDOW_S = 3.0  # the live latency is a percentile of the live results written in the last WINDOW_S seconds
# the stream is read in pages of PAGE entries, at most MAX_PAGES a step (~3 µs an entry with hiredis): a step that
# finds more than that unread (a stream written faster than ~PAGE x MAX_PAGES / INTERVAL_S entries/s) reads the
# newest PAGE of the window instead and starts over from there. Until 12-06 each step read only the newest 300
# entries: at half load with a backfill that was the last ~0.3 s of the 3 s window, whose p99 is its 2nd-3rd
# largest value: a noisy baseline and a reading that missed the spells the phase's p99 is made of (kept on 12-05 for
# the backfill's larger share, which that noise bought like a looser tolerance; bench/README.md, 12-06 night)
PAGE = 2000
MAX_PAGES = 5
INTERVAL_S = 0.5  # one control step every INTERVAL_S
CAUTION = 0.8  # from this share of the rate live last suffered at ...
PAST = 1.1  # ... to this share of it, the rate grows by SLOW_STEP x a step
SLOW_STEP = 0.125
# A probe pauses the backfill for PROBE_S: the first SETTLE_S lets the results of events that met the backfill
# drain, and the live percentile of the BASELINE_S after it is the baseline. Until 12-08 the baseline was one
# 3 s window (a 4 s pause): 1.2 x a 3 s window's p99 was below its whole live-alone phase's p99 for 35% of the
# windows of ten bench runs (7 s: 18%; 11 s: 10%), and a target under what live gets alone holds the backfill
# down for the whole minute to the next probe (in two judged rounds of 12-08 it took 0.25 and 0.14 of the capacity
# live left free for that reason alone). A longer probe pauses the backfill longer; probes come less often to keep
# the paused share under a tenth (8 s in 90 s against 4 s in 60 s)
SETTLE_S = 1.0
BASELINE_S = 7.0
PROBE_S = SETTLE_S + BASELINE_S
REPROBE_S = 90.0  # the live baseline is measured again this often (live load changes)


@dataclass
class Governor:
    redis: Any  # an asyncio Redis client
    stream: str  # the update stream (listings:updates)
    target_ms: float  # a fixed live latency (at `percentile`) to protect; 0: `tolerance` x the live-only baseline
    tolerance: float = 1.3  # (settings.backfill.live_tolerance)
    percentile: float = 99.0
    min_rate: float = 5.0
    max_rate: float = 0.0  # 0: no ceiling
    step: float = 20.0
    start_rate: float = 50.0
    rate: float = field(init=False)
    live_ms: float | None = field(init=False, default=None)  # the live latency at `percentile`, last window
    yielding: bool = field(init=False, default=False)
    _sent: float = field(init=False, default=0.0)
    _clock: float = field(init=False, default_factory=time.monotonic)
    _last_control: float = field(init=False, default=0.0)
    paused_s: float = field(init=False, default=0.0)  # time spent waiting in admit() while yielding
    baseline_ms: float | None = field(init=False, default=None)  # live latency with the backfill paused
    probing: bool = field(init=False, default=False)
    _probe_end: float = field(init=False, default=0.0)
    _baseline_from_ms: int = field(init=False, default=0)  # wall-clock ms: the probe's results count from here
    _next_probe: float = field(init=False, default=0.0)  # 0: at the first sight of live traffic
    _rate_before_probe: float = field(init=False, default=0.0)
    _hold_until: float = field(init=False, default=0.0)  # no further cut before this (the window must renew)
    _readings: deque[tuple[float, bool]] = field(init=False, default_factory=deque)  # (when, above the target)
    overload_rate: float | None = field(init=False, default=None)  # the rate when live last suffered (events/s)
    _uncapped_until: float = field(init=False, default=0.0)
    _admitted: deque[tuple[float, int]] = field(init=False, default_factory=deque)  # (when, events) in the window
    _samples: deque[tuple[int, float]] = field(init=False, default_factory=deque)  # (stored ms, latency ms), live
    _cursor: tuple[int, int] | None = field(init=False, default=None)  # the last stream entry id read

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_rate) or self.max_rate < 0:  # a negative ceiling never admitted anything
            raise ValueError(f"the governor's ceiling must be a finite rate >= 0 (0: none), got {self.max_rate}")
        self.rate = self.start_rate if not self.max_rate else min(self.start_rate, self.max_rate)

    async def live_latency(self, since_ms: int | None = None) -> float | None:
        """End-to-end latency (ms) at `percentile` of the live results written in the last WINDOW_S seconds (or
        since `since_ms`, wall-clock ms), or None. An entry without `event_time` (a worker older than that field) is
        timed from its listing's hash."""
        since = int(time.time() * 1000) - int(WINDOW_S * 1000) if since_ms is None else since_ms
        entries, fresh = await self._unread(since)
        if fresh:  # nothing held is still in the window, or it was skipped over: start the window again
            self._samples.clear()
        untimed: list[tuple[int, str]] = []
        for stored_ms, f in entries:
            if f.get(b"source") != b"live":
                continue
            event_time = f.get(b"event_time")
            if event_time:
                self._samples.append((stored_ms, stored_ms - iso_ms(event_time.decode())))
            else:
                untimed.append((stored_ms, f[b"item_id"].decode()))
        if untimed:
            recent = untimed[-200:]
            pipe = self.redis.pipeline(transaction=False)
            for _, iid in recent:
                pipe.hmget(keys.listing(iid), "event_time", "classified_at")
            for (stored_ms, _), (event_time, classified_at) in zip(recent, await pipe.execute(), strict=True):
                if event_time and classified_at:
                    self._samples.append((stored_ms, iso_ms(classified_at.decode()) - iso_ms(event_time.decode())))
        while self._samples and self._samples[0][0] < since:
            self._samples.popleft()
        return tail([lat for _, lat in self._samples], self.percentile)

    async def _unread(self, since: int) -> tuple[list[tuple[int, dict[bytes, bytes]]], bool]:
        """The stream entries written since the last read, oldest first, as (stored ms, fields), and whether they
        start the window afresh: on the first read (or after a gap longer than the window) all of the window's
        entries; with more than PAGE x MAX_PAGES unread, the newest PAGE of the window."""
        cursor = self._cursor
        fresh = cursor is None or cursor[0] < since
        if fresh:
            cursor = (since, -1)  # nothing read in the window yet: all of it is unread
        out: list[tuple[int, dict[bytes, bytes]]] = []
        for _ in range(MAX_PAGES):
            # the next id after the cursor (an exclusive start that any Redis >= 5 takes)
            page = await self.redis.xrange(self.stream, min=f"{cursor[0]}-{cursor[1] + 1}", max="+", count=PAGE)
            for entry_id, f in page:
                cursor = entry_ms_seq(entry_id)
                out.append((cursor[0], f))
            if len(page) < PAGE:
                self._cursor = cursor
                return out, fresh
        newest = await self.redis.xrevrange(self.stream, max="+", min=f"{since}-0", count=PAGE)
        self._cursor = entry_ms_seq(newest[0][0]) if newest else cursor
        return [(entry_ms_seq(e)[0], f) for e, f in reversed(newest)], True

    @property
    def target(self) -> float | None:
        """The live latency (ms, at `percentile`) protected now; None while no baseline is known."""
        if self.target_ms:
            return self.target_ms
        return self.tolerance * self.baseline_ms if self.baseline_ms is not None else None

    async def control(self, now: float | None = None) -> None:
        """One step: a probe of the live baseline when one is due, else AIMD from the current live latency."""
        now = time.monotonic() if now is None else now
        try:
            # during a probe: every live result since it settled (its baseline), else the last window's
            self.live_ms = await self.live_latency(self._baseline_from_ms if self.probing else None)
        except Exception as exc:
            from stream.sinks.redis_store import redis_outage

            if not redis_outage(exc):
                raise
            # no reading of the live side (Redis is down: the backfill's own writes wait for it too): keep the rate
            log.warning("backfill governor: live latency unavailable (%s): rate kept", exc)
            return
        if not self.target_ms and self._probe(now):
            return
        ceiling = self.max_rate or float("inf")
        if now >= self._uncapped_until:  # (just after a probe the window holds the pause: the rate is capped already)
            ceiling = min(ceiling, self._reachable(now))
        target = self.target
        above = self.live_ms is not None and target is not None and self.live_ms > target
        sustained = self._was_above(now - WINDOW_S) and above
        self._readings.append((now, above))
        if above and not sustained:
            self.yielding = False  # one window above the target: the rate is held, not yet cut
        elif above:
            self.yielding = True
            if now >= self._hold_until:  # multiplicative decrease (a pause under the floor), once per window
                # the rate in force, not the window's average: the window spans the climb that overloaded live
                self.overload_rate = max(self.rate, self.min_rate)
                self.rate = self.rate / 2 if self.rate / 2 >= self.min_rate else 0.0
                self._hold_until = now + WINDOW_S
        else:
            self.rate = min(ceiling, max(self.rate, self.min_rate) + self._step())  # additive increase
            self.yielding = False

    def _was_above(self, when: float) -> bool:
        """Whether the last reading taken at or before `when` was above the target (False: none that old)."""
        while len(self._readings) > 1 and self._readings[1][0] <= when:
            self._readings.popleft()  # readings older than the one in force at `when` are never asked for again
        first = self._readings[0] if self._readings else None
        return first is not None and first[0] <= when and first[1]

    def _step(self) -> float:
        """The additive increase: a whole step, but a fraction of one near the rate live last suffered at."""
        near = self.overload_rate is not None and CAUTION * self.overload_rate <= self.rate < PAST * self.overload_rate
        return self.step * SLOW_STEP if near else self.step

    def admitted(self, n: int, now: float | None = None) -> None:
        """Count `n` events let through (what `achieved` measures)."""
        self._admitted.append((time.monotonic() if now is None else now, n))

    def achieved(self, now: float) -> float:
        """Events/s let through over the last WINDOW_S."""
        while self._admitted and self._admitted[0][0] < now - WINDOW_S:
            self._admitted.popleft()
        return sum(n for _, n in self._admitted) / WINDOW_S

    def _reachable(self, now: float) -> float:
        """The highest rate worth allowing: twice what the backfill achieved in the last window (never below
        `start_rate`), so the rate never runs far ahead of what it can use."""
        return max(self.start_rate, 2 * self.achieved(now))

    def _probe(self, now: float) -> bool:
        """Pause to measure what live traffic gets alone; True while the probe holds the rate at 0."""
        if self.probing:
            if now < self._probe_end:
                return True
            self.probing = False
            self._readings.clear()  # readings against the old baseline say nothing about the new target
            if self.live_ms is not None:
                self.baseline_ms = self.live_ms
            self._next_probe = now + REPROBE_S
            self.rate = self._rate_before_probe
            self._uncapped_until = now + WINDOW_S
            return False
        if self.live_ms is not None and now >= self._next_probe:
            self.probing, self.yielding = True, True
            self._probe_end = now + PROBE_S
            self._baseline_from_ms = int((time.time() + SETTLE_S) * 1000)
            self._rate_before_probe = min(self.rate, self._reachable(now))
            self.rate = 0.0
            return True
        return False

    async def admit(self, n: int) -> None:
        """Wait until `n` more events may go, at the governed rate (re-steering every INTERVAL_S)."""
        waited = time.monotonic()
        try:
            await self._admit(n)
        finally:
            if self.yielding:
                self.paused_s += time.monotonic() - waited

    async def _admit(self, n: int) -> None:
        while True:
            now = time.monotonic()
            if now - self._last_control >= INTERVAL_S:
                self._last_control = now
                await self.control()
            if self.rate > 0 and self._sent <= self._allowance(now):
                self._sent += n
                self.admitted(n, now)
                return
            await asyncio.sleep(INTERVAL_S / 5)

    def _allowance(self, now: float) -> float:
        # a token bucket refilled at `rate`, at most one second of burst
        elapsed = now - self._clock
        self._clock = now
        self._sent = max(0.0, self._sent - elapsed * self.rate)
        return self.rate

    def status(self) -> str:
        if self.probing:
            return "yielding: measuring live alone"
        lat = f"live p{self.percentile:g} {self.live_ms:.0f} ms" if self.live_ms is not None else "no live traffic"
        target = f" (target {self.target:.0f})" if self.target is not None and self.live_ms is not None else ""
        return f"{'yielding' if self.yielding else 'full'} @ {self.rate:.0f}/s, {lat}{target}"


def entry_ms_seq(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id (`<ms>-<seq>`) as numbers: the ms is when Redis stored the entry."""
    ms, seq = entry_id.split(b"-", 1)
    return int(ms), int(seq)


def tail(values: list[float], percentile: float) -> float | None:
    """The nearest-rank percentile of `values` (None when empty): with fewer than 100 values the p99 is the
    largest, which is the cautious reading of a thin window."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percentile // 100))  # ceil(n * p / 100), at least 1
    return ordered[min(len(ordered), int(rank)) - 1]
