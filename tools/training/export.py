"""Export a trained artifact as a new numbered version of the Triton model."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from training import background
from training.artifact import OPTIONAL, REQUIRED
from training.config import MODEL_NAME, SERVING_DIR


def versions(repo: Path, name: str = MODEL_NAME) -> list[int]:
    from stream.models import repository_versions

    return [int(v) for v in repository_versions(repo, name)]


GPU_INSTANCES = "\n".join(
    [
        "# two instances on each GPU: the encoder runs its length buckets (up to 256 rows) on the device (the ONNX",
        "# graph on CUDA with engine auto and onnxruntime-gpu, else torch in fp16), while the tokenizer, the linear",
        "# part and the results run on the CPU: on an H200 the GPU worked 33 ms of a 353 ms 1,024-title call",
        "# (bench/gpu/), so a second instance (its own process) works while the first is on the CPU. cpu_threads",
        "# below is each instance's CPU threads (torch's default, one per core, made a 64-title call 5.6x slower",
        "# there). More instances while `nvidia-smi` shows the GPU idle and cores are free.",
        "instance_group [ { count: 2, kind: KIND_GPU } ]",
    ]
)


def gpu_config_text(cpu_text: str) -> str:
    """The GPU variant of config.pbtxt: same contract and batching, one instance on each GPU instead of the CPU
    instance group and the comment that explains it."""
    lines = cpu_text.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("instance_group") and "KIND_CPU" in line]
    if len(at) != 1:
        raise ValueError("config.pbtxt needs exactly one KIND_CPU instance_group line to turn into KIND_GPU")
    start = at[0]
    while start > 0 and lines[start - 1].startswith("#"):  # the CPU layout's comment goes with it
        start -= 1
    header = "# GPU variant (`listings train --gpu-config PATH` writes it), generated from config.pbtxt"
    out = [header, *lines[:start], GPU_INSTANCES, *lines[at[0] + 1 :]]
    return "\n".join(out) + "\n"


def write_gpu_config(path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(gpu_config_text((SERVING_DIR / "config.pbtxt").read_text()))


def refresh_glue(repo: Path, name: str = MODEL_NAME) -> list[int]:
    """Give every version of `name` in `repo` the current Triton glue (`model.py`, copied at export; it reads
    requests and writes responses, and changes no figure: the scoring code, `classifier.py`, stays the version's).
    A version exported before a fix to the glue (per-request errors, input checks) would otherwise keep the old
    behaviour for as long as it is served. Returns the versions whose copy was replaced."""
    source = (SERVING_DIR / "model.py").read_bytes()
    refreshed = []
    for version in versions(repo, name):
        target = Path(repo) / name / str(version) / "model.py"
        if target.is_file() and target.read_bytes() == source:
            continue
        tmp = target.with_name(".model.py.refresh")
        tmp.write_bytes(source)
        tmp.replace(target)  # atomic: a Triton loading the version meanwhile reads one whole file
        refreshed.append(version)
    return refreshed


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
    background.mirror(repo, name)  # the backfill's copy serves the new version too
    return version
