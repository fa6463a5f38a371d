"""Keep one server process up: restart it when it dies on its own, never when it was told to stop.

`python -m devtools.stack.supervise --name triton -- tritonserver …` runs the command as its child (same process
group, same log) and forwards SIGTERM/SIGINT to it. When the child dies on its own — a crash such as Triton 2.51's
python backend aborting on `boost::interprocess::lock_exception` (triton-inference-server/server#8882): any signal
but SIGTERM/SIGINT, or a non-zero exit — it starts it again after a short backoff and writes one line about it to
the log. A child that exits 0 or on SIGTERM/SIGINT was stopped by someone and stays stopped; one that dies sooner
than `--min-uptime` seconds after its start failed to start, and the supervisor exits with its status instead of
looping. SIGKILL of the process group (the fault tests' `kill`) takes both down: nothing restarts it.
Standard library only, so it costs nothing next to the server it watches.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

RESTARTED = "supervise: restarting"  # the log line's start, for whoever counts restarts


def describe(returncode: int) -> str:
    """A child's end in words: `signal 6 (SIGABRT)` or `exit status 1`."""
    if returncode < 0:
        try:
            return f"signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def exit_code(returncode: int) -> int:
    """The shell's convention for a child that died on a signal (128 + n), else its own status."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    def __init__(self, name: str, command: Sequence[str], min_uptime: float, max_restarts: int) -> None:
        self.name = name
        self.command = list(command)
        self.min_uptime = min_uptime
        self.max_restarts = max_restarts
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _say(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        restarts = 0
        while True:
            started = time.monotonic()
            self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
            if self.stopping:  # told to stop while the child was being started
                self.child.terminate()
            returncode = self.child.wait()
            uptime = time.monotonic() - started
            if self.stopping:
                return exit_code(returncode)
            if returncode == 0 or -returncode in (signal.SIGTERM, signal.SIGINT):
                self._say(f"supervise: {self.name} was stopped ({describe(returncode)}); not restarted")
                return exit_code(returncode)
            if uptime < self.min_uptime:
                self._say(
                    f"supervise: {self.name} ended with {describe(returncode)} {uptime:.1f}s after its start "
                    f"(less than {self.min_uptime:.0f}s: a start-up failure, not restarted)"
                )
                return exit_code(returncode) or 1
            if restarts >= self.max_restarts:
                self._say(
                    f"supervise: {self.name} ended with {describe(returncode)}; {restarts} restarts used, gave up"
                )
                return exit_code(returncode) or 1
            restarts += 1
            backoff = min(2.0**restarts, 30.0)
            self._say(
                f"{RESTARTED} {self.name} in {backoff:.0f}s: it ended with {describe(returncode)} after "
                f"{uptime:.0f}s (restart {restarts} of at most {self.max_restarts})"
            )
            deadline = time.monotonic() + backoff
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.stopping:
                return exit_code(returncode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack.supervise", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the part's name, for the log lines")
    parser.add_argument("--min-uptime", type=float, default=30.0, help="seconds a child must live to be restarted")
    parser.add_argument("--max-restarts", type=int, default=10, help="restarts before giving up")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to keep up")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    return Supervisor(args.name, command, args.min_uptime, args.max_restarts).run()


if __name__ == "__main__":
    sys.exit(main())
