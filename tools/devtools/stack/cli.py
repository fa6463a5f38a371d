"""`listings stack up | down | status [part ...]` and `listings stack reload`: the embedded local stack (Kafka KRaft,
Redis, Triton); `reload` loads the model repository's versions as they are now into the running Triton."""

from __future__ import annotations

import argparse
import json
import sys

from devtools import config
from devtools.stack import control, triton
from devtools.stack.process import StackError
from stream.config import Settings

HELP = "start, stop or inspect the local Kafka + Redis + Triton stack"


def _part(name: str) -> str:
    # a type, not `choices`: with `nargs="*"` Python 3.11's argparse checks an empty list against the choices too
    if name not in control.PARTS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a part (choose from {', '.join(control.PARTS)})")
    return name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "reload"],
        help="reload: load the model repository's current versions into the running Triton (after `listings train`)",
    )
    parser.add_argument(
        "parts", nargs="*", type=_part, metavar="PART", help=f"only these parts: {', '.join(control.PARTS)}"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    s = config.load()
    only = args.parts or None
    try:
        if args.action == "reload":
            if only and only != ["triton"]:
                print("stack reload: only Triton has models to reload", file=sys.stderr)
                return 2
            print(triton.reload(s, settings))
        elif args.action == "up":
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
