"""`listings bench` options, its verdicts and the CPU roles it counts (pure logic; the bench itself runs in
test_bench.py)."""

from __future__ import annotations

import argparse

import pytest

from devtools.bench.cli import (
    DEFAULT_EVENTS,
    LATENCY_ROUNDS,
    QUICK,
    RAMP_SECONDS,
    RUN_EVENTS_FACTOR,
    add_arguments,
    median_round,
    one_round,
    options_from,
    protection,
)


def options(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from(parser.parse_args(list(argv)))


def test_throughput_runs_default_to_a_multiple_of_the_titles_for_a() -> None:
    o = options()
    assert (o.events, o.run_events) == (DEFAULT_EVENTS, RUN_EVENTS_FACTOR * DEFAULT_EVENTS)
    assert options("--events", "500").run_events == RUN_EVENTS_FACTOR * 500
    assert options("--events", "500", "--run-events", "700").run_events == 700
    assert "--run-events 700" in options("--run-events", "700").command


def test_quick_keeps_throughput_runs_as_small_as_a() -> None:
    o = options("--quick")
    assert o.events == o.run_events == QUICK["events"]


def test_latency_rounds_default_to_three_and_one_when_quick() -> None:
    assert options().latency_rounds == LATENCY_ROUNDS == 3
    assert options("--quick").latency_rounds == QUICK["latency_rounds"] == 1
    assert options("--latency-rounds", "5").latency_rounds == 5
    assert "--latency-rounds 5" in options("--latency-rounds", "5").command


def test_latency_runs_open_with_a_ramp_longer_than_the_governors_first_probe() -> None:
    from stream.governor import PROBE_S

    assert options().ramp_seconds == RAMP_SECONDS > PROBE_S
    assert options("--quick").ramp_seconds == QUICK["ramp_seconds"]
    assert options("--ramp-seconds", "0").ramp_seconds == 0
    assert "--ramp-seconds 2.5" in options("--ramp-seconds", "2.5").command


@pytest.mark.parametrize(
    "argv",
    [
        ("--run-events", "-1"),
        ("--workers", "0"),
        ("--workers", "a,b"),
        ("--latency-rounds", "0"),
        ("--ramp-seconds", "-1"),
    ],
)
def test_bad_options_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        options(*argv)


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (["/usr/bin/redis-server", "127.0.0.1:16379"], "redis"),
        (["redis-aof-rewrite 127.0.0.1:16379"], "redis"),  # the child Redis forks: its CPU is Redis'
        (["/x/tritonserver", "--model-repository=/r"], "triton"),
        (["/x/triton_python_backend_stub", "/r/listing_classifier/2/model.py", "shm"], "triton"),
        (["/x/triton_python_backend_stub", "/r/listing_classifier_background/2/model.py", "shm"], "triton_background"),
        (["/v/bin/python", "-m", "stream", "backfill", "--from-beginning"], "backfill"),
        (["/v/bin/python", "-m", "stream", "worker"], "worker"),
        (["/usr/bin/java", "-cp", "kafka.jar", "kafka.Kafka"], "kafka"),
        (["/bin/sleep", "5"], "other"),
    ],
)
def test_cpu_roles_by_command_line(cmdline: list[str], role: str) -> None:
    from devtools.stats import _role

    assert _role(12345, cmdline, own=1) == role


def latency(p99: float, compute_p99: float = 50.0, backfill_rate: float | None = None) -> dict:
    run = {"p99_ms": p99, "breakdown": {"stages_ms": {"triton_compute": {"p99": compute_p99}}}}
    if backfill_rate is not None:
        run["backfill_rate_during_live"] = backfill_rate
    return run


