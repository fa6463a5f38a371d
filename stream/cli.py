"""`listings`: the one command line of the project."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from stream import settings as settings_mod
from stream.stack.process import StackError


def _stack(args: argparse.Namespace) -> int:
    from stream.stack import control

    s = settings_mod.load()
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


def _demo(args: argparse.Namespace) -> int:
    from stream import demo

    try:
        return demo.run(settings_mod.load(), args)
    except StackError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


# subcommands living in their own modules: each exposes `add_arguments(parser)` and `run(args) -> int`,
# and keeps heavy imports (torch, faust) inside `run` so `listings --help` stays fast
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("train", "stream.model.train", "fine-tune the classifier and export a new Triton model version"),
    ("worker", "stream.worker", "run the streaming worker (Faust) on listings.new"),
    ("produce", "stream.produce", "send listings from a CSV/JSONL file to listings.new"),
    ("backfill", "stream.backfill", "replay a topic range through the pipeline under its own group"),
    ("bench", "stream.bench", "measure Triton, pipeline and baseline throughput and latency"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="listings", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or inspect the local Kafka + Redis + Triton stack")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("parts", nargs="*", help="only these parts")
    stack.set_defaults(func=_stack)

    demo = sub.add_parser("demo", help="the main job on the local stack (what `make demo` runs)")
    from stream import demo as demo_mod

    demo_mod.add_arguments(demo)
    demo.set_defaults(func=_demo)

    for name, module_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # not built yet
            raise
        sp = sub.add_parser(name, help=help_text)
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
