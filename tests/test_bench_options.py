"""`listings bench` options and the CPU roles it counts (pure logic; the bench itself runs in test_bench.py)."""

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
