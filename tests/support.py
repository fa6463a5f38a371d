"""Test-only helpers: build events, read what the worker wrote to Kafka and Redis, ask Triton directly, run
`listings` commands and probe a worker's HTTP endpoints, and wait for a condition (failing the test with
`AssertionError`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from stream import connections, keys
from stream.classify.triton_client import text_inputs
from stream.config import Settings
from stream.retry import poll


def listings_cli(
    settings: Settings, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`listings ARGS` as a subprocess pointed at `settings`' stack (plus `env`), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        env={**os.environ, **settings.to_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def probe(port: int, path: str) -> tuple[int, dict]:
    """A worker's health endpoint on 127.0.0.1:`port`: HTTP status and JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


# real-looking titles of different categories, for tests that need a few listings
TITLES = [
    "Silicone back cover for Samsung Galaxy J7",
    "Peter England Men Party Blue Jeans",
    "Prestige stainless steel pressure cooker 3 L",
    "Nike Women Pink Running Shoes",
    "Cotton printed double bedsheet with 2 pillow covers",
    "Sonata analog watch for men",
    "Lakme eyeconic kajal 0.35 g",
    "HP 15 inch laptop backpack black",
]


def listing(item_id: str, title: str, **fields: Any) -> tuple[bytes, bytes]:
    return item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, **fields})


def read_topic(settings: Settings, topic: str, timeout_s: float = 5.0, expected: int = 0) -> list[Any]:
    """Every record of the topic from the beginning. It always reads up to the end offsets the topic had when called,
    however slowly the consumer starts (up to two minutes), then stops after `timeout_s` without new records; when
    `expected` is given and fewer arrived, it waits up to six idle periods for them."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **connections.kafka(settings.kafka), auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    out: list[Any] = []
    idle_limit = timeout_s * (6 if expected else 1)
    try:
        waited = time.monotonic()
        while not (parts := [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]):
            if time.monotonic() - waited >= idle_limit:  # never created
                break
            time.sleep(0.2)
        if not parts:
            return out
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        give_up = time.monotonic() + 120
        last_new = time.monotonic()
        caught_up = False
        while True:
            batch = consumer.poll(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                out.extend(records)
                last_new = now
            if not caught_up:
                caught_up = all(consumer.position(tp) >= ends[tp] for tp in parts)
                if caught_up:
                    last_new = now  # the idle periods count from here
                elif now < give_up:
                    continue
            idle = now - last_new
            if idle >= idle_limit or (idle >= timeout_s and len(out) >= expected):
                break
    finally:
        consumer.close()
    return out


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = lambda: "", interval: float = 0.5
) -> None:
    try:
        poll(cond, timeout, what, interval=interval, detail=on_fail)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def direct_results(
    settings: Settings, titles: list[str], version: str = "", **columns: list[str]
) -> list[dict[str, Any]]:
    """The RESULT Triton gives each title when asked directly (no Kafka, no worker): the expected result."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(settings.triton.url)
    try:
        res = client.infer(
            settings.triton.model_name,
            text_inputs(grpcclient, TITLE=titles, **columns),
            model_version=version,
            outputs=[grpcclient.InferRequestedOutput("RESULT")],
        )
    finally:
        client.close()
    return [orjson.loads(r) for r in res.as_numpy("RESULT").reshape(-1)]


NEAR_TIE = 0.1  # probability: two classes this close may swap places with a listing's batch-mates (int8, below)


def direct_categories(settings: Settings, titles: list[str]) -> list[set[str]]:
    """The category ids Triton may give each title: the one it gives when asked directly, and any alternative it
    scores within NEAR_TIE of that. The default engine (ONNX int8, dynamically quantized) scales a batch's
    activations with one factor, so a listing's scores move with its batch-mates (by up to 0.09 on the default
    model, README → Serving) and a near-tie can fall either way in the worker's batches; a result given to the
    wrong item is still caught."""
    out = []
    for r in direct_results(settings, titles):
        top = float(r["confidence"])
        near = {a["id"] for a in r.get("alternatives", []) if float(a["score"]) >= top - NEAR_TIE}
        out.append({r["category"]["id"], *near})
    return out


def assert_categories(got: list[str], allowed: list[set[str]]) -> None:
    """Each stored category is the one Triton gives that title directly (up to a near-tie, see direct_categories)."""
    assert len(got) == len(allowed)
    wrong = [(i, g, sorted(ok)) for i, (g, ok) in enumerate(zip(got, allowed, strict=True)) if g not in ok]
    assert not wrong, wrong


def result_fields(h: dict[str, str]) -> dict[str, str]:
    """A stored result without its delivery bookkeeping (`outputs_pending` flips to 0 once a redelivery has
    re-sent the outputs of a result whose first run died before Kafka acknowledged them)."""
    return {k: v for k, v in h.items() if k != "outputs_pending"}


def redis_items(settings: Settings, item_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    r = connections.redis_sync(settings.redis, decode_responses=True)
    try:
        pipe = r.pipeline(transaction=False)
        ids = list(item_ids)
        for iid in ids:
            pipe.hgetall(keys.listing(iid))
        res = pipe.execute()
    finally:
        r.close()
    return {iid: h for iid, h in zip(ids, res, strict=True) if h}


def make_test_ca(folder: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (ca.pem, server.pem, server.key)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=listing-classifier test CA",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"
    )
    (folder / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return folder


@contextmanager
def another_version(
    local: Any, settings: Settings, edit: Callable[[Path], None] | None = None
) -> Iterator[tuple[int, int]]:
    """Serve one more version of the classifier (a copy of the newest, changed by `edit(folder)` if given),
    removed afterwards. Yields (newest before, the new one)."""
    import shutil

    from devtools.stack import triton
    from training import export

    model_dir = local.model_repository / settings.triton.model_name
    old = export.versions(local.model_repository)[-1]
    new_dir = model_dir / str(old + 1)
    shutil.copytree(model_dir / str(old), new_dir)
    if edit is not None:
        edit(new_dir)
    triton.load_model(local, settings.triton.model_name, with_background=True)
    try:
        yield old, old + 1
    finally:
        shutil.rmtree(new_dir)
        triton.load_model(local, settings.triton.model_name, with_background=True)
