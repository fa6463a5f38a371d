"""The stack's supervisor on real child processes: it restarts a child that crashes, not one that fails at start-up
or was stopped, forwards SIGTERM, and gives up after its restart budget."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.stack.process import children
from devtools.stack.supervise import RESTARTED, describe, exit_code

# a child that records each start, then crashes (SIGABRT) on its first `crashes` starts and otherwise runs until
# it is told to stop (SIGTERM: records it and exits 0)
CHILD = """
import os, signal, sys, time
starts, crashes, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with open(starts, "a") as f:
    f.write("start\\n")
n = len(open(starts).read().splitlines())
def stop(*_):
    with open(starts, "a") as f:
        f.write("stopped\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(wait)
if n <= crashes:
    os.abort()
while True:
    time.sleep(0.1)
"""


def supervise(tmp_path: Path, crashes: int, wait: float, *options: str) -> tuple[subprocess.Popen[str], Path]:
    starts = tmp_path / "starts"
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    cmd = [sys.executable, "-m", "devtools.stack.supervise", "--name", "fake", *options, "--"]
    proc = subprocess.Popen(
        [*cmd, sys.executable, str(child), str(starts), str(crashes), str(wait)],
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, starts


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_crashed_child_is_restarted_and_sigterm_reaches_it(tmp_path) -> None:
    proc, starts = supervise(tmp_path, 2, 0.3, "--min-uptime", "0.2", "--max-restarts", "5")
    try:
        # two crashes, backoff 2 s then 4 s, then a third start that stays up
        wait_for(lambda: lines(starts) == ["start"] * 3, 30)
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
    assert lines(starts) == ["start", "start", "start", "stopped"]
    log = proc.stderr.read() if proc.stderr else ""
    restarts = [line for line in log.splitlines() if RESTARTED in line]
    assert len(restarts) == 2 and all("signal 6 (SIGABRT)" in line for line in restarts), log
    assert "restart 2 of at most 5" in restarts[1]


def test_a_child_dying_at_start_up_is_not_restarted(tmp_path) -> None:
    proc, starts = supervise(tmp_path, 5, 0.0, "--min-uptime", "30")
    assert proc.wait(timeout=30) == 128 + signal.SIGABRT
    assert lines(starts) == ["start"]
    assert "a start-up failure, not restarted" in (proc.stderr.read() if proc.stderr else "")


def test_restarts_stop_at_the_budget(tmp_path) -> None:
    proc, starts = supervise(tmp_path, 10, 0.3, "--min-uptime", "0.2", "--max-restarts", "1")
    assert proc.wait(timeout=30) == 128 + signal.SIGABRT
    assert lines(starts) == ["start", "start"]
    assert "1 restarts used, gave up" in (proc.stderr.read() if proc.stderr else "")


def test_a_child_stopped_by_someone_else_stays_stopped(tmp_path) -> None:
    proc, starts = supervise(tmp_path, 0, 0.0, "--min-uptime", "0")
    try:
        wait_for(lambda: lines(starts) == ["start"], 15)
        time.sleep(0.3)  # the child's SIGTERM handler is installed
        (child,) = children(proc.pid)
        subprocess.run(["kill", "-TERM", str(child)], check=True)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
    assert lines(starts) == ["start", "stopped"]


@pytest.mark.parametrize(("code", "words", "shell"), [(-6, "signal 6 (SIGABRT)", 134), (3, "exit status 3", 3)])
def test_describe_and_exit_code(code: int, words: str, shell: int) -> None:
    assert describe(code) == words and exit_code(code) == shell
