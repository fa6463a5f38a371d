"""`listings promote N | --rollback`: make a version live for every running worker, without a restart."""

from __future__ import annotations

import argparse
import sys

from stream import models
from stream.config import Settings

HELP = "make a model version live for every worker (or --rollback to the previous one)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("version", nargs="?", help="the version to make live (Triton must serve it)")
    what.add_argument("--rollback", action="store_true", help="return to the version live before the last promotion")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from stream import preflight

    preflight.one_shot(settings, kafka=False)
    model = settings.triton.model_name
    try:
        live = models.promote(settings, args.version, rollback=args.rollback)
    except models.UnknownVersion as exc:
        print(f"listings promote: {exc}", file=sys.stderr)
        return 2
    if not args.rollback and live.version == live.replaced:
        print(f"{model} v{live.version} is already live: nothing changed")
    elif live.replaced:
        print(f"{model} v{live.version} is live (previous: v{live.replaced})")
    else:
        print(f"{model} v{live.version} is live")
    return 0
