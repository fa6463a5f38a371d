"""`listings bench --quick` end to end on the real test stack: every figure is measured and the plot exists.
No timing thresholds here: the speed targets live in the bench output (bench/results.json), not in tests."""

from __future__ import annotations

import json

import pytest

from stream import cli

pytestmark = pytest.mark.stack

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_quick(stack, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    rc = cli.main(["bench", "--quick", "--no-progress", "--workers", "1,2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    results = json.loads((out / "results.json").read_text())
    f = results["figures"]
    assert f["a_triton_raw"]["titles_per_s"] > 0
    assert f["b_pipeline"]["events_per_s"] > 0
    assert f["c_naive"]["events_per_s"] > 0
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        assert f["d_latency"][q] > 0
    assert f["d_latency"]["p50_ms"] <= f["d_latency"]["p95_ms"] <= f["d_latency"]["p99_ms"]
    lb = f["d_latency_with_backfill"]
    assert lb["p99_ms"] > 0 and lb["backfill_events"] == lb["backlog"] > 0
    assert set(f["e_workers"]) == {"1", "2"}
    assert all(run["events_per_s"] > 0 for run in f["e_workers"].values())
    assert results["ratios"]["b_over_a"] > 0 and results["ratios"]["b_over_c"] > 0
    assert results["machine"]["device"] == "CPU, no GPU"
    assert results["model"]["version"] not in ("", "?")
    assert results["config"]["max_batch"] > 0 and results["command"].startswith("listings bench")
    # the worker wrote every run's events with the model version Triton serves
    assert f["b_pipeline"]["model_versions"] == [str(results["model"]["version"])]

    png = out / "results.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "(b)/(a)" in printed and "(b)/(c)" in printed
