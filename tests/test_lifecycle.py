"""Model lifecycle on the real stack: which version is live is an explicit shared record, a running worker
follows a promotion and a rollback without a restart, an unknown version is refused, and shadow scoring writes
only `listings.shadow`, with agreement figures a direct computation reproduces."""

from __future__ import annotations

import asyncio
import json

import pytest

from devtools.workers import WorkerProcess, isolated, produce_raw, wait_group_stable
from stream import connections, keys, models
from stream.shadow import ShadowOptions, read_shadow, shadow, summarize
from support import (
    TITLES,
    another_version,
    direct_results,
    listing,
    listings_cli,
    probe,
    read_topic,
    redis_items,
    wait_for,
)

pytestmark = pytest.mark.stack


def transformer_only(folder) -> None:
    """A candidate that differs from the live version: the same network without the linear part's vote."""
    meta = json.loads((folder / "classifier.json").read_text())
    meta["fusion"] = {**meta["fusion"], "alpha": 1.0, "level_weight": 0.0}
    (folder / "classifier.json").write_text(json.dumps(meta))


@pytest.fixture
def versions(local, stack):
    with another_version(local, stack, transformer_only) as (old, new):
        yield str(old), str(new)
    r = connections.redis_sync(stack.redis)
    r.delete(models.live_key(stack.triton.model_name))  # back to "newest served" for other tests
    r.close()


def test_promotion_and_rollback_reach_a_running_worker(stack, versions, tmp_path) -> None:
    old, new = versions
    s = isolated(stack, "promote")
    models.promote(s, old)
    w = WorkerProcess(s, tmp_path).start()
    try:
        wait_group_stable(s, workers=[w])

        def classify(tag: str) -> set[str]:
            ids = [f"{tag}-{i}" for i in range(8)]
            produce_raw(s, [listing(i, TITLES[n % len(TITLES)]) for n, i in enumerate(ids)])
            wait_for(lambda: len(redis_items(s, ids)) == len(ids), 120, f"{tag} classified", w.log_tail)
            return {h["model_version"] for h in redis_items(s, ids).values()}

        rounds = iter(range(1000))
        assert classify("before") == {old}
        live = models.promote(s, new)
        assert live.version == new and live.history[-1] == old
        wait_for(lambda: classify(f"after-{next(rounds)}") == {new}, 60, "the worker following the promotion")
        rolled = models.promote(s, None, rollback=True)
        assert rolled.version == old
        wait_for(lambda: classify(f"back-{next(rounds)}") == {old}, 60, "the worker following the rollback")
        assert w.alive()
    finally:
        w.kill()


def test_the_first_promotion_records_the_version_served_before_it_so_a_rollback_returns_there(stack, versions) -> None:
    """Without a record workers serve the newest version: promoting an older one and rolling back must return to
    the newest (the first promotion used to record no history, so the rollback had nothing to go back to)."""
    old, new = versions
    r = connections.redis_sync(stack.redis)
    r.delete(models.live_key(stack.triton.model_name))
    r.close()
    assert models.newest_ready(models.served_versions(stack)) == new
    live = models.promote(stack, old)
    assert (live.version, live.history, live.replaced) == (old, [new], new)
    out = listings_cli(stack, "promote", "--rollback")
    assert out.returncode == 0 and f"v{new} is live (previous: v{old})" in out.stdout
    # promoting the newest first: the record names it, with nothing before it
    r = connections.redis_sync(stack.redis)
    r.delete(models.live_key(stack.triton.model_name))
    r.close()
    assert models.promote(stack, new).history == []


def test_concurrent_promotions_never_lose_or_repeat_history_and_a_repeat_promotion_changes_nothing(
    stack, versions
) -> None:
    """The record was read, checked against Triton (a gRPC round trip) and written back: two promotions at once
    could lose one another's history or record a version as its own predecessor. Now a compare-and-set."""
    import threading
    from itertools import pairwise

    old, new = versions
    s = stack
    models.promote(s, old)
    before = models.promote(s, old)  # already live: nothing changes (its history held it twice)
    assert before.version == old and old not in before.history[-1:]
    errors: list[BaseException] = []

    def promote(version: str) -> None:
        try:
            models.promote(s, version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=promote, args=(v,)) for v in (new, old, new, old, new, old)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    r = connections.redis_sync(s.redis)
    live = models.read_live(r, s.triton.model_name)
    r.close()
    chain = [*live.history, live.version]
    assert all(a != b for a, b in pairwise(chain)), chain  # no version its own predecessor


