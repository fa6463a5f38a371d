"""Backfill on the real stack: time-resolved start, fixed end, its own group, resumable, model-version rule."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from devtools.workers import WorkerProcess, isolated, produce_raw, wait_group_stable
from stream import connections, keys
from stream.backfill import BackfillOptions, PlanMismatch, backfill, default_group
from stream.config import Settings
from stream.cpu_priority import AUTOGROUP, autogroup_nice
from support import (
    TITLES,
    another_version,
    assert_categories,
    direct_categories,
    listing,
    read_topic,
    redis_items,
    result_fields,
    wait_for,
)

pytestmark = pytest.mark.stack


def _opts(**options) -> BackfillOptions:
    return BackfillOptions(progress=False, **options)


def _run(s: Settings, **options):
    return asyncio.run(backfill(s, _opts(**options)))


def _events(prefix: str, n: int, version: int = 0) -> list[tuple[bytes, bytes]]:
    return [listing(f"{prefix}-{i}", TITLES[i % len(TITLES)], listing_version=version) for i in range(n)]


def _group_offsets(s: Settings, group: str) -> dict:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**connections.kafka(s.kafka))
    try:
        return {tp: o.offset for tp, o in admin.list_group_offsets(group)[group].items()}
    finally:
        admin.close()


def test_since_resolves_start_by_time_and_live_group_is_untouched(stack, tmp_path) -> None:
    s = isolated(stack, "bf-since")
    old = _events("old", 20)
    produce_raw(s, old)
    worker = WorkerProcess(s, tmp_path).start()
    try:
        wait_for(lambda: len(redis_items(s, [f"old-{i}" for i in range(20)])) == 20, 180, "live results")
        wait_for(lambda: sum(_group_offsets(s, s.worker.group_id).values()) == 20, 60, "the live group's commit")
        live_offsets = _group_offsets(s, s.worker.group_id)
    finally:
        worker.stop()
    time.sleep(1.0)
    since = int(time.time() * 1000)
    time.sleep(0.2)
    new = _events("new", 15)
    produce_raw(s, new)
    summary = _run(s, since_ms=since)
    assert summary.events == 15 and summary.classified == 15 and summary.dlq == 0
    assert _group_offsets(s, s.worker.group_id) == live_offsets, "the live group's offsets must not move"
    stored = redis_items(s, [f"new-{i}" for i in range(15)])
    assert len(stored) == 15 and {h["source"] for h in stored.values()} == {"backfill"}
    assert {h["source"] for h in redis_items(s, [f"old-{i}" for i in range(20)]).values()} == {"live"}
    out = [orjson.loads(m.value) for m in read_topic(s, s.topics.classified)]
    assert {o["item_id"] for o in out if o["source"] == "backfill"} == {f"new-{i}" for i in range(15)}
    # a second run with the same arguments resumes at the end: nothing left to do, and it says so
    again = _run(s, since_ms=since)
    assert again.events == 0 and again.resumed_from_committed and again.already_complete
    env = {**os.environ, **s.to_env()}
    cmd = [sys.executable, "-m", "stream", "backfill"]
    out = subprocess.run([*cmd, "--since", str(since)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "already complete" in out.stdout, out.stdout + out.stderr[-2000:]
    # the group's plan is not replayed for another range or topic (it was, at the old topic's offsets)
    with pytest.raises(PlanMismatch, match="give another --group"):
        _run(s, since_ms=since, group=summary.group, topic=s.topics.classified)
    other = [*cmd, "--since", str(since - 60_000), "--group", summary.group]
    out = subprocess.run(other, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and f"group {summary.group} holds the plan of another run" in out.stderr, out.stderr


def test_stops_at_the_end_offsets_seen_at_start(stack) -> None:
    s = isolated(stack, "bf-end")
    produce_raw(s, _events("first", 30))
    options = _opts(rate=10, governor=False)  # paced: 3 s for the 30, so the late events land while it runs
    plan_key = keys.backfill_plan(default_group(options, s.topics.input))

    async def run_and_feed() -> object:
        r = connections.redis_async(s.redis)
        task = asyncio.create_task(backfill(s, options))
        while not await r.exists(plan_key):
            if task.done():  # it failed before making its plan: say why
                return task.result()
            await asyncio.sleep(0.05)
        await r.aclose()
        await asyncio.to_thread(produce_raw, s, _events("late", 10))  # after the plan was made
        assert not task.done(), "the backfill ended before the late events were in: the test proves nothing"
        return await task

    summary = asyncio.run(run_and_feed())
    assert summary.events == 30
    assert redis_items(s, [f"late-{i}" for i in range(10)]) == {}


def _backfill_cmd(rate: int = 0) -> list[str]:
    """`listings backfill --from-beginning [--rate R] --json` as a command line."""
    return [
        sys.executable,
        "-m",
        "stream",
        "backfill",
        "--from-beginning",
        *(["--rate", str(rate)] if rate else []),
        "--json",
    ]


def _spawn_backfill(s: Settings, rate: int, stdout: object, stderr: object = subprocess.STDOUT) -> subprocess.Popen:
    """The backfill as its own process group, in batches of 8 so that a signal lands mid-run."""
    return subprocess.Popen(
        _backfill_cmd(rate),
        env={**os.environ, **s.to_env(), "LISTINGS_BACKFILL_MAX_BATCH": "8"},
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def test_killed_backfill_resumes_and_matches_a_clean_run(stack, tmp_path) -> None:
    s = isolated(stack, "bf-resume")
    n = 240
    produce_raw(s, _events("r", n))
    log = open(tmp_path / "bf.log", "wb")
    proc = _spawn_backfill(s, 60, log)
    ids = [f"r-{i}" for i in range(n)]
    wait_for(lambda: len(redis_items(s, ids)) >= 40, 180, "backfill progress")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    part = redis_items(s, ids)
    assert 0 < len(part) < n, "the kill must land mid-run"
    env = {**os.environ, **s.to_env()}
    out = subprocess.run(_backfill_cmd(), env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["resumed_from_committed"] and 0 < summary["events"] < n
    # the timeline (what the bench plots): points in time order, ending at every event of this run
    points = summary["timeline"]
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)
    assert points[-1]["events"] == summary["events"]
    final = redis_items(s, ids)
    assert len(final) == n
    # what the killed run wrote and published stayed as it was (a write whose outputs were never confirmed may be
    # replaced by its redelivery's answer, which int8 can move in another batch); everything else matches a clean
    # run of the same model
    for iid, h in part.items():
        if final[iid]["result_digest"] == h["result_digest"] or h["outputs_pending"] == "0":
            assert result_fields(final[iid]) == result_fields(h)
    clean = isolated(stack, "bf-clean")
    produce_raw(clean, _events("r", n))
    assert _run(clean).events == n
    for iid in ids:
        assert final[iid]["category_id"] == redis_items(clean, [iid])[iid]["category_id"]
        assert final[iid]["tags"] == redis_items(clean, [iid])[iid]["tags"]


def test_sigterm_finishes_what_is_in_flight_and_the_rerun_redoes_nothing(stack, tmp_path) -> None:
    from collections import Counter

    s = isolated(stack, "bf-term")
    n = 240
    produce_raw(s, _events("term", n))
    proc = _spawn_backfill(s, 30, subprocess.PIPE, subprocess.PIPE)
    ids = [f"term-{i}" for i in range(n)]
    try:
        wait_for(lambda: len(redis_items(s, ids)) >= 40, 180, "backfill progress")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    assert b"SIGTERM: finishing the batches in flight" in err
    first = orjson.loads(out.strip().splitlines()[-1])
    assert first["stopped_by"] == "SIGTERM" and 40 <= first["events"] < n
    # everything it processed was committed, and nothing past that was processed
    assert sum(_group_offsets(s, first["group"]).values()) == first["events"]
    assert len(redis_items(s, ids)) == first["events"]

    env = {**os.environ, **s.to_env()}
    again = subprocess.run(_backfill_cmd(30), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    second = orjson.loads(again.stdout.strip().splitlines()[-1])
    assert second["stopped_by"] == "" and second["resumed_from_committed"]
    assert second["events"] == n - first["events"]  # the rerun redid nothing
    assert len(redis_items(s, ids)) == n
    out_ids = Counter(orjson.loads(m.value)["item_id"] for m in read_topic(s, s.topics.classified, expected=n))
    assert out_ids == Counter(ids), "every listing published exactly once across the stop and the rerun"


@pytest.fixture
def two_model_versions(local, stack):
    """Serve a second version of the classifier (same weights, version number + 1), removed afterwards."""
    with another_version(local, stack) as versions:
        yield versions


def test_a_model_version_triton_does_not_serve_is_refused_at_the_start(stack) -> None:
    env = {**os.environ, **stack.to_env()}
    out = subprocess.run(
        [*_backfill_cmd(), "--model-version", "999"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "version 999" in out.stderr and "--model-version" in out.stderr and "not served by Triton" in out.stderr


def test_model_version_rule(stack, tmp_path, two_model_versions) -> None:
    older, newer = two_model_versions
    s = isolated(stack, "bf-model")
    n = 10
    ids = [f"m-{i}" for i in range(n)]
    produce_raw(s, _events("m", n, version=1))
    # the older model classifies first (a backfill pinned to it) ...
    first = _run(s, model_version=str(older), group="bf-m1")
    assert first.classified == n
    assert {h["model_version"] for h in redis_items(s, ids).values()} == {str(older)}
    tag_updates_before = len(read_topic(s, s.topics.tag_updates, timeout_s=3))
    # ... a newer model re-classifies everything; the tags did not change, so no tag update
    second = _run(s, model_version=str(newer), group="bf-m2")
    assert second.classified == n and second.stale == 0 and second.tag_updates == 0
    assert {h["model_version"] for h in redis_items(s, ids).values()} == {str(newer)}
    assert len(read_topic(s, s.topics.tag_updates, timeout_s=3)) == tag_updates_before
    # an older model never overwrites the newer result
    third = _run(s, model_version=str(older), group="bf-m3")
    assert third.stale == n and third.classified == 0
    assert {h["model_version"] for h in redis_items(s, ids).values()} == {str(newer)}
    # a newer listing_version from the live worker wins over a newer-model backfill of the older edit
    produce_raw(s, [listing("m-0", TITLES[2], listing_version=2)])
    worker = WorkerProcess(s, tmp_path).start()
    try:
        wait_group_stable(s, workers=[worker])
        wait_for(lambda: redis_items(s, ["m-0"])["m-0"]["listing_version"] == "2", 120, "live edit")
    finally:
        worker.stop()
    fourth = _run(s, model_version=str(newer), group="bf-m4")
    assert fourth.stale >= 1
    h = redis_items(s, ["m-0"])["m-0"]
    assert h["listing_version"] == "2" and h["source"] == "live"


def _rows_served(s: Settings, model: str) -> int:
    """Rows Triton has classified with `model` (every version) since it loaded it."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(s.triton.url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)
    finally:
        client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats.get("model_stats", []))


