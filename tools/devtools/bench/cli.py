"""`listings bench`: throughput and latency of the model, the pipeline and a naive baseline, in one run.

Figures (each pipeline run on topics and a consumer group of its own, see `devtools.bench.measure`):
  (a) raw Triton: async gRPC straight to the model, batches of `max_batch`, `max_in_flight` in flight, for every
      engine the served version has (torch fp32, onnx, onnx-int8), with the Triton process's RSS per engine, and a
      concurrency x batch sweep (throughput vs p99; see devtools.bench.engines);
  (b) the pipeline at saturation: N listings pre-produced, one worker, rate from first to last Redis write;
  (c) naive baseline: the same pipeline and worker with LISTINGS_MAX_BATCH=1, LISTINGS_MAX_IN_FLIGHT=1,
      i.e. one Triton request (and one Redis/Kafka round) per event;
  (d) end-to-end latency percentiles at ~50% of (b): Redis `classified_at` - `event_time` (the send time), with
      the worker's per-stage breakdown and the latency budget; (d') the same with a governed backfill alongside
      (live protection). After one live-only warm-up run (not judged), (d) and (d') alternate for `latency_rounds`
      rounds and are judged by the round with the median (d')/(d) ratio: one 40 s run's p99 moves by a fifth from
      one minute to the next on a shared VM;
      (d'') at Triton alone, live p99 with a full-speed background load sent to the live model
      vs to its background copy (devtools.bench.isolation);
  (e) throughput of 1, 2, 4 worker processes in one group over the input topic's partitions.
Writes `<out>/results.json` and `<out>/results.png`; worker logs go to `<out>/*.log` (git-ignored)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from devtools.config import StackSettings
from devtools.stats import busy_share, cpu_shares, cpu_times
from stream.config import Settings
from stream.timefmt import now_iso
from training.config import REPO

HELP = "measure Triton, pipeline and baseline throughput and latency"

DEFAULT_EVENTS = 2000
# (b) and (e) process RUN_EVENTS_FACTOR x --events: at 2,000 a run's processing span was 1.2-3 s, so one slow
# second of a 2-core VM moved (e) by a third (840 / 602 / 459 events/s for 1 / 2 / 4 workers in one run, 769-1,341
# for the same counts alone afterwards)
RUN_EVENTS_FACTOR = 3
# (d)/(d') pairs: live-only p99 of consecutive 40 s runs at 600-668 events/s ranged 134-193 ms (12-04), consecutive
# runs x0.77-1.23 apart, so one pair's ratio is mostly the hour's noise against a 1.3 threshold
LATENCY_ROUNDS = 3
MAX_RATIO = 1.3  # live p99 with a backfill running, at most this times live alone (issue 12)
MIN_SHARE = 0.5  # ... while the backfill takes at least this share of the capacity live leaves free
# every latency run opens with this many seconds at its rate, measured apart (see measure.latency_run): longer than
# the governor's first pause to measure live alone (governor.PROBE_S, 8 s), so (d') is judged in its steady state
RAMP_SECONDS = 10.0
QUICK = {
    "events": 200,
    "naive_events": 24,
    "latency_seconds": 4.0,
    "sweep_seconds": 0.5,
    "latency_rounds": 1,
    "ramp_seconds": 1.0,
}
NOTES = [
    "CPU only, no GPU: Triton runs the model on KIND_CPU instances (cpu_threads from config.pbtxt).",
    "The 2-core machine is shared with other work (training, tests) while the bench runs, and Kafka, Redis, "
    "Triton, the worker(s) and the producer all share the same cores: figures are noisy; load averages and the "
    "share of CPU time busy and stolen by the hypervisor (cpu_shares, from /proc/stat) are recorded per phase.",
    "Pipeline rates are (events written after the first Redis write) / (last - first classified_at).",
]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    mem_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "device": "CPU, no GPU",
        "cpu_model": cpu or "unknown",
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def budget(d: dict[str, Any], max_wait_ms: int) -> dict[str, Any]:
    """The latency budget at half load: p99 end-to-end <= max wait + 2 x p99 Triton compute + 100 ms."""
    stages = d["breakdown"]["stages_ms"]
    compute = stages.get("triton_compute", {}).get("p99", 0.0)
    limit = max_wait_ms + 2 * compute + 100
    slowest = max(stages, key=lambda k: stages[k].get("p99", 0.0), default=None)
    return {
        "p99_end_to_end_ms": d["p99_ms"],
        "limit_ms": round(limit, 1),
        "p99_triton_compute_ms": compute,
        "max_wait_ms": max_wait_ms,
        "met": d["p99_ms"] <= limit,
        # where to look when it is not met (who had the CPU meanwhile: (d)'s `cpu_by_process`)
        "largest_p99_stage": slowest,
    }


def one_round(alone: dict[str, Any], shared: dict[str, Any], max_wait_ms: int) -> dict[str, Any]:
    """One (d)/(d') pair, back to back: live p99 without and with the backfill, their ratio, the backfill's rate
    during the live phase, and whether (d) met its budget."""
    ratio = shared["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else float("inf")
    return {
        "live_p99_alone_ms": alone["p99_ms"],
        "live_p99_with_backfill_ms": shared["p99_ms"],
        "ratio": round(ratio, 3),
        "ratio_met": ratio <= MAX_RATIO,  # judged unrounded (x1.304 was shown as 1.30 and counted as met)
        "backfill_per_s_during_live": shared.get("backfill_rate_during_live", 0.0),
        "budget_met": budget(alone, max_wait_ms)["met"],
        # the ramp before the measured part (the transient of traffic starting from nothing), not judged
        "ramp_p99_alone_ms": alone.get("ramp_p99_ms"),
        "ramp_p99_with_backfill_ms": shared.get("ramp_p99_ms"),
    }


def median_round(rounds: list[dict[str, Any]]) -> int:
    """Index of the round whose ratio is the median (the lower middle one for an even count)."""
    order = sorted(range(len(rounds)), key=lambda i: rounds[i]["ratio"])
    return order[(len(order) - 1) // 2]


def protection(figures: dict[str, Any], rounds: list[dict[str, Any]], live_rate: float) -> dict[str, Any]:
    """Live traffic protected from a backfill: live p99 <= 1.3 x live-only p99, while the backfill uses at least half
    of the capacity live leaves free ((b) minus the live rate). Both are judged on one round, the one whose ratio is
    the median (the lower middle one for an even count; each ratio is of one back-to-back (d)/(d') pair): the ratio
    and the backfill's rate of the same run, never each one's median over different rounds. Every round is listed,
    with whether it met both."""
    free = max(0.0, figures["b_pipeline"]["events_per_s"] - live_rate)
    pick = rounds[median_round(rounds)]
    used = pick["backfill_per_s_during_live"]
    for r in rounds:
        r["share_of_free_capacity"] = round(r["backfill_per_s_during_live"] / free, 3) if free else None
        r["share_met"] = bool(free) and r["backfill_per_s_during_live"] >= MIN_SHARE * free
    return {
        "rounds": len(rounds),
        "judged_round": median_round(rounds),
        "live_p99_alone_ms": pick["live_p99_alone_ms"],
        "live_p99_with_backfill_ms": pick["live_p99_with_backfill_ms"],
        "ratio": pick["ratio"],
        "max_ratio": MAX_RATIO,
        "ratio_met": pick["ratio_met"],
        "ratios": [r["ratio"] for r in rounds],
        "rounds_within_ratio": sum(r["ratio_met"] for r in rounds),
        "free_capacity_per_s": round(free, 1),
        "backfill_per_s_during_live": used,
        "share_of_free_capacity": pick["share_of_free_capacity"],
        "min_share": MIN_SHARE,
        "share_met": pick["share_met"],
        "shares": [r["share_of_free_capacity"] for r in rounds],
        "rounds_meeting_both": sum(r["ratio_met"] and r["share_met"] for r in rounds),
        **cpu_ceiling(figures, free, used),
    }


def compact(run: dict[str, Any]) -> dict[str, Any]:
    """A latency run without its per-event latencies (the backfill's timeline stays: it shows what the governor
    read and did in every round, not only the judged one)."""
    return {k: v for k, v in run.items() if k != "latencies_ms"}


def cpu_ceiling(figures: dict[str, Any], free: float, used: float) -> dict[str, Any]:
    """What this machine's idle CPU during live-only (d) could serve at (b)'s cost per event: the most a backfill
    could take without taking CPU from live, that as a share of `free` ((b) minus the live rate), and the share of
    it the backfill (`used` events/s) took. A ceiling below 0.5 of `free` means the share goal cannot be met here
    without slowing live: an event at half load costs more than at (b)'s full batches, and the load generator runs
    on the same cores."""
    cost = (figures["b_pipeline"].get("processing_cpu") or {}).get("core_ms_per_event")
    shares = figures["d_latency"].get("cpu_by_process")
    if not cost or not shares:
        return {}
    idle = max(0.0, 1 - busy_share(shares) - shares.get("stolen", 0.0))
    ceiling = idle * (os.cpu_count() or 1) * 1000 / cost
    return {
        "live_only_idle_share": round(idle, 3),
        "b_core_ms_per_event": cost,
        "backfill_ceiling_per_s": round(ceiling, 1),
        "share_ceiling": round(ceiling / free, 2) if free else None,
        "share_of_ceiling": round(used / ceiling, 2) if ceiling else None,
    }


def ensure_stack(settings: StackSettings) -> list[str]:
    """Start the parts of the local stack that are not running; returns the ones this call started."""
    from devtools.stack import control

    st = control.status(settings)
    missing = [name for name, v in st.items() if not v["running"]]
    if missing:
        control.up(settings, missing, echo=lambda m: print(m, file=sys.stderr))
    return missing


def served_engine(stack: StackSettings, settings: Settings) -> str:
    """What the served version runs by default (its classifier.json, as Triton loaded it): the engine, and
    `+cascade` when rows the linear part is sure of skip the encoder."""
    import json

    model = stack.model_repository / settings.triton.model_name
    versions = sorted(int(p.name) for p in model.iterdir() if p.name.isdigit())
    try:
        meta = json.loads((model / str(versions[-1]) / "classifier.json").read_text())
    except (OSError, IndexError, ValueError):
        return "unknown"
    margin = (meta.get("cascade") or {}).get("linear_margin")
    return meta.get("default_engine", "torch") + (f"+cascade (margin {margin})" if margin is not None else "")


@dataclass(frozen=True)
class BenchOptions:
    events: int = DEFAULT_EVENTS  # titles for (a)
    run_events: int = RUN_EVENTS_FACTOR * DEFAULT_EVENTS  # events per throughput run, (b) and each (e)
    naive_events: int = 200
    latency_seconds: float = 40.0
    ramp_seconds: float = RAMP_SECONDS
    latency_rounds: int = LATENCY_ROUNDS
    workers: tuple[int, ...] = (1, 2, 4)
    out: Path = REPO / "bench"
    progress: bool = True
    quick: bool = False
    sweep_seconds: float = 4.0
    keep_data: bool = False

    @property
    def command(self) -> str:
        workers = ",".join(map(str, self.workers))
        parts = ["listings", "bench", "--events", str(self.events), "--run-events", str(self.run_events)]
        parts += ["--latency-rounds", str(self.latency_rounds), "--ramp-seconds", f"{self.ramp_seconds:g}"]
        parts += ["--out", str(self.out), "--workers", workers]
        return " ".join([*parts, *(["--quick"] if self.quick else []), *(["--keep-data"] if self.keep_data else [])])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help=f"titles for (a) (default {DEFAULT_EVENTS}; {QUICK['events']} with --quick)",
    )
    parser.add_argument(
        "--run-events",
        type=int,
        default=None,
        help=f"events per throughput run, (b) and each (e) (default {RUN_EVENTS_FACTOR} x --events; --events with "
        "--quick): long enough that a worker's processing span is seconds, not one hiccup",
    )
    parser.add_argument("--naive-events", type=int, default=None, help="events for the naive baseline (c)")
    parser.add_argument(
        "--latency-seconds", type=float, default=None, help="length of the fixed-rate latency run (d) (default 40)"
    )
    parser.add_argument(
        "--ramp-seconds",
        type=float,
        default=None,
        help=f"seconds at the live rate before each latency run's measured part, measured apart (default "
        f"{RAMP_SECONDS:g}; {QUICK['ramp_seconds']:g} with --quick; 0: none)",
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=None,
        help=f"(d)/(d') pairs, run back to back and judged by the median ratio (default {LATENCY_ROUNDS}; "
        f"{QUICK['latency_rounds']} with --quick)",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker-process counts for (e), comma-separated")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, e.g. the test suite)")
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="output folder (default bench/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep each run's topics, groups and Redis items (default: deleted once its figures are read)",
    )


def options_from(args: argparse.Namespace) -> BenchOptions:
    """The bench's options; raises ValueError on a bad one."""
    events = args.events or (QUICK["events"] if args.quick else DEFAULT_EVENTS)
    try:
        counts = tuple(sorted({int(x) for x in args.workers.split(",") if x.strip()}))
    except ValueError:
        raise ValueError("--workers takes comma-separated integers, e.g. 1,2,4") from None
    run_events = args.run_events or (events if args.quick else RUN_EVENTS_FACTOR * events)
    rounds = args.latency_rounds
    if rounds is None:
        rounds = QUICK["latency_rounds"] if args.quick else LATENCY_ROUNDS
    if events < 1 or run_events < 1 or rounds < 1 or not counts or min(counts) < 1:
        raise ValueError("--events, --run-events, --latency-rounds and worker counts must be >= 1")
    ramp = args.ramp_seconds
    if ramp is None:
        ramp = QUICK["ramp_seconds"] if args.quick else RAMP_SECONDS
    if ramp < 0:
        raise ValueError("--ramp-seconds must be >= 0")
    return BenchOptions(
        events=events,
        run_events=run_events,
        naive_events=args.naive_events or (QUICK["naive_events"] if args.quick else min(events, 200)),
        latency_seconds=args.latency_seconds or (QUICK["latency_seconds"] if args.quick else 40.0),
        latency_rounds=rounds,
        ramp_seconds=ramp,
        workers=counts,
        out=args.out,
        progress=not args.no_progress,
        quick=args.quick,
        sweep_seconds=QUICK["sweep_seconds"] if args.quick else 4.0,
        keep_data=args.keep_data,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from devtools import config
    from devtools.bench.measure import BenchError
    from devtools.bench.plot import table
    from devtools.stack import control

    try:
        options = options_from(args)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    stack = config.load()
    started = ensure_stack(stack)
    try:
        results = measure(stack, stack.runtime(settings), options)
    except (BenchError, RuntimeError, TimeoutError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if started:
            control.down(stack, started, echo=lambda m: print(m, file=sys.stderr))
    print(table(results))
    print(f"wrote {options.out / 'results.json'} and {options.out / 'results.png'}")
    return 0


def measure(stack: StackSettings, s: Settings, options: BenchOptions) -> dict[str, Any]:
    from devtools.bench import engines, isolation
    from devtools.bench import measure as bm
    from devtools.bench.plot import plot
    from devtools.heldout import held_out_listings

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    progress = options.progress
    n = options.events
    naive_n = options.naive_events
    lat_s = options.latency_seconds
    counts = list(options.workers)
    engines.wait_model(s, stack.startup_timeout)
    listings = held_out_listings(stack.data_dir)
    data_desc = "flipkart_20k.csv held-out split of the default model, distinct titles"
    model = bm.served_model(s)
    results: dict[str, Any] = {
        "command": options.command,
        "started_at": now_iso(),
        "machine": machine(),
        "model": {
            "name": model["name"],
            "version": max(model["versions"], key=int) if model["versions"] else "?",
            "triton_config": {k: model[k] for k in ("max_batch_size", "dynamic_batching", "instance_group")},
        },
        "config": {
            "max_batch": s.worker.max_batch,
            "max_in_flight": s.worker.max_in_flight,
            "max_wait_ms": s.worker.max_wait_ms,
            "input_partitions": s.topics.partitions,
            "events": n,
            "run_events": options.run_events,
            "naive_events": naive_n,
            "latency_seconds": lat_s,
            "ramp_seconds": options.ramp_seconds,
            "latency_rounds": options.latency_rounds,
            "workers": counts,
            # where (d')'s backfill sends: the background copy (auto) or the live model (live)
            "backfill_model": s.backfill.model,
        },
        "data": {"source": data_desc, "distinct_listings": len(listings)},
        "notes": list(NOTES),
        "load_average": {"start": os.getloadavg()},
        "cpu_shares": {},
        "figures": {},
    }
    cpu_mark = cpu_times()
    figures: dict[str, Any] = results["figures"]
    json_path = out / "results.json"

    def save(phase: str | None = None) -> None:
        """Write results.json; with `phase`, first close that phase's load average and CPU shares."""
        nonlocal cpu_mark
        if phase is not None:
            results["load_average"][phase] = os.getloadavg()
            now = cpu_times()
            results["cpu_shares"][phase] = cpu_shares(cpu_mark, now)  # over the phase that just ended
            cpu_mark = now
        json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))

    env = bm.Env(s, listings, out, progress, timeout_s=300 + options.run_events * 0.3, keep=options.keep_data)
    titles = [listings[i % len(listings)]["title"] for i in range(n)]
    figures["a_engines"] = engines.compare(stack, s, titles, bm.triton_raw, progress)
    figures["a_triton_raw"] = bm.triton_raw(s, titles, progress)  # the default engine (`auto`)
    figures["a_triton_raw"]["engine"] = served_engine(stack, s)
    figures["a_triton_raw"]["triton_rss_mib"] = engines.triton_rss_mib(stack)
    save("a")
    figures["a_sweep"] = engines.sweep(s, titles, seconds=options.sweep_seconds, progress=progress)
    save("sweep")
    figures["b_pipeline"] = bm.saturation_run(env, "pipeline", options.run_events)
    save("b")
    figures["c_naive"] = bm.saturation_run(
        env, "naive", naive_n, worker_env={"LISTINGS_MAX_BATCH": "1", "LISTINGS_MAX_IN_FLIGHT": "1"}
    )
    figures["c_naive"]["method"] = (
        "same pipeline and worker with LISTINGS_MAX_BATCH=1 LISTINGS_MAX_IN_FLIGHT=1: one Triton request, "
        "one Redis script call and one Kafka send round per event"
    )
    save("c")
    rate = max(1.0, figures["b_pipeline"]["events_per_s"] / 2)
    live_n = max(20, int(rate * lat_s))
    # (d') runs the same live load while a governed backfill (Triton priority 2) replays a backlog the size of what
    # the pipeline does at full speed during the live phase; (d) and (d') alternate, so a slow spell of the VM
    # lands on both
    backlog = max(20, int(figures["b_pipeline"]["events_per_s"] * (lat_s + options.ramp_seconds)))
    # one live-only run first, not judged: the first latency run after (b)/(c) is a warm-up of the live path (on
    # 12-04, three runs in a row at 485/s: p99 229 / 155 / 130 ms with Kafka at 15 / 7 / 5% of the cores; round 1's
    # (d) of the two bench runs before this warm-up: 214 and 187 ms against 134-152 in rounds 2-3)
    ramp = options.ramp_seconds
    warm = bm.latency_run(env, rate, live_n, ramp_s=ramp)
    figures["d_warmup"] = {k: warm[k] for k in ("events", "p50_ms", "p99_ms", "cpu_by_process")}
    save("d_warmup")
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    rounds: list[dict[str, Any]] = []
    for r in range(options.latency_rounds):
        alone = bm.latency_run(env, rate, live_n, ramp_s=ramp)
        save(f"d_{r}")
        shared = bm.latency_run(env, rate, live_n, backlog, ramp_s=ramp)
        save(f"d2_{r}")
        pairs.append((alone, shared))
        rounds.append({"round": r, **one_round(alone, shared, s.worker.max_wait_ms)})
    # the full figures (latencies, breakdown, timelines) of the median round; the others as summaries
    pick = median_round(rounds)
    figures["d_latency"], figures["d_latency_with_backfill"] = pairs[pick]
    results["budget"] = budget(figures["d_latency"], s.worker.max_wait_ms)
    results["budget"]["rounds_met"] = sum(r["budget_met"] for r in rounds)
    results["protection"] = protection(figures, rounds, rate)  # (adds each round's share to `rounds`)
    figures["d_rounds"] = [
        {**rounds[i], "median_round": i == pick, "d": compact(a), "d2": compact(b)} for i, (a, b) in enumerate(pairs)
    ]
    save()
    # (d'') the mechanism on its own, at Triton: live titles at (d)'s rate with a full-speed background load on the
    # live model itself or on the backfill's background copy
    figures["d_isolation"] = isolation.isolation(
        s, titles, rate, seconds=2.0 if options.quick else 10.0, rounds=1 if options.quick else 3, progress=progress
    )
    save("d3")
    figures["e_workers"] = {}
    for k in counts:
        figures["e_workers"][str(k)] = bm.saturation_run(
            env, f"scale{k}", options.run_events, workers=k, preproduce=False
        )
        save(f"e{k}")
    a = figures["a_triton_raw"]["titles_per_s"]
    b = figures["b_pipeline"]["events_per_s"]
    c = figures["c_naive"]["events_per_s"]
    results["ratios"] = {
        "b_over_a": round(b / a, 3) if a else 0.0,
        "b_over_c": round(b / c, 2) if c else 0.0,
        "default_engine_over_torch_fp32": round(a / figures["a_engines"]["torch"]["titles_per_s"], 2),
        "onnx_int8_over_torch_fp32": figures["a_engines"]["onnx-int8"]["vs_torch_fp32"],
    }
    results["finished_at"] = now_iso()
    save("end")
    plot(results, out / "results.png")
    return results
