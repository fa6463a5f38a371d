"""The figures of `listings bench` as a PNG (throughputs, worker scaling, latency) and a text table."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, how) rows of the summary table."""
    f = results["figures"]
    lat = f["d_latency"]
    out = [
        ("(a) Triton raw", f"{f['a_triton_raw']['titles_per_s']:.1f} titles/s", "async gRPC, batch x in-flight"),
        ("(b) pipeline, 1 worker", f"{f['b_pipeline']['events_per_s']:.1f} events/s", "Kafka -> worker -> Redis"),
        ("(c) naive, 1 req/event", f"{f['c_naive']['events_per_s']:.1f} events/s", "batch 1, in-flight 1"),
        (
            "(d) latency at ~50% of (b)",
            f"p50 {lat['p50_ms']:.0f} / p95 {lat['p95_ms']:.0f} / p99 {lat['p99_ms']:.0f} ms",
            f"{lat['target_rate']:.0f} events/s, {lat['events']} events",
        ),
    ]
    if "d_latency_with_backfill" in f:
        lb = f["d_latency_with_backfill"]
        out.append(
            (
                "(d') same, backfill running",
                f"p50 {lb['p50_ms']:.0f} / p95 {lb['p95_ms']:.0f} / p99 {lb['p99_ms']:.0f} ms",
                f"backfill of {lb.get('backlog', 0)} at priority 2 alongside",
            )
        )
    for k, run in sorted(f["e_workers"].items(), key=lambda kv: int(kv[0])):
        out.append((f"(e) {k} worker(s)", f"{run['events_per_s']:.1f} events/s", f"{run['partitions']} partitions"))
    r = results["ratios"]
    out.append(("(b)/(a)", f"{r['b_over_a']:.2f}", "pipeline vs raw model"))
    out.append(("(b)/(c)", f"{r['b_over_c']:.2f}", "micro-batching vs one request per event"))
    return out


def table(results: dict[str, Any]) -> str:
    data = rows(results)
    w0 = max(len(a) for a, _, _ in data)
    w1 = max(len(b) for _, b, _ in data)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in data)


def markdown_table(results: dict[str, Any]) -> str:
    lines = ["| figure | measured | how |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows(results)]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = results["figures"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1.3, 1, 1.2]})

    labels = ["(a) Triton raw\n(titles/s)", "(b) pipeline\n1 worker", "(c) naive\n1 req/event"]
    values = [f["a_triton_raw"]["titles_per_s"], f["b_pipeline"]["events_per_s"], f["c_naive"]["events_per_s"]]
    bars = ax1.bar(labels, values, color=["#4c72b0", "#55a868", "#c44e52"])
    ax1.bar_label(bars, fmt="%.1f")
    ax1.set_ylabel("per second")
    r = results["ratios"]
    ax1.set_title(f"Throughput  (b)/(a) = {r['b_over_a']:.2f},  (b)/(c) = {r['b_over_c']:.1f}")

    ws = sorted(f["e_workers"], key=int)
    wv = [f["e_workers"][k]["events_per_s"] for k in ws]
    bars = ax2.bar([f"{k}" for k in ws], wv, color="#8172b2")
    ax2.bar_label(bars, fmt="%.1f")
    ax2.set_xlabel("worker processes (one group)")
    ax2.set_ylabel("events/s")
    ax2.set_title("(e) Scale-out over the input partitions")

    lat = f["d_latency"]
    curves = [("live only", lat, "#dd8452")]
    if "d_latency_with_backfill" in f:
        curves.append(("with a backfill running", f["d_latency_with_backfill"], "#937860"))
    for name, run, color in curves:
        samples = sorted(run["latencies_ms"])
        if samples:
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            ax3.plot(samples, ys, color=color, label=f"{name}: p50 {run['p50_ms']:.0f}, p99 {run['p99_ms']:.0f} ms")
    ax3.legend(loc="lower right", fontsize=8)
    ax3.set_xlabel("end-to-end latency, ms (Redis classified_at - listed_at)")
    ax3.set_ylabel("fraction of events")
    ax3.set_title(f"(d) Latency CDF at {lat['target_rate']:.0f} events/s (~50% of (b))")
    for ax in (ax1, ax2, ax3):
        ax.grid(axis="y", alpha=0.3)

    m = results["machine"]
    model = results["model"]
    fig.suptitle(
        f"listings bench - {m['device']}, {m['cpu_count']} cores ({m['cpu_model']}); "
        f"model {model['name']} v{model['version']}, batch {results['config']['max_batch']}, "
        f"in-flight {results['config']['max_in_flight']}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
