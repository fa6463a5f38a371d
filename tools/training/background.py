"""The classifier's background copy: `<model>_background`, the model a backfill or a shadow run sends to.

It serves the same versions as the live model (each of its version folders is a relative symlink to the live
model's) from its own instances, whose processes run at CPU niceness 19 (the `nice` parameter of its config,
applied by model.py). So a backfill batch never holds an instance a live batch is waiting for (with one model,
Triton's priority levels reorder the queue but cannot stop a batch that is already executing), and when both
need the CPU, the kernel runs the live instances first.

Its folder is generated, never edited: `config.pbtxt` is the live model's with another name and the `nice`
parameter. `listings train` (export), `listings stack up` and a reload of the live model call `mirror()`, so the
copy follows every version the live model gains or loses. A repository without it (a production one that did not
upload it) still works: the backfill sends to the live model at the low priority instead (see
stream/classify/triton_client.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SUFFIX = "_background"
NICE = 19
HEADER = (
    "# GENERATED from ../{live}/config.pbtxt by training/background.py (`listings train`, `listings stack up`):\n"
    "# do not edit. The live model's copy for backfill and shadow requests: the same versions (symlinks), its own\n"
    "# instances, their processes at CPU niceness {nice} (the `nice` parameter below), so live batches never wait\n"
    "# for a backfill batch to finish and win the CPU when both want it.\n"
)


def name_of(model: str) -> str:
    return f"{model}{SUFFIX}"


def config_text(live_text: str, live_name: str, nice: int = NICE) -> str:
    """The background config: the live one renamed, with a `nice` parameter (any earlier one replaced)."""
    renamed, n = re.subn(r'^name:\s*"[^"]*"', f'name: "{name_of(live_name)}"', live_text, count=1, flags=re.M)
    if n != 1:
        raise ValueError(f"the config of {live_name} has no top-level `name:` line to rename")
    kept = [line for line in renamed.splitlines() if not re.match(r'\s*parameters\s*\{\s*key:\s*"nice"', line)]
    param = f'parameters {{ key: "nice", value: {{ string_value: "{nice}" }} }}'
    return HEADER.format(live=live_name, nice=nice) + "\n".join([*kept, param]) + "\n"


def _versions(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.name.isdigit() and (p.is_dir() or p.is_symlink())}


def mirror(repo: Path, model: str) -> Path | None:
    """Create or bring up to date `<repo>/<model>_background`: its config from the live one, one symlink per live
    version, none for a version the live model no longer has. Returns the folder, or None when the live model
    has no config to copy."""
    live = Path(repo) / model
    if not (live / "config.pbtxt").is_file():
        return None
    bg = Path(repo) / name_of(model)
    bg.mkdir(exist_ok=True)
    text = config_text((live / "config.pbtxt").read_text(), model)
    cfg = bg / "config.pbtxt"
    if not cfg.is_file() or cfg.read_text() != text:
        tmp = bg / ".config.pbtxt.tmp"
        tmp.write_text(text)
        tmp.replace(cfg)
    wanted = {v for v in _versions(live) if (live / v).is_dir() and not (live / v).is_symlink()}
    for v in _versions(bg) - wanted:
        link = bg / v
        if link.is_symlink():
            link.unlink()
    for v in wanted:
        link = bg / v
        target = Path("..") / model / v
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise FileExistsError(f"{link} is a real folder: the background model's versions must be symlinks")
        link.symlink_to(target, target_is_directory=True)
    return bg
