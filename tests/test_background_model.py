"""The backfill's background copy of the classifier (training/background.py): generated config, mirrored versions."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from training import background
from training.config import SERVING_DIR

LIVE = "listing_classifier"


def _repo(tmp_path: Path, versions: list[str]) -> Path:
    live = tmp_path / LIVE
    live.mkdir(parents=True)
    (live / "config.pbtxt").write_text((SERVING_DIR / "config.pbtxt").read_text())
    for v in versions:
        (live / v).mkdir()
        (live / v / "model.py").write_text(f"# version {v}\n")
    return tmp_path


def test_the_config_is_the_live_one_renamed_with_a_nice_parameter() -> None:
    live = (SERVING_DIR / "config.pbtxt").read_text()
    text = background.config_text(live, LIVE)
    assert re.search(r'^name: "listing_classifier_background"$', text, re.M)
    assert 'key: "nice", value: { string_value: "19" }' in text
    # every other line (batching, priorities, instances, engine, cascade) is the live model's, in order
    kept = [line for line in text.splitlines() if not line.startswith(("name:", 'parameters { key: "nice"'))]
    body = [line for line in kept if line not in background.HEADER.format(live=LIVE, nice=19).splitlines()]
    assert body == [line for line in live.splitlines() if not line.startswith("name:")]
    # generating it again from its own text replaces the parameter instead of adding a second one
    again = background.config_text(text.replace('name: "listing_classifier_background"', f'name: "{LIVE}"'), LIVE)
    assert again.count('key: "nice"') == 1
    with pytest.raises(ValueError, match="no top-level `name:`"):
        background.config_text("backend: 'python'\n", LIVE)


def test_mirror_links_every_live_version_and_follows_removals(tmp_path: Path) -> None:
    repo = _repo(tmp_path, ["2", "3"])
    bg = background.mirror(repo, LIVE)
    assert bg == repo / "listing_classifier_background"
    assert sorted(p.name for p in bg.iterdir() if p.name.isdigit()) == ["2", "3"]
    for v in ("2", "3"):
        assert (bg / v).is_symlink() and os.readlink(bg / v) == f"../{LIVE}/{v}"  # relative: the repo can move
        assert (bg / v / "model.py").read_text() == f"# version {v}\n"
    assert 'name: "listing_classifier_background"' in (bg / "config.pbtxt").read_text()
    # a new version appears, an old one goes: the copy follows; unchanged files are left alone
    stamp = (bg / "config.pbtxt").stat().st_mtime_ns
    (repo / LIVE / "4").mkdir()
    shutil.rmtree(repo / LIVE / "2")
    background.mirror(repo, LIVE)
    assert sorted(p.name for p in bg.iterdir() if p.name.isdigit()) == ["3", "4"]
    assert (bg / "config.pbtxt").stat().st_mtime_ns == stamp
    # a changed live config is copied again
    live_cfg = repo / LIVE / "config.pbtxt"
    live_cfg.write_text(live_cfg.read_text().replace('string_value: "auto"', 'string_value: "onnx"'))
    background.mirror(repo, LIVE)
    assert 'string_value: "onnx"' in (bg / "config.pbtxt").read_text()


def test_mirror_without_a_live_config_does_nothing_and_never_replaces_a_real_folder(tmp_path: Path) -> None:
    assert background.mirror(tmp_path, LIVE) is None
    assert not (tmp_path / "listing_classifier_background").exists()
    repo = _repo(tmp_path, ["2"])
    (repo / "listing_classifier_background" / "2").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="must be symlinks"):
        background.mirror(repo, LIVE)
