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


def _role(pid: int, cmdline: list[str], own: int) -> str:
    """Which part of the local stack a process is, from its (non-empty) command line."""
    if pid == own:
        return "bench"
    joined = " ".join(cmdline)
    if cmdline[0].endswith("triton_python_backend_stub") and "_background/" in joined:
        return "triton_background"  # the instances of the backfill's copy of the model (training/background.py)
    if cmdline[0].endswith(("tritonserver", "triton_python_backend_stub")):  # the stubs run the models
        return "triton"
    if "redis-server" in joined or joined.startswith(("redis-aof-rewrite", "redis-rdb-bgsave")):
        return "redis"  # the server, or the child it forks to rewrite its append-only file
    if cmdline[0].endswith("java") and "kafka" in joined.lower():
        return "kafka"
    if "-m" in cmdline and "stream" in cmdline:
        return "backfill" if "backfill" in cmdline else "worker"
    return "other"


def process_cpu() -> dict[str, int]:
    """CPU jiffies (user + system) used so far by every running process, summed by role (`_role`): worker,
    backfill, triton, triton_background (the backfill's model instances), kafka, redis, the bench itself (its
    producer threads included) and other. Empty where there is no /proc."""
    import os

    own = os.getpid()
    out: dict[str, int] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, IndexError):
            continue  # gone meanwhile, or a kernel thread without a readable line
        if not cmdline:
            continue  # kernel threads
        role = _role(pid, cmdline, own)
        out[role] = out.get(role, 0) + int(rest[11]) + int(rest[12])
    return out


CpuMark = tuple[tuple[int, int, int] | None, dict[str, int]]


def cpu_mark() -> CpuMark:
    return cpu_times(), process_cpu()


def busy_share(by_process: dict[str, float]) -> float:
    """The share of all cores the processes of a `cpu_by_process` result used together (`stolen` left out)."""
    return sum(v for k, v in by_process.items() if k != "stolen")


def cpu_by_process(before: CpuMark, after: CpuMark) -> dict[str, float] | None:
    """Share of the VM's whole CPU capacity (all cores) each role used between two `cpu_mark()`s, with the
    hypervisor's `stolen` share beside them. A process that ended between the marks takes its time with it (its
    role's share is then low, never negative): take both marks while the processes of interest run."""
    (t0, p0), (t1, p1) = before, after
    whole = cpu_shares(t0, t1)
    if whole is None or t0 is None or t1 is None:
        return None
    total = t1[0] - t0[0]
    shares = {role: round(max(0, p1[role] - p0.get(role, 0)) / total, 3) for role in p1}
    shares["stolen"] = whole["steal"]
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))