def test_protection_is_judged_by_the_median_of_back_to_back_rounds() -> None:
    # three (d)/(d') pairs: the live-only p99 itself moves from round to round; each ratio is of one pair
    pairs = [(160.0, 304.0, 90.0), (200.0, 220.0, 310.0), (140.0, 175.0, 200.0)]
    rounds = [one_round(latency(a), latency(b, backfill_rate=bf), max_wait_ms=50) for a, b, bf in pairs]
    assert [r["ratio"] for r in rounds] == [1.9, 1.1, 1.25]
    assert [r["budget_met"] for r in rounds] == [True, True, True]  # p99 <= 50 + 2 x 50 + 100
    assert median_round(rounds) == 2
    figures = {"b_pipeline": {"events_per_s": 1200.0}, "d_latency": {}}
    pr = protection(figures, rounds, live_rate=600.0)
    assert pr["ratio"] == 1.25 and pr["ratio_met"] and pr["rounds_within_ratio"] == 2 and pr["rounds"] == 3
    assert pr["ratios"] == [1.9, 1.1, 1.25]
    # the share: the judged round's backfill rate (200/s) over the capacity live leaves free (1,200 - 600)
    assert pr["backfill_per_s_during_live"] == 200.0 and pr["share_of_free_capacity"] == 0.333 and not pr["share_met"]
    # every figure from that one round (the medians of each column came from three different rounds: 160 / 220)
    assert (pr["judged_round"], pr["live_p99_alone_ms"], pr["live_p99_with_backfill_ms"]) == (2, 140.0, 175.0)
    assert pr["shares"] == [0.15, 0.517, 0.333] and pr["rounds_meeting_both"] == 1  # round 2 (x1.1 at 0.517)


def test_the_ratio_and_the_share_are_judged_on_the_same_round() -> None:
    """The median ratio and the median backfill rate, taken separately, passed both from different rounds."""
    figures = {"b_pipeline": {"events_per_s": 1000.0}, "d_latency": {}}
    # (ratio, share): (1.5, 0.7), (1.2, 0.3), (1.1, 0.6): the medians x1.2 and 0.6 each pass, but the round at x1.2
    # gave the backfill 0.3
    rounds = [
        one_round(latency(100.0), latency(p, backfill_rate=bf), 50)
        for p, bf in ((150.0, 350.0), (120.0, 150.0), (110.0, 300.0))
    ]
    pr = protection(figures, rounds, 500.0)
    assert pr["ratio_met"] and not pr["share_met"] and pr["share_of_free_capacity"] == 0.3
    assert pr["rounds_meeting_both"] == 1


def test_a_ratio_over_the_limit_is_not_met_because_it_rounds_to_it() -> None:
    r = one_round(latency(1000.0), latency(1304.0, backfill_rate=0.0), 50)
    assert r["ratio"] == 1.304 and not r["ratio_met"]
    # and an even number of rounds is judged on one of them (the lower middle), not on a mean of two
    rounds = [one_round(latency(100.0), latency(p, backfill_rate=0.0), 50) for p in (110.0, 140.0, 120.0, 200.0)]
    pr = protection({"b_pipeline": {"events_per_s": 1000.0}, "d_latency": {}}, rounds, 500.0)
    assert pr["judged_round"] == 2 and pr["ratio"] == 1.2


def test_one_bad_round_of_three_does_not_decide_the_ratio_but_two_do() -> None:
    figures = {"b_pipeline": {"events_per_s": 1000.0}, "d_latency": {}}
    one = [one_round(latency(100.0), latency(p, backfill_rate=300.0), 50) for p in (250.0, 120.0, 110.0)]
    two = [one_round(latency(100.0), latency(p, backfill_rate=300.0), 50) for p in (250.0, 140.0, 110.0)]
    assert protection(figures, one, 500.0)["ratio_met"] and protection(figures, one, 500.0)["share_met"]
    assert not protection(figures, two, 500.0)["ratio_met"]
    over = one_round(latency(300.0), latency(300.0, backfill_rate=0.0), 50)
    assert not over["budget_met"] and over["ratio"] == 1.0