def _stubs(model_folder: str) -> list[str]:
    """The pids of the python-backend processes serving a model folder."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"triton_python_backend_stub" in cmd and f"/{model_folder}/".encode() in cmd:
            out.append(pid)
    return out


def _nice_of_threads(model_folder: str) -> set[int]:
    """The niceness of every thread of the python-backend processes serving a model folder."""
    out: set[int] = set()
    for pid in _stubs(model_folder):
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                out.add(int(open(f"/proc/{pid}/task/{task}/stat").read().rsplit(")", 1)[1].split()[16]))
        except OSError:
            continue
    return out


def _sessions(model_folder: str) -> list[tuple[bool, int | None]]:
    """For each process serving a model folder: whether it leads its own session, and its autogroup's niceness."""
    return [(os.getsid(int(pid)) == int(pid), autogroup_nice(pid)) for pid in _stubs(model_folder)]


def test_backfill_runs_on_the_background_copy_at_low_cpu_priority(stack, caplog) -> None:
    live, copy = stack.triton.model_name, f"{stack.triton.model_name}_background"
    assert _nice_of_threads(copy) == {19}, "every thread of the copy's instances runs at niceness 19"
    assert _nice_of_threads(live) == {0}
    # the copy's processes leave tritonserver's session, so the kernel ranks them below the other sessions too
    # (with autogroups a niceness counts only inside a session), and stay Triton's: they answer below
    groups = 19 if AUTOGROUP.exists() else None  # (the test itself may run in the boot-time group: no niceness)
    copies = _sessions(copy)
    assert copies and all(one == (True, groups) for one in copies), copies
    lives = _sessions(live)
    assert lives and not any(own for own, _ in lives)
    n = 24
    titles = [TITLES[i % len(TITLES)] for i in range(n)]
    for model, served_by in (("auto", copy), ("live", live), ("no_such_model", live)):
        s = isolated(stack, f"bf-bg-{model}").replace(backfill={"model": model})
        ids = [f"bg-{model}-{i}" for i in range(n)]
        produce_raw(s, [listing(iid, t) for iid, t in zip(ids, titles, strict=True)])
        before = {m: _rows_served(s, m) for m in (live, copy)}
        caplog.clear()
        summary = _run(s)
        assert summary.classified == n
        grew = {m: _rows_served(s, m) - before[m] for m in (live, copy)}
        assert grew[served_by] >= n and grew[copy if served_by == live else live] == 0, (model, grew)
        stored = redis_items(s, ids)
        # the same answers as the live model's, under the live model's name
        assert_categories([stored[i]["category_id"] for i in ids], direct_categories(s, titles))
        assert {h["model_name"] for h in stored.values()} == {live}
        fell_back = [r for r in caplog.records if "does not serve no_such_model" in r.getMessage()]
        assert len(fell_back) == (1 if model == "no_such_model" else 0)


