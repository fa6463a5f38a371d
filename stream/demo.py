"""`listings demo`: the main job on the embedded local stack."""

from __future__ import annotations

import time
import uuid

from stream.settings import Settings
from stream.stack import control


def smoke(settings: Settings) -> None:
    """Round-trip one message through Kafka, one key through Redis, one request through Triton."""
    import numpy as np
    import redis
    import tritonclient.grpc as grpcclient
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    t0 = time.perf_counter()
    producer.send(topic, key=b"smoke", value=b"hello").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=15000
    )
    got = [m.value for m in consumer]
    consumer.close()
    print(f"kafka: produced and consumed back {got} in {time.perf_counter() - t0:.2f}s")
    r = redis.Redis.from_url(settings.redis)
    r.set("smoke", "ok")
    print(f"redis: PING={r.ping()} smoke={r.get('smoke')!r}")
    client = grpcclient.InferenceServerClient(settings.triton_grpc)
    inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"listing-classifier"]], dtype=object))
    out = client.infer("text_length", [inp]).as_numpy("LENGTH")
    print(f"triton: text_length('listing-classifier') = {int(out[0][0])}")


def run(settings: Settings) -> int:
    started = control.status(settings)
    control.up(settings)
    try:
        smoke(settings)
    finally:
        # stop only what this demo started
        mine = [name for name, st in started.items() if not st["running"]]
        if mine:
            control.down(settings, mine)
    return 0
