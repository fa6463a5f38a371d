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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("parts", nargs="*", choices=[[], *control.PARTS], help="only these parts")


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
