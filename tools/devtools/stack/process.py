"""Start, find and stop the stack's own processes through pid files."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.retry import poll


class StackError(RuntimeError):
    """A part of the stack failed to start or become ready."""


def start_time(pid: int) -> int | None:
    """The process' start time (clock ticks after boot, /proc/PID/stat field 22), or None when there is no such
    process. With the pid it names one process: a recycled pid has another start time."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def ensure_ports_free(part: str, ports: Mapping[str, int]) -> None:
    """Refuse to start `part` on a port another process listens on: its readiness probe would talk to that one.
    `ports` maps each setting's name (e.g. `redis_port`) to its value."""
    for setting, port in ports.items():
        if not _port_free(port):
            raise StackError(
                f"{part}: port {port} on 127.0.0.1 is in use by another process (another stack, e.g. of another "
                f"LISTINGS_STATE_DIR?): stop it, or give this stack another port (LISTINGS_{setting.upper()})"
            )


def _port_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:`port` now (as servers do, with SO_REUSEADDR: a closed connection
    still in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


@dataclass(frozen=True)
class Managed:
    """One process the stack owns: its pid file, log file and a word its command line must contain. The pid file
    holds `PID START_TIME`: a process with that pid but another start time is not ours (the pid was recycled)."""

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    @classmethod
    def of(cls, name: str, state_dir: Path, log_dir: Path, marker: str) -> Managed:
        """The part `name` of a stack: its pid file under `state_dir/run`, its log under `log_dir`."""
        return cls(name, state_dir / "run" / f"{name}.pid", log_dir / f"{name}.log", marker=marker)

    @property
    def state_dir(self) -> Path:
        return self.pid_file.parent.parent

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed, its process left alone)."""
        try:
            fields = self.pid_file.read_text().split()
            pid, started = int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
        except (FileNotFoundError, IndexError, ValueError):
            return None
        if not self._is_ours(pid, started):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def _is_ours(self, pid: int, started: int | None) -> bool:
        """Alive, not a zombie, its command line carries our marker, and it is the very process we started: the
        same start time, or (a pid file from before start times were recorded) our state folder in its command
        line. A marker alone matched any process of that program, e.g. another stack's."""
        if not self._execed(pid):
            return False
        if started is not None:
            return start_time(pid) == started
        return str(self.state_dir) in _cmdline(pid)

    def _execed(self, pid: int) -> bool:
        """Alive, not a zombie, and running our program (its command line carries the marker)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return self.marker in _cmdline(pid) and not stat.rsplit(") ", 1)[1].startswith("Z")

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,  # outlives the CLI; `stack down` stops it
            )
        # between fork and exec the child still shows our own command line: wait for the exec
        try:
            poll(lambda: proc.poll() is not None or self._execed(proc.pid), 10, f"{self.name} to exec", interval=0.01)
        except TimeoutError:
            pass  # the pid file is written anyway; `pid()` checks the marker again
        self.pid_file.write_text(f"{proc.pid} {start_time(proc.pid) or 0}\n")
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`. Returns True if something was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            poll(lambda: self.pid() is None, timeout, f"{self.name} to stop", interval=0.2)
        except TimeoutError:
            self.kill()
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the part and its process group, no grace: for fault tests."""
        pid = self.pid()
        if pid is not None:
            _killpg(pid)
            poll(lambda: self.pid() is None, 60, f"{self.name} to die", interval=0.05)
            self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"


def _cmdline(pid: int) -> str:
    """The process' command line, arguments joined by spaces ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(parent: int) -> list[int]:
    """The pids of the running processes whose parent is `parent` (from /proc; empty where there is none)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def _killpg(pid: int) -> None:
    """SIGKILL the process and its helpers (its own session/group: we started it with a new session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(part: Managed, ready: Callable[[], bool], timeout: float) -> None:
    """Poll `ready` until true; fail naming the part and its log if it dies or times out."""

    def check() -> bool:
        if not part.running():
            raise StackError(f"{part.name} exited during start-up; see its log {part.log_file}:\n{part.log_tail()}")
        try:
            return bool(ready()) and part.running()
        except Exception:  # noqa: BLE001 - any failure of a probe means "not ready yet"
            return False

    try:
        poll(check, timeout, f"{part.name} to be ready")
    except TimeoutError:
        raise StackError(
            f"{part.name} not ready after {timeout:.0f}s; see its log {part.log_file}:\n{part.log_tail()}"
        ) from None
