"""Export a trained artifact as a new numbered version of the Triton model."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from training.artifact import OPTIONAL, REQUIRED
from training.config import MODEL_NAME, SERVING_DIR


def versions(repo: Path, name: str = MODEL_NAME) -> list[int]:
    model_dir = Path(repo) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def gpu_config_text(cpu_text: str) -> str:
    """The GPU variant of config.pbtxt: same contract, instances on the GPU (model.py then runs fp16)."""
    if "kind: KIND_CPU" not in cpu_text:
        raise ValueError("config.pbtxt has no KIND_CPU instance group to turn into KIND_GPU")
    header = "# GPU variant (`listings train --gpu-config PATH` writes it), generated from config.pbtxt\n"
    return header + cpu_text.replace("KIND_CPU", "KIND_GPU")


def write_gpu_config(path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(gpu_config_text((SERVING_DIR / "config.pbtxt").read_text()))


def export(artifact: Path, repo: Path, name: str = MODEL_NAME) -> int:
    """Copy the artifact and the serving code into `<repo>/<name>/<n>/`, n = highest + 1."""
    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (model_dir / "config.pbtxt").exists():
        shutil.copy2(SERVING_DIR / "config.pbtxt", model_dir / "config.pbtxt")
    version = max(versions(repo, name), default=0) + 1
    tmp = model_dir / f".export-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for item in REQUIRED + OPTIONAL:
        src = Path(artifact) / item
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / item)
    shutil.copy2(SERVING_DIR / "model.py", tmp / "model.py")
    (tmp / "export.json").write_text(
        json.dumps({"artifact": Path(artifact).name, "version": version, "exported_at": time.time()}, indent=2)
    )
    tmp.rename(model_dir / str(version))
    return version
