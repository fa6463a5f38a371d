"""The figures of `listings bench` as a PNG (throughputs, worker scaling, latency) and a text table."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, how) rows of the summary table."""
    f = results["figures"]
    lat = f["d_latency"]
    out = [
        (
            f"(a) Triton raw, {engine} fp32" if engine.startswith("torch") else f"(a) Triton raw, {engine}",
            f"{run['titles_per_s']:.1f} titles/s",
            f"x{run['vs_torch_fp32']:.2f} torch fp32, Triton RSS {run['triton_rss_mib']:.0f} MiB",
        )
        for engine, run in f.get("a_engines", {}).items()
    ]
    out += [
        (
            f"(a) Triton raw (default: {f['a_triton_raw'].get('engine', '?')})",
            f"{f['a_triton_raw']['titles_per_s']:.1f} titles/s",
            "async gRPC, batch x in-flight",
        ),
        ("(b) pipeline, 1 worker", f"{f['b_pipeline']['events_per_s']:.1f} events/s", "Kafka -> worker -> Redis"),
        ("(c) naive, 1 req/event", f"{f['c_naive']['events_per_s']:.1f} events/s", "batch 1, in-flight 1"),
        (
            "(d) latency at ~50% of (b)" + (", the median round" if len(f.get("d_rounds", [])) > 1 else ""),
            f"p50 {lat['p50_ms']:.0f} / p95 {lat['p95_ms']:.0f} / p99 {lat['p99_ms']:.0f} ms",
            f"{lat['target_rate']:.0f} events/s, {lat['events']} events, {lat.get('redis_forks', 0)} Redis fork(s)"
            + (f"; after a {lat['ramp_s']:g} s ramp: p99 {lat['ramp_p99_ms']:.0f}" if lat.get("ramp_events") else ""),
        ),
    ]
    if "budget" in results:
        bud = results["budget"]
        where = "" if bud["met"] or not bud.get("largest_p99_stage") else f"; largest p99: {bud['largest_p99_stage']}"
        if len(f.get("d_rounds", [])) > 1:
            where += f"; met in {bud.get('rounds_met')} of {len(f['d_rounds'])} rounds"
        out.append(
            (
                "(d) budget",
                f"p99 {bud['p99_end_to_end_ms']:.0f} <= {bud['limit_ms']:.0f} ms: {'met' if bud['met'] else 'NOT met'}",
                f"max wait {bud['max_wait_ms']} + 2 x p99 compute {bud['p99_triton_compute_ms']:.0f} + 100" + where,
            )
        )
    if "d_latency_with_backfill" in f:
        lb = f["d_latency_with_backfill"]
        out.append(
            (
                "(d') same, backfill running",
                f"p50 {lb['p50_ms']:.0f} / p95 {lb['p95_ms']:.0f} / p99 {lb['p99_ms']:.0f} ms",
                f"backfill of {lb.get('backlog', 0)} at priority 2 alongside, {lb.get('redis_forks', 0)} Redis fork(s)"
                + (f"; ramp p99 {lb['ramp_p99_ms']:.0f} ms" if lb.get("ramp_events") else ""),
            )
        )
    if "protection" in results:
        pr = results["protection"]
        n = pr.get("rounds", 1)
        each = " / ".join(f"x{r:.2f}" for r in pr.get("ratios", [pr["ratio"]]))
        out.append(
            (
                "(d') live p99 ratio" + (f", the median round of {n}" if n > 1 else ""),
                f"x{pr['ratio']:.2f} ({'met' if pr['ratio_met'] else 'NOT met'} <= {pr.get('max_ratio', '?')})",
                f"rounds {each}; backfill {pr['backfill_per_s_during_live']:.0f}/s of "
                f"{pr['free_capacity_per_s']:.0f}/s free ({pr['share_of_free_capacity']})",
            )
        )
        if "share_ceiling" in pr:
            out.append(
                (
                    "(d') share this VM allows",
                    f"{pr['share_ceiling']} ({pr['backfill_ceiling_per_s']:.0f}/s; backfill took "
                    f"{pr['share_of_ceiling']} of it)",
                    f"CPU idle in (d) ({pr['live_only_idle_share']:.0%} of the cores) at (b)'s "
                    f"{pr['b_core_ms_per_event']:.2f} core-ms per event",
                )
            )
    iso = f.get("d_isolation") or {}
    if "median" in iso:
        med = iso["median"]
        out.append(
            (
                "(d'') live p99 at Triton",
                f"alone {med['alone']['live_p99_ms']:.0f} / background on live model {med['same']['live_p99_ms']:.0f}"
                f" (x{iso['p99_same_over_alone']:.2f}) / on its copy {med['copy']['live_p99_ms']:.0f} ms"
                f" (x{iso['p99_copy_over_alone']:.2f})",
                f"live {iso['live_titles_per_s']:.0f} titles/s; background {med['same']['background_titles_per_s']:.0f}"
                f" vs {med['copy']['background_titles_per_s']:.0f} titles/s; medians of {iso['rounds']} rounds",
            )
        )
    for key, name in (("b_pipeline", "(b)"), ("d_latency", "(d)"), ("d_latency_with_backfill", "(d')")):
        cpu = (f.get(key) or {}).get("cpu_by_process")
        if cpu:
            out.append(
                (
                    f"{name} CPU by process",
                    ", ".join(f"{role} {share:.0%}" for role, share in cpu.items() if share >= 0.005),
                    "share of all the VM's cores while its events were in flight (/proc; stolen: by the hypervisor)",
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


def per_second_p99(run: dict[str, Any]) -> list[float]:
    """p99 latency of each second of a latency run (events are stored in send order, sent at a fixed rate)."""
    from devtools.stats import percentile

    lat, rate = run["latencies_ms"], max(1, round(run["target_rate"]))
    return [percentile(lat[i : i + rate], 99) for i in range(0, len(lat), rate)]


def timeline(ax: Any, results: dict[str, Any]) -> None:
    """(d) and (d') second by second: live p99, and the backfill's rate (what its governor let through)."""
    f = results["figures"]
    runs = (("live only", "d_latency", "#dd8452"), ("live, backfill running", "d_latency_with_backfill", "#937860"))
    for name, key, color in runs:
        if key in f and f[key].get("latencies_ms"):
            ys = per_second_p99(f[key])
            ax.plot(range(len(ys)), ys, color=color, label=f"{name}: p99 per second")
    ax.set_xlabel("seconds into the live phase")
    ax.set_ylabel("live latency p99, ms")
    ax.grid(alpha=0.3)
    bf = f.get("d_latency_with_backfill", {})
    points = bf.get("backfill_timeline") or []
    if len(points) > 1:
        # the backfill started `startup_s` before the live phase, whose measured part follows its ramp; the
        # backfill's rate is the slope of events done
        t0 = bf.get("startup_s", 0.0) + bf.get("ramp_s", 0.0)
        pairs = list(itertools.pairwise(points))
        xs = [(a["t"] + b["t"]) / 2 - t0 for a, b in pairs]
        rates = [(b["events"] - a["events"]) / max(1e-3, b["t"] - a["t"]) for a, b in pairs]
        keep = [i for i, x in enumerate(xs) if 0 <= x <= bf.get("live_s", xs[-1])]
        ax2 = ax.twinx()
        ax2.step([xs[i] for i in keep], [rates[i] for i in keep], where="mid", color="#55a868", label="backfill ev/s")
        ax2.set_ylabel("backfill events/s")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    pr = results.get("protection")
    if pr:
        n = pr.get("rounds", 1)
        ax.set_title(
            (f"(d') the median round of {n}, judged on its own figures: " if n > 1 else "(d') ")
            + f"live p99 x{pr['ratio']:.2f} of alone (goal <= {pr.get('max_ratio', '?')})\nbackfill "
            f"{pr['backfill_per_s_during_live']:.0f}/s = {pr['share_of_free_capacity']} of free "
            f"(goal >= {pr.get('min_share', '?')}"
            + (f"; idle CPU allows {pr['share_ceiling']})" if "share_ceiling" in pr else ")"),
            fontsize=10,
        )


def isolation_panel(ax: Any, iso: dict[str, Any]) -> None:
    """(d''): live p99 per round, alone / background on the live model / on its background copy."""
    if "runs" not in iso:
        ax.set_title(f"(d'') isolation: {iso.get('skipped', 'not measured')}")
        ax.axis("off")
        return
    names = {"alone": "live alone", "same": "background on\nthe live model", "copy": "background on\nits copy"}
    colors = {"alone": "#4c72b0", "same": "#c44e52", "copy": "#55a868"}
    for i, mode in enumerate(names):
        ys = [r["live_p99_ms"] for r in iso["runs"] if r["mode"] == mode]
        ax.scatter([i] * len(ys), ys, color=colors[mode], zorder=3)
        ax.bar(i, iso["median"][mode]["live_p99_ms"], color=colors[mode], alpha=0.35)
        bg = iso["median"][mode]["background_titles_per_s"]
        if bg:
            ax.annotate(f"background {bg:.0f} titles/s", (i, 0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), list(names.values()))
    ax.set_ylabel("live p99 request latency at Triton, ms (dots: rounds; bars: median)")
    ax.set_title(
        f"(d'') live {iso['live_titles_per_s']:.0f} titles/s: x{iso['p99_same_over_alone']:.2f} on the live model, "
        f"x{iso['p99_copy_over_alone']:.2f} on the copy",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)


def rounds_panel(ax: Any, results: dict[str, Any]) -> None:
    """(d)/(d') round by round: live p99 without and with the backfill, the ratio and the backfill's rate."""
    rounds = results["figures"].get("d_rounds") or []
    if not rounds:
        ax.axis("off")
        return
    xs = range(len(rounds))
    alone = [r["live_p99_alone_ms"] for r in rounds]
    shared = [r["live_p99_with_backfill_ms"] for r in rounds]
    ax.bar([x - 0.2 for x in xs], alone, width=0.4, color="#dd8452", label="live only (d)")
    ax.bar([x + 0.2 for x in xs], shared, width=0.4, color="#937860", label="backfill running (d')")
    for x, r in zip(xs, rounds, strict=True):
        ax.annotate(
            f"x{r['ratio']:.2f}\n{r['backfill_per_s_during_live']:.0f}/s",
            (x + 0.2, r["live_p99_with_backfill_ms"]),
            ha="center",
            va="bottom",
            fontsize=8,
            fontweight="bold" if r.get("median_round") else "normal",
        )
    names = [f"round {r['round'] + 1}" + (" (median)" if r.get("median_round") else "") for r in rounds]
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("live p99 end to end, ms")
    ax.set_ylim(0, max(alone + shared) * 1.25)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    pr = results.get("protection", {})
    ax.set_title(
        f"(d)/(d') rounds, back to back: median x{pr.get('ratio', 0):.2f} (goal <= {pr.get('max_ratio', '?')}),\n"
        f"{pr.get('rounds_within_ratio', '?')} of {len(rounds)} within, {pr.get('rounds_meeting_both', '?')} also at "
        f"the share; labels: ratio, backfill events/s",
        fontsize=10,
    )


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = results["figures"]
    fig, axes = plt.subplots(2, 4, figsize=(24, 10))
    (ax1, ax4, ax5, ax7), (ax2, ax3, ax6, ax8) = axes
    isolation_panel(ax7, f.get("d_isolation") or {})
    rounds_panel(ax8, results)

    engines = f.get("a_engines", {})
    labels = [f"(a) {e}" for e in engines] + ["(b) pipeline\n1 worker", "(c) naive\n1 req/event"]
    values = [r["titles_per_s"] for r in engines.values()] + [
        f["b_pipeline"]["events_per_s"],
        f["c_naive"]["events_per_s"],
    ]
    bars = ax1.bar(labels, values, color=["#4c72b0"] * len(engines) + ["#55a868", "#c44e52"])
    ax1.bar_label(bars, fmt="%.0f")
    ax1.set_ylabel("per second")
    r = results["ratios"]
    ax1.set_title(
        f"Throughput: default engine x{r.get('default_engine_over_torch_fp32', 0):.2f} torch fp32; "
        f"(b)/(a) {r['b_over_a']:.2f}"
    )
    ax1.tick_params(axis="x", labelsize=8)

    for c in sorted({p["concurrency"] for p in f.get("a_sweep", [])}):
        pts = [p for p in f["a_sweep"] if p["concurrency"] == c]
        ax4.plot([p["p99_ms"] for p in pts], [p["titles_per_s"] for p in pts], marker="o", label=f"concurrency {c}")
        for p in pts:
            ax4.annotate(str(p["batch"]), (p["p99_ms"], p["titles_per_s"]), fontsize=7)
    ax4.set_xlabel("p99 request latency, ms (labels: batch size)")
    ax4.set_ylabel("titles/s")
    ax4.set_title(f"(a) sweep, default engine ({f['a_triton_raw'].get('engine', '?')})")
    if f.get("a_sweep"):
        ax4.legend(fontsize=8)

    stages = f["d_latency"].get("breakdown", {}).get("stages_ms", {})
    if stages:
        names = list(stages)
        ax5.barh(names[::-1], [stages[n]["p99"] for n in names][::-1], color="#dd8452", label="p99")
        ax5.barh(names[::-1], [stages[n]["p50"] for n in names][::-1], color="#4c72b0", label="p50")
        ax5.legend()
    bud = results.get("budget", {})
    ax5.set_xlabel("ms per batch (per-event stages: a batch's slowest event)")
    ax5.set_title(
        f"(d) where the time goes at half load; budget {'met' if bud.get('met') else 'NOT met'}: "
        f"p99 {bud.get('p99_end_to_end_ms', 0):.0f} <= {bud.get('limit_ms', 0):.0f} ms"
    )

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
        curves.append(("with a governed backfill", f["d_latency_with_backfill"], "#937860"))
    for name, run, color in curves:
        samples = sorted(run["latencies_ms"])
        if samples:
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            ax3.plot(samples, ys, color=color, label=f"{name}: p50 {run['p50_ms']:.0f}, p99 {run['p99_ms']:.0f} ms")
    ax3.legend(loc="lower right", fontsize=8)
    ax3.set_xlabel("end-to-end latency, ms (the Redis write - listed_at)")
    ax3.set_ylabel("fraction of events")
    ax3.set_title(f"(d) Latency CDF at {lat['target_rate']:.0f} events/s (~50% of (b))")

    timeline(ax6, results)
    for ax in (ax1, ax2, ax4):
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
