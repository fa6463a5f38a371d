"""The GPU side without a GPU: the engine a KIND_GPU instance picks (pure logic of model.py, loaded with a
stand-in for Triton's `triton_python_backend_utils`, which exists only inside Triton), a KIND_GPU instance
refusing an ONNX session that this machine's real ONNX Runtime runs on the CPU, and the GPU check's helpers.
The GPU figures themselves come from `scripts/gpu_check.sh` on a lent GPU."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from devtools.bench import gpu
from training.config import SERVING_DIR


@pytest.fixture(scope="module")
def model_py() -> ModuleType:
    return gpu.load_model_py(SERVING_DIR / "model.py", "model_py_under_test")


def test_gpu_instance_runs_onnx_on_cuda_only_when_onnxruntime_has_cuda(model_py: ModuleType) -> None:
    cuda = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert model_py.instance_engine("auto", True, cuda) == "onnx"
    # a CPU-only ONNX Runtime would score a GPU instance's batches on the CPU: torch fp16 instead
    assert model_py.instance_engine("auto", True, ["CPUExecutionProvider"]) == "torch"
    assert model_py.instance_engine("auto", True, []) == "torch"


def test_cpu_instance_and_explicit_engines_are_left_as_configured(model_py: ModuleType) -> None:
    assert model_py.instance_engine("auto", False, []) == "auto"  # the version's default engine
    for engine in ("torch", "onnx", "onnx-int8"):
        assert model_py.instance_engine(engine, True, ["CPUExecutionProvider"]) == engine
        assert model_py.instance_engine(engine, False, []) == engine


def test_titles_are_distinct_and_in_file_order(tmp_path: Path) -> None:
    f = tmp_path / "flipkart_20k.csv"
    f.write_text("product_name,l3,brand\nA phone,x,\n,x,\nA phone,x,\nA shoe,y,\nA bag,z,\n", encoding="utf-8")
    assert gpu.titles_from(tmp_path, 2) == ["A phone", "A shoe"]
    assert gpu.titles_from(tmp_path, 10) == ["A phone", "A shoe", "A bag"]


def test_plot_draws_the_figures_of_a_results_file(tmp_path: Path) -> None:
    results = {
        "when": "2026-12-04T18:00:00Z",
        "device": {"gpu": "NVIDIA H200", "torch": "2.11"},
        "encoder": [
            {"precision": p, "tokens": 40, "rows": r, "rows_per_s": 1000.0 * r}
            for p in ("fp32", "fp16")
            for r in (64, 256)
        ],
        "serve": [
            {"engine": "torch", "cascade": False, "request_rows": r, "titles_per_s": 10.0 * r, "providers": None}
            for r in (64, 256)
        ]
        + [{"engine": "onnx", "cascade": False, "error": "no CUDA provider"}],
    }
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(results))
    assert gpu.main(["plot", str(path)]) == 0
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_serve_measures_torch_default_threads_before_the_instance_setting() -> None:
    # torch's thread count is per process and cannot return to its default once set
    n = gpu.instance_threads()
    assert n == 1  # config.pbtxt's cpu_threads, which a GPU instance now gives its engine too
    cpu_only = gpu.serve_configs("cuda", ["CPUExecutionProvider"])
    torch_threads = [t for e, _, t in cpu_only if e == "torch"]
    assert torch_threads == [0, 0, n, n]
    # without ONNX Runtime's CUDA provider the ONNX engines are a CPU reference on every core
    assert {t for e, _, t in cpu_only if e.startswith("onnx")} == {0}
    with_cuda = gpu.serve_configs("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [t for e, _, t in with_cuda if e == "onnx"] == [n, n]
    assert [t for e, _, t in with_cuda if e == "onnx-int8"] == [0, 0]  # int8 runs on the CPU provider anyway


def test_a_gpu_instance_refuses_onnx_that_onnx_runtime_would_run_on_the_cpu(stack_env: dict[str, str]) -> None:
    # the real ONNX Runtime of this (GPU-less) machine, asked for its CUDA provider, falls back to the CPU with only
    # a warning; a KIND_GPU instance must not load that way. The quick model's version folder, as exported.
    folder = Path(stack_env["LISTINGS_MODEL_REPOSITORY"]) / "listing_classifier" / "1"
    assert (folder / "model.onnx").exists()
    model_py = gpu.load_model_py(folder / "model.py", "exported_model_py")
    config = {"parameters": {"engine": {"string_value": "onnx"}, "cpu_threads": {"string_value": "1"}}}
    args = {"model_config": json.dumps(config), "model_instance_kind": "GPU", "model_instance_device_id": "0"}
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
        model_py.TritonPythonModel().initialize(args)
    # the same folder on a CPU instance loads
    cpu = model_py.TritonPythonModel()
    cpu.initialize(args | {"model_instance_kind": "CPU"})
    assert cpu.model.engine_name == "onnx" and cpu.model.engine.providers == ["CPUExecutionProvider"]
