"""`listings bench --quick` end to end on the real test stack: every figure is measured and the plot exists.
No timing thresholds here: the speed targets live in the bench output (bench/results.json), not in tests."""

from __future__ import annotations

import json

import pytest

from devtools.bench.measure import MIN_CPU_SPAN_S
from devtools.stats import busy_share
from stream import cli

pytestmark = pytest.mark.stack

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_quick(stack, local, tmp_path, capsys) -> None:
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
    # (a) per engine, in the same run, with the Triton process memory; and the sweep
    assert set(f["a_engines"]) == {"torch", "onnx", "onnx-int8", "torch+cascade"}
    for run in f["a_engines"].values():
        assert run["titles_per_s"] > 0 and run["triton_rss_mib"] > 100
    assert f["a_engines"]["torch"]["vs_torch_fp32"] == 1.0
    assert [f["a_engines"][k]["cascade"] for k in ("torch", "onnx", "onnx-int8", "torch+cascade")] == [
        "off",
        "off",
        "off",
        "on",
    ]
    # the default: the version's engine, with its cascade when export chose one
    version_dir = local.model_repository / "listing_classifier" / str(results["model"]["version"])
    served = json.loads((version_dir / "classifier.json").read_text())
    margin = served["cascade"]["linear_margin"]
    assert f["a_triton_raw"]["engine"] == served["default_engine"] + (
        f"+cascade (margin {margin})" if margin is not None else ""
    )
    assert len(f["a_sweep"]) == 16 and all(p["titles_per_s"] > 0 and p["p99_ms"] > 0 for p in f["a_sweep"])
    # (d) where the time goes, and the budget / protection verdicts computed from the run's own figures
    stages = f["d_latency"]["breakdown"]["stages_ms"]
    assert {"kafka_wait", "batch_forming", "triton_queue", "triton_compute", "redis", "kafka_send"} <= set(stages)
    limit = results["budget"]["max_wait_ms"] + 2 * stages["triton_compute"]["p99"] + 100
    assert results["budget"]["limit_ms"] == pytest.approx(limit, abs=0.1)
    assert results["protection"]["ratio"] > 0 and "share_of_free_capacity" in results["protection"]
    # end-to-end ends at the Redis write, read from each result's update-stream entry (none timed otherwise)
    for run in (f["d_latency"], f["d_latency_with_backfill"]):
        assert run["latency_to"].startswith("Redis write") and run["timed_by_classified_at"] == 0
    assert results["protection"]["judged_round"] == 0 and results["protection"]["shares"] == [
        results["protection"]["share_of_free_capacity"]
    ]
    # --quick runs one (d)/(d') round; its full figures are the ones above, and the round is listed
    (only,) = f["d_rounds"]
    assert only["median_round"] and only["d"]["p99_ms"] == f["d_latency"]["p99_ms"]
    assert only["d2"]["p99_ms"] == lb["p99_ms"] and "latencies_ms" not in only["d"]
    assert results["protection"]["ratios"] == [only["ratio"]] and results["protection"]["rounds"] == 1
    assert results["budget"]["rounds_met"] == int(results["budget"]["met"])
    assert f["d_warmup"]["p99_ms"] > 0 and f["d_warmup"]["events"] == f["d_latency"]["events"]  # not judged
    # every latency run opens with a ramp at the same rate, measured apart; the figures above are after it
    for run in (f["d_latency"], lb):
        assert run["ramp_s"] == results["config"]["ramp_seconds"] > 0
        # round(rate x ramp) on the unrounded rate; the rate is recorded to 0.1/s (ci58: 571 against round(571.5))
        assert abs(run["ramp_events"] - run["target_rate"] * run["ramp_s"]) <= 0.5 + 0.05 * run["ramp_s"]
        assert run["ramp_p99_ms"] > 0
        assert len(run["latencies_ms"]) == run["events"]
    assert only["ramp_p99_alone_ms"] == f["d_latency"]["ramp_p99_ms"]
    # (b)'s CPU while it processed (start-up left out) prices the backfill share the VM's idle CPU in (d) allows
    busy = f["b_pipeline"]["processing_cpu"]
    # (a quick run's processing can be shorter than the CPU clock can time: then the whole run is its window)
    assert 0 < busy["busy_share"] <= 1 and busy["window"] in ("processing", "whole run")
    assert busy["span_s"] >= MIN_CPU_SPAN_S and busy["core_ms_per_event"] > 0, busy
    pr = results["protection"]
    assert pr["b_core_ms_per_event"] == busy["core_ms_per_event"]
    # the ceiling is (d)'s idle CPU at (b)'s cost per event, from the figures the run recorded beside it
    live_only = f["d_latency"]["cpu_by_process"]
    idle = max(0.0, 1 - busy_share(live_only) - live_only.get("stolen", 0.0))
    assert pr["live_only_idle_share"] == round(idle, 3)
    ceiling = idle * results["machine"]["cpu_count"] * 1000 / busy["core_ms_per_event"]
    assert pr["backfill_ceiling_per_s"] == round(ceiling, 1)
    # (the rates beside them are rounded to 0.1/s: a share may round the other way)
    assert pr["share_ceiling"] == pytest.approx(ceiling / pr["free_capacity_per_s"], abs=0.006)
    assert pr["share_of_ceiling"] == pytest.approx(pr["backfill_per_s_during_live"] / ceiling, abs=0.006)
    # who had the CPU while the events were in flight: the worker and Triton did work, and the backfill in (d')
    for key in ("b_pipeline", "d_latency", "d_latency_with_backfill"):
        cpu = f[key]["cpu_by_process"]
        assert cpu["worker"] > 0 and cpu["triton"] > 0 and 0 <= cpu["stolen"] <= 1, (key, cpu)
    assert f["d_latency_with_backfill"]["cpu_by_process"].get("backfill", 0) > 0
    # ... on the model's background copy, whose instances show up as their own role
    assert f["d_latency_with_backfill"]["cpu_by_process"].get("triton_background", 0) > 0
    assert results["config"]["backfill_model"] == "auto"
    # (d'') live alone, with a background load on the live model, and with it on the copy: all measured
    iso = f["d_isolation"]
    assert [r["mode"] for r in iso["runs"]] == ["alone", "same", "copy"]
    assert all(r["live_p99_ms"] > 0 for r in iso["runs"])
    assert iso["median"]["alone"]["background_titles_per_s"] == 0
    assert iso["median"]["same"]["background_titles_per_s"] > 0 and iso["median"]["copy"]["background_titles_per_s"] > 0
    assert iso["p99_copy_over_alone"] > 0 and iso["p99_same_over_alone"] > 0
    assert results["budget"]["largest_p99_stage"] in stages
    assert results["machine"]["device"] == "CPU, no GPU"
    assert results["model"]["version"] not in ("", "?")
    assert results["config"]["max_batch"] > 0 and results["command"].startswith("listings bench")
    # the worker wrote every run's events with the model version Triton serves
    assert f["b_pipeline"]["model_versions"] == [str(results["model"]["version"])]

    # what the runs wrote is gone once read: no bench topic, no bench item, no bench entry in the indexes
    from kafka import KafkaAdminClient

    from stream import connections

    admin = KafkaAdminClient(**connections.kafka(stack.kafka))
    try:
        left = [n for n in admin.list_topics() if n.startswith("t.bench-")]
    finally:
        admin.close()
    assert left == [] and f["b_pipeline"]["input_topic"].startswith("t.bench-")
    r = connections.redis_sync(stack.redis, decode_responses=True)
    try:
        assert list(r.scan_iter("listing:bench-*", count=1000)) == []
        indexed = [k for k in r.scan_iter("category:*") if any(m.startswith("bench-") for m in r.smembers(k))]
        assert indexed == [] and not any(m.startswith("bench-") for m in r.zrange("review:queue", 0, -1))
    finally:
        r.close()

    png = out / "results.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "(b)/(a)" in printed and "(b)/(c)" in printed
