"""The backfill's lower CPU priority reaches the kernel's first level of sharing (autogroups), where it leads its
own session, and leaves a shared session alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cpu_priority import AUTOGROUP, autogroup_nice

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
def autogroups() -> int | None:
    """The test's own autogroup niceness (None where it runs in the boot-time group, as under some CI runners)."""
    if not AUTOGROUP.exists():
        pytest.skip("this kernel has no autogroups (/proc/self/autogroup)")
    return autogroup_nice()


def test_a_process_leading_its_own_session_lowers_its_autogroup_too(autogroups: int | None) -> None:
    said, process_nice, group_nice = _lower_in_child(7, own_session=True)
    assert process_nice == min(19, os.nice(0) + 7)
    assert group_nice == process_nice, "the session's group is weighed against the others at the process' niceness"
    assert said == f"niceness {process_nice}, its autogroup too"


def test_a_process_in_a_shared_session_leaves_the_group_alone(autogroups: int | None) -> None:
    said, process_nice, group_nice = _lower_in_child(7, own_session=False)
    assert process_nice == min(19, os.nice(0) + 7)
    assert group_nice == autogroups, "the test's own session (its shell, its other children) keeps its priority"
    assert autogroup_nice() == autogroups
    assert "left alone" in said


def test_no_niceness_changes_nothing() -> None:
    said, process_nice, _ = _lower_in_child(0, own_session=True)
    assert process_nice == os.nice(0)
    assert said == "CPU priority unchanged"


@pytest.mark.parametrize(
    ("text", "nice"),
    [("/autogroup-822 nice 7\n", 7), ("/autogroup-3 nice -2\n", -2), ("", None), (None, None)],
)
def test_an_autogroup_reads_as_its_niceness_or_none(tmp_path: Path, text: str | None, nice: int | None) -> None:
    """An empty file is what the kernel prints for a process in the boot-time group (no session started since init):
    that is the root group, not an error."""
    (tmp_path / "42").mkdir()
    if text is not None:
        (tmp_path / "42" / "autogroup").write_text(text)
    assert autogroup_nice(42, proc=tmp_path) == nice
