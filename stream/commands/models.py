"""`listings models`: the versions Triton serves, which one is live, and each one's training metrics."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stream import connections, models
from stream.config import Settings

HELP = "list the model versions Triton serves, the live one, and their training metrics"
NOT_LOADED = "NOT_LOADED"  # on disk (--repository), not loaded by Triton (or unloaded by it)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ["LISTINGS_MODEL_REPOSITORY"]) if os.environ.get("LISTINGS_MODEL_REPOSITORY") else None,
        help="the model repository folder, to show each version's training metrics (default LISTINGS_MODEL_REPOSITORY)",
    )
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from stream import preflight

    if args.repository is not None and not args.repository.is_dir():
        print(f"listings models: --repository {args.repository} is not a folder", file=sys.stderr)
        return 2
    preflight.one_shot(settings, kafka=False)
    served = models.served_versions(settings)
    r = connections.redis_sync(settings.redis)
    try:
        live = models.read_live(r, settings.triton.model_name)
    finally:
        r.close()
    effective = live.version or models.newest_ready(served)
    rows = []
    disk = models.repository_versions(args.repository, settings.triton.model_name) if args.repository else []
    on_disk = set(disk)
    for version, state in served.items():
        metrics = (
            models.training_metrics(args.repository, settings.triton.model_name, version) if args.repository else None
        )
        if args.repository and version in on_disk and state == "UNAVAILABLE":
            state = NOT_LOADED  # Triton unloaded it (the version policy keeps the newest two); it is still on disk
        row = {"version": version, "state": state, "live": version == effective, "metrics": metrics}
        if args.repository:
            row["on_disk"] = version in on_disk
        rows.append(row)
    if args.repository:
        # versions on disk that Triton has not loaded (config.pbtxt's version_policy keeps the newest two): the ones
        # a rollback further back would need loaded first
        for version in disk:
            if version not in served:
                metrics = models.training_metrics(args.repository, settings.triton.model_name, version)
                rows.append(
                    {"version": version, "state": NOT_LOADED, "live": False, "metrics": metrics, "on_disk": True}
                )
        rows.sort(key=lambda row: int(row["version"]) if row["version"].isdigit() else 0)
    doc = {
        "model": settings.triton.model_name,
        "live": effective,
        "recorded": bool(live.version),
        # False: the live record names a version Triton does not serve (unloaded as newer ones were exported, or
        # removed); workers hold their events, retrying, until it is loaded or a served version is promoted
        "live_served": served.get(effective) == "READY",
        "promoted_at": live.promoted_at,
        "by": live.by,
        "history": live.history,
        "versions": rows,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    how = f"promoted {live.promoted_at} by {live.by}" if live.version else "no promotion recorded: the newest served"
    print(f"{settings.triton.model_name}: live version {effective or '-'} ({how})")
    if effective and not doc["live_served"]:
        print(
            f"  ! v{effective} is not served by Triton ({served.get(effective, 'not loaded')}): workers hold their "
            "events until it is loaded or a served version is promoted (listings promote N)"
        )
    for row in rows:
        m = row["metrics"] or {}
        ours, base = m.get("model") or {}, m.get("baseline") or {}
        figures = (
            f"leaf acc {ours.get('accuracy_leaf')} (baseline {base.get('accuracy_leaf')}), "
            f"tag micro-F1 {ours.get('tag_micro_f1')}, engine {m.get('engine')}"
            if m
            else "not on disk (removed from the repository)"
            if args.repository and not row.get("on_disk")
            else "no metrics.json in the version folder"
            if args.repository
            else "metrics: pass --repository to show them"
        )
        print(f"  {'*' if row['live'] else ' '} v{row['version']:<4} {row['state']:<12} {figures}")
    if any(row["state"] == NOT_LOADED for row in rows):
        print("  NOT_LOADED: on disk, not loaded by Triton (version_policy); load a version before promoting it")
    return 0