def test_a_live_record_naming_a_version_triton_does_not_serve_holds_the_events_instead_of_dead_lettering_them(
    stack, versions, tmp_path
) -> None:
    """As after the live version's folder was removed and Triton reloaded: every request is refused NOT_FOUND. That
    is a serving problem, not the events': they wait (the worker unready, saying which version is missing) and are
    classified once a served version is promoted; none is dead-lettered."""
    from conftest import free_ports

    old, _ = versions
    s = isolated(stack, "unserved")
    r = connections.redis_sync(s.redis)
    r.hset(models.live_key(s.triton.model_name), "version", "999")
    r.close()
    ids = [f"un-{i}" for i in range(4)]
    dlq_before = len(read_topic(s, s.topics.dlq, timeout_s=2))
    produce_raw(s, [listing(i, TITLES[n % len(TITLES)]) for n, i in enumerate(ids)])
    [port] = free_ports(1)
    w = WorkerProcess(s, tmp_path, metrics_port=port).start()
    try:
        wait_for(lambda: "does not serve" in w.log_tail(), 90, "the worker naming the missing version", w.log_tail)
        wait_for(lambda: probe(port, "/readyz")[0] == 503, 30, "/readyz unready", w.log_tail)
        assert "version 999" in probe(port, "/readyz")[1]["dependencies"]["triton"]["calls"]
        assert redis_items(s, ids) == {} and len(read_topic(s, s.topics.dlq, timeout_s=2)) == dlq_before
        listed = listings_cli(s, "models", "--json")
        assert json.loads(listed.stdout)["live_served"] is False
        assert "v999 is not served by Triton" in listings_cli(s, "models").stdout
        models.promote(s, old)
        wait_for(lambda: len(redis_items(s, ids)) == len(ids), 60, "the held events classified", w.log_tail)
        assert {h["model_version"] for h in redis_items(s, ids).values()} == {old}
        assert len(read_topic(s, s.topics.dlq, timeout_s=2)) == dlq_before
        wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "/readyz ready again", w.log_tail)
    finally:
        w.kill()


def test_promoting_a_version_triton_does_not_serve_is_refused(stack, tmp_path) -> None:
    out = listings_cli(stack, "promote", "999")
    assert out.returncode == 2 and "999" in out.stderr and "not served by Triton" in out.stderr
    listed = listings_cli(stack, "models", "--json")
    doc = json.loads(listed.stdout)
    assert doc["versions"] and all(v["state"] for v in doc["versions"])
    # with the repository folder: its versions Triton has not loaded are listed too (a rollback past them needs a load)
    repo = tmp_path / "repo"
    served = [v["version"] for v in doc["versions"]]
    for version in [*served, "999"]:
        (repo / stack.triton.model_name / version).mkdir(parents=True)
    with_repo = listings_cli(stack, "models", "--json", "--repository", str(repo))
    states = {v["version"]: v["state"] for v in json.loads(with_repo.stdout)["versions"]}
    ready = [v["version"] for v in doc["versions"] if v["state"] == "READY"]
    assert states["999"] == "NOT_LOADED" and ready and all(states[v] == "READY" for v in ready)
    # a version Triton unloaded (UNAVAILABLE) whose folder is on disk is NOT_LOADED too: a load brings it back
    unloaded = [v["version"] for v in doc["versions"] if v["state"] == "UNAVAILABLE"]
    assert all(states[v] == "NOT_LOADED" for v in unloaded)