def test_a_backfill_following_the_live_record_stops_when_another_version_is_made_live(
    stack, two_model_versions
) -> None:
    """A rollback (or a promotion) during a run that re-classifies with the live version: going on wrote the
    replaced version's answers, which the newer-model rule then kept against the live workers'. It now finishes
    what is in flight, commits, and stops (exit status 3), naming the new live version."""
    import threading

    from stream import models
    from stream.backfill import exit_code

    older, newer = map(str, two_model_versions)
    s = isolated(stack, "bf-live-change").replace(backfill={"max_batch": 4})
    ids = [f"lc-{i}" for i in range(60)]
    produce_raw(s, _events("lc", 60))
    models.promote(s, newer)

    def roll_back_once_it_writes() -> None:
        wait_for(lambda: len(redis_items(s, ids)) >= 4, 120, "the backfill's first results")
        models.promote(s, older)  # the rollback, mid-run

    try:
        threading.Thread(target=roll_back_once_it_writes, daemon=True).start()
        summary = _run(s, since_ms=None, rate=6.0, governor=False)  # 60 events at 6/s: ~10 s
        assert summary.live_changed_to == older and 0 < summary.events < 60, summary
        assert exit_code(summary.stopped_by, bool(summary.live_changed_to)) == 3
        stored = redis_items(s, ids)
        assert len(stored) == summary.events and {h["model_version"] for h in stored.values()} == {newer}
        # committed up to where it stopped: a rerun (the new live version, so a group of its own) starts over
        assert sum(_group_offsets(s, summary.group).values()) == summary.events
    finally:
        r = connections.redis_sync(s.redis)
        r.delete(models.live_key(s.triton.model_name))
        r.close()


def test_a_pinned_version_and_the_live_record_naming_it_are_two_groups() -> None:
    """'promote N, then backfill' after a trial `--model-version N` run reused the trial's completed group and did
    nothing, leaving what the previous version classified since."""
    pinned = default_group(_opts(model_version="11"), "t")
    live = default_group(_opts(model_version="11", follows_live=True), "t")
    assert pinned != live and pinned == default_group(_opts(model_version="11"), "t")
