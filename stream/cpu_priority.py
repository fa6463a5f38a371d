"""Lower this process' CPU priority so that live work on the same host goes first, in a way the kernel honours.

A niceness alone is weighed only against the processes of the same *autogroup*. Linux with
`kernel.sched_autogroup_enabled = 1` (the default of most distributions, and of the 2-core VMs the bench ran on)
puts every session (`setsid`: each terminal, each service the local stack starts, each worker the bench starts) in
its own group, and shares the CPU between groups first: a process at niceness 19 in a session of its own gets as
much of a busy core as a process at 0 in another one (measured here: two spinning processes pinned to one core,
8.0 against 8.4 million loop turns in 4 s; in one session 0.24 against 16.2 million). So where this process leads
its own session, its autogroup's niceness (`/proc/self/autogroup`) is set too: that weighs the whole group against
the others. Where it does not (run from a shell, whose session holds the shell and whatever else it started),
changing the group would change the others' priority too, so only the process' niceness is set.

In containers (Kubernetes) autogroups do not apply (each container has its own cgroup; use CPU requests and
limits there) and the group's niceness is a harmless no-op.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")


def lower(nice: int) -> str:
    """Raise this process' niceness by `nice` (0-19) and, when it leads its own session, its autogroup's to the
    resulting niceness. Returns what was done, for the log."""
    if not nice:
        return "CPU priority unchanged"
    now = os.nice(nice)
    if os.getsid(0) != os.getpid():
        return f"niceness {now} (its session's autogroup left alone: other processes share it)"
    try:
        AUTOGROUP.write_text(str(now))
    except OSError:  # a kernel without autogroups; or a niceness the group may not take (lower needs privileges)
        return f"niceness {now}"
    return f"niceness {now}, its autogroup too"


def autogroup_nice(pid: int | str = "self", proc: Path = Path("/proc")) -> int | None:
    """The niceness of a process' autogroup (`/autogroup-N nice K`), or None where it has none: a kernel without
    autogroups (no file), or a process still in the boot-time group (an empty file: no one in its line of parents
    started a session since init, as under some CI runners and container inits; that group is the root group)."""
    try:
        text = (proc / str(pid) / "autogroup").read_text()
    except OSError:
        return None
    found = re.search(r"\bnice\s+(-?\d+)", text)
    return int(found.group(1)) if found else None