def test_shadow_writes_only_its_topic_and_its_figures_match_a_direct_computation(stack, versions, tmp_path) -> None:
    old, new = versions
    s = isolated(stack, "shadow")
    models.promote(s, old)
    titles = [TITLES[i % len(TITLES)] + (" steel" if i % 3 else "") for i in range(24)]
    ids = [f"sh-{i}" for i in range(len(titles))]
    produce_raw(s, [listing(i, t) for i, t in zip(ids, titles, strict=True)])
    w = WorkerProcess(s, tmp_path).start()
    try:
        wait_for(lambda: len(redis_items(s, ids)) == len(ids), 120, "live results", w.log_tail)
    finally:
        w.stop()
    before_state = redis_items(s, ids)
    outputs = {
        t: len(read_topic(s, t, timeout_s=2)) for t in (s.topics.classified, s.topics.review, s.topics.tag_updates)
    }
    r = connections.redis_sync(s.redis)
    stream_len, queued = r.xlen(s.redis.updates_stream), r.zcard(keys.REVIEW_QUEUE)

    counts = asyncio.run(shadow(s, ShadowOptions(new, from_beginning=True, max_events=len(ids), idle_timeout_s=20)))
    assert counts["events"] == len(ids) and counts["compared"] == len(ids)
    assert redis_items(s, ids) == before_state  # nothing written to the item state
    assert r.xlen(s.redis.updates_stream) == stream_len and r.zcard(keys.REVIEW_QUEUE) == queued
    assert {t: len(read_topic(s, t, timeout_s=2)) for t in outputs} == outputs  # nor to any output topic
    r.close()

    summary = summarize(read_shadow(s), new)
    candidate = direct_results(s, titles, version=new)
    agree = [before_state[i]["category_id"] == c["category"]["id"] for i, c in zip(ids, candidate, strict=True)]
    assert summary["compared"] == len(ids) and summary["uncompared"] == {}
    assert summary["candidate"] == new and summary["live_versions"] == {old: len(ids)}
    assert summary["agreement"] == pytest.approx(sum(agree) / len(agree), abs=1e-4)
    flips = sum(
        (before_state[i]["needs_review"] == "1") != (c["confidence"] < s.worker.review_threshold)
        for i, c in zip(ids, candidate, strict=True)
    )
    assert summary["review_flips"] == flips
    # a second run over the same events (another group, from the beginning) stops at --max-events exactly (a whole
    # poll batch overshot it), and the report counts each listing edit once
    again = asyncio.run(shadow(s, ShadowOptions(new, group="sh-again", from_beginning=True, max_events=5)))
    assert again["events"] == 5
    summary = summarize(read_shadow(s), new)
    assert (summary["events"], summary["repeated"], summary["compared"]) == (len(ids), 5, len(ids))


def test_a_topic_still_being_written_is_read_to_its_end_at_the_call(stack) -> None:
    """`listings shadow --report` and the feedback export read a whole topic while a shadow or reviewers may still
    be writing to it: the read stops at the end the topic had when it started, instead of following it forever."""
    import threading
    import time

    from stream.topics import read_all

    s = isolated(stack, "read-all")
    produce_raw(s, [(f"k{i}".encode(), b"{}") for i in range(20)], topic=s.topics.shadow)
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            produce_raw(s, [(b"later", b"{}")], topic=s.topics.shadow)
            time.sleep(0.3)

    got: list = []
    writer = threading.Thread(target=keep_writing, daemon=True)
    reader = threading.Thread(target=lambda: got.extend(read_all(s, s.topics.shadow, timeout_s=5)), daemon=True)
    writer.start()
    try:
        time.sleep(1)
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), "read_all followed a topic that is still written instead of stopping at its end"
    finally:
        stop.set()
        writer.join(10)
    assert {f"k{i}".encode() for i in range(20)} <= {m.key for m in got}  # everything there when the read began


def test_a_shadow_whose_candidate_stops_answering_still_ends_at_its_duration(stack) -> None:
    """The candidate can go away mid-run (unloaded as newer versions come): the classification is retried like an
    outage, and those retries outlasted --duration for ever. Here the candidate is a version Triton never served."""
    import time

    s = isolated(stack, "shadow-gone")
    produce_raw(s, [listing("gone-1", TITLES[0])])
    started = time.monotonic()
    counts = asyncio.run(shadow(s, ShadowOptions("999", from_beginning=True, duration_s=4.0)))
    assert time.monotonic() - started < 30
    assert counts.get("events", 0) == 0  # nothing scored, nothing published


