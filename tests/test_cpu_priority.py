"""The backfill's lower CPU priority reaches the kernel's first level of sharing (autogroups), where it leads its
own session, and leaves a shared session alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stream.cpu_priority import autogroup_nice

LOWER = "from stream import cpu_priority as c; print(c.lower({n})); import os; print(os.nice(0), c.autogroup_nice())"


def _lower_in_child(nice: int, own_session: bool) -> tuple[str, int, int | None]:
    out = subprocess.run(
        [sys.executable, "-c", LOWER.format(n=nice)],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=own_session,
        check=True,
    )
    said, numbers = out.stdout.strip().splitlines()[-2:]
    process_nice, group_nice = numbers.split()
    return said, int(process_nice), None if group_nice == "None" else int(group_nice)


@pytest.fixture
def autogroups() -> int:
    nice = autogroup_nice()
    if nice is None:
        pytest.skip("this kernel has no autogroups (/proc/self/autogroup)")
    return nice


def test_a_process_leading_its_own_session_lowers_its_autogroup_too(autogroups: int) -> None:
    said, process_nice, group_nice = _lower_in_child(7, own_session=True)
    assert process_nice == min(19, os.nice(0) + 7)
    assert group_nice == process_nice, "the session's group is weighed against the others at the process' niceness"
    assert said == f"niceness {process_nice}, its autogroup too"


def test_a_process_in_a_shared_session_leaves_the_group_alone(autogroups: int) -> None:
    said, process_nice, group_nice = _lower_in_child(7, own_session=False)
    assert process_nice == min(19, os.nice(0) + 7)
    assert group_nice == autogroups, "the test's own session (its shell, its other children) keeps its priority"
    assert autogroup_nice() == autogroups
    assert "left alone" in said


def test_no_niceness_changes_nothing() -> None:
    said, process_nice, _ = _lower_in_child(0, own_session=True)
    assert process_nice == os.nice(0)
    assert said == "CPU priority unchanged"
