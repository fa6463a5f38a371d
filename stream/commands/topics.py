"""`listings topics ensure | list`: the design's topics (a one-shot Job in production)."""

from __future__ import annotations

import argparse
import json
import sys

from stream import topics
from stream.config import Settings

HELP = "create the missing topics of the design (ensure) or print their specs (list)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["ensure", "list"])


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "list":
        specs = [{"name": t.name, "partitions": t.partitions, "config": t.config} for t in topics.specs(settings)]
        print(json.dumps(specs, indent=2))
        return 0
    from stream import logs, preflight

    logs.setup("WARNING", quiet=True)
    preflight.one_shot(settings, redis=False)
    try:
        created = topics.ensure(settings)
    except topics.TopicsRefused as exc:
        print(f"listings topics: {exc}", file=sys.stderr)
        return 2
    print(f"created {', '.join(created)}" if created else "every topic exists")
    differ = topics.differences(settings)
    for line in differ:
        print(f"listings topics: {line}", file=sys.stderr)
    return 1 if differ else 0