def test_the_live_version_triton_stopped_serving_is_not_already_live_and_an_unknown_model_serves_nothing(
    stack, tmp_path
) -> None:
    """`promote N` with N live but unloaded said "already live: nothing changed" (exit 0) while the workers held
    their events; a model Triton does not know was reported as "Triton is not reachable"."""
    s = isolated(stack, "unserved-live")
    r = connections.redis_sync(s.redis)
    r.hset(models.live_key(s.triton.model_name), "version", "999")
    r.close()
    try:
        out = listings_cli(s, "promote", "999")
        assert out.returncode == 2 and "it is the live version" in out.stderr, out.stderr
        unknown = s.replace(triton={"model_name": "no_such_model"})
        assert models.served_versions(unknown) == {}
        out = listings_cli(unknown, "promote", "1")
        assert out.returncode == 2 and "not served by Triton (ready versions: none)" in out.stderr, out.stderr
        out = listings_cli(s, "models", "--repository", str(tmp_path / "missing"))
        assert out.returncode == 2 and "is not a folder" in out.stderr
    finally:
        r = connections.redis_sync(s.redis)
        r.delete(models.live_key(s.triton.model_name))
        r.close()


def test_shadow_from_the_beginning_rewinds_a_group_an_earlier_run_committed(stack, versions, monkeypatch) -> None:
    """`--from-beginning` only applied to a group without commits: a second run of the same candidate scored
    nothing of the retained history, silently."""
    import stream.shadow

    monkeypatch.setattr(stream.shadow, "LIVE_WAIT_S", 0.5)  # no live worker here: nothing to wait for
    old, new = versions
    s = isolated(stack, "shadow-rewind")
    models.promote(s, old)
    produce_raw(s, [listing(f"rw-{i}", TITLES[i % len(TITLES)]) for i in range(6)])
    first = asyncio.run(shadow(s, ShadowOptions(new, from_beginning=True, idle_timeout_s=3.0, duration_s=60)))
    assert first.get("events") == 6
    again = asyncio.run(shadow(s, ShadowOptions(new, from_beginning=True, idle_timeout_s=3.0, duration_s=60)))
    assert again.get("events") == 6  # the group had committed all six: rewound, not resumed
    resumed = asyncio.run(shadow(s, ShadowOptions(new, idle_timeout_s=3.0, duration_s=30)))
    assert resumed.get("events", 0) == 0  # without the flag a run resumes the group: nothing new since


def test_stack_reload_serves_a_version_exported_while_triton_runs(local, stack) -> None:
    """Triton runs with explicit model control: a version `listings train` exports is not served until it is
    loaded, and nothing in the CLI did that on a running local stack."""
    import shutil

    from devtools.stack import triton
    from training import export

    model_dir = local.model_repository / stack.triton.model_name
    newest = export.versions(local.model_repository)[-1]
    new_dir = model_dir / str(newest + 1)
    shutil.copytree(model_dir / str(newest), new_dir)
    try:
        assert models.served_versions(stack).get(str(newest + 1)) != "READY"  # (an earlier test's may be known)
        out = listings_cli(stack, "stack", "reload", env={k: str(v) for k, v in _stack_env(local).items()})
        assert out.returncode == 0, out.stderr
        assert f"{newest + 1} ready" in out.stdout, out.stdout
        assert models.served_versions(stack).get(str(newest + 1)) == "READY"
    finally:
        shutil.rmtree(new_dir)
        triton.load_model(local, stack.triton.model_name, with_background=True)


def _stack_env(local) -> dict[str, object]:
    """The local stack's own variables (its state folder, ports and model repository) for a `listings stack` child."""
    import os

    from conftest import PORT_VARS

    return {k: os.environ[k] for k in [*PORT_VARS, "LISTINGS_STATE_DIR", "LISTINGS_MODEL_REPOSITORY"]}
