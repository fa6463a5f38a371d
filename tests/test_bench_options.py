"""`listings bench` options (pure argument handling; the bench itself runs in test_bench.py)."""

from __future__ import annotations

import argparse

import pytest

from devtools.bench.cli import DEFAULT_EVENTS, QUICK, RUN_EVENTS_FACTOR, add_arguments, options_from


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


@pytest.mark.parametrize("argv", [("--run-events", "-1"), ("--workers", "0"), ("--workers", "a,b")])
def test_bad_options_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        options(*argv)
