"""`listings stack up | down | status [part ...]`: the embedded local stack (Kafka KRaft, Redis, Triton)."""

from __future__ import annotations

import argparse
import json
import sys

from devtools import config
from devtools.stack import control
from devtools.stack.process import StackError
from stream.config import Settings

HELP = "start, stop or inspect the local Kafka + Redis + Triton stack"


def _part(name: str) -> str:
    # a type, not `choices`: with `nargs="*"` Python 3.11's argparse checks an empty list against the choices too
    if name not in control.PARTS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a part (choose from {', '.join(control.PARTS)})")
    return name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "parts", nargs="*", type=_part, metavar="PART", help=f"only these parts: {', '.join(control.PARTS)}"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    s = config.load()
    only = args.parts or None
    try:
        if args.action == "up":
            control.up(s, only)
        elif args.action == "down":
            control.down(s, only)
        else:
            st = control.status(s)
            print(json.dumps(st, indent=2))
            return 0 if all(v["ready"] for k, v in st.items() if not only or k in only) else 1
    except StackError as exc:
        print(f"stack {args.action} failed: {exc}", file=sys.stderr)
        return 1
    return 0
