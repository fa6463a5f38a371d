"""`listings`: the one command line of the project.

The runtime's own commands are listed here; other installed distributions add theirs through the
`listings.commands` entry-point group (the developer tools add `train`, `stack`, `demo` and `bench`).
A command module has `HELP`, `add_arguments(parser)` and `run(args, settings) -> int`, and keeps heavy
imports inside `run`, so `listings --help` stays fast.

Exit status: the command's own; 2 for a bad `LISTINGS_*` value or option; 1 when a dependency cannot be
reached (one line naming it and what to do)."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from stream import config, errors

RUNTIME_COMMANDS = {
    "worker": "stream.worker",
    "backfill": "stream.backfill",
    "produce": "stream.produce",
    "topics": "stream.commands.topics",
    "models": "stream.commands.models",
    "promote": "stream.commands.promote",
    "shadow": "stream.shadow",
    "review-ui": "stream.review.app",
    "feedback": "stream.commands.feedback",
}


# argparse types of the commands' options: a bad value is a one-line usage error with exit status 2


def _number(text: str, kind: type[int] | type[float], lo: float, hi: float, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def port(text: str) -> int:
    """A TCP port to listen on: 1..65535."""
    return _number(text, int, 1, 65535, "a port (1..65535)")


def port_or_off(text: str) -> int:
    """A TCP port, or 0: no listener."""
    return _number(text, int, 0, 65535, "a port (1..65535, or 0 for none)")


def count(text: str) -> int:
    """A whole number, 0 or more."""
    return _number(text, int, 0, math.inf, "a whole number, 0 or more")


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    return _number(text, float, 0, math.inf, "a number of seconds, 0 or more")


def events_per_s(zero: str) -> Callable[[str], float]:
    """The type of a `--rate` option: events/s, a finite number >= 0 (`nan` passed a `< 0` check); `zero` says what
    0 means for that command."""

    def rate(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give events/s, a finite number >= 0 (0: {zero})")
        return value

    return rate


def commands() -> dict[str, ModuleType]:
    found = {name: importlib.import_module(module) for name, module in RUNTIME_COMMANDS.items()}
    for ep in entry_points(group="listings.commands"):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="listings", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands().items():
        sp = sub.add_parser(name, help=getattr(module, "HELP", None), description=getattr(module, "HELP", None))
        module.add_arguments(sp)
        sp.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load()
    except config.SettingsError as exc:
        print(f"listings {args.command}: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args, settings) or 0)
    except config.SettingsError as exc:
        print(f"listings {args.command}: bad setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`listings … | head`): not an error of ours; stdout is pointed at /dev/null so the
        # interpreter's own flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        down = errors.classify(exc, settings)
        if down is None:
            raise
        print(f"listings {args.command}: {down}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
