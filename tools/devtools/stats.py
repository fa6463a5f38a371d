"""Small statistics the demo and the benchmark share."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_times() -> tuple[int, int, int] | None:
    """(total, idle, steal) jiffies of all CPUs from /proc/stat, or None where there is none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already counted in user)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]), idle, steal


def cpu_shares(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> dict[str, float] | None:
    """Shares of the CPU time between two `cpu_times()`: busy (ours and anyone's on this VM) and stolen (taken by
    the hypervisor for other guests: time this VM wanted to run and could not)."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    total = after[0] - before[0]
    return {
        "busy": round(1 - (after[1] - before[1]) / total - (after[2] - before[2]) / total, 3),
        "steal": round((after[2] - before[2]) / total, 3),
    }
