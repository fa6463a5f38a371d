"""(d'') What the backfill's background copy of the model buys, at the Triton level (no Kafka, worker or Redis).

Live requests go open-loop to the live model at priority 1 (batches of LIVE_BATCH at a fixed rate); background
requests go closed-loop, as fast as Triton answers, in batches of the backfill's size at priority 2, either to
the live model itself (`same`: a backfill with LISTINGS_BACKFILL_MODEL=live) or to its background copy (`copy`:
the default, own instances at CPU niceness 19). `alone` has no background load. The modes alternate for a few
rounds, so a slow spell of a shared VM lands on each of them; the figures are the medians over the rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from devtools.stats import percentile
from stream.classify.triton_client import BACKFILL_PRIORITY, LIVE_PRIORITY, text_inputs
from stream.config import Settings

LIVE_BATCH = 24
MODES = ("alone", "same", "copy")


async def _one_mode(
    s: Settings, titles: Sequence[str], mode: str, live_titles_per_s: float, seconds: float
) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(s.triton.url)
    live_model = s.triton.model_name
    target = s.backfill.serve_from(live_model) if mode == "copy" else live_model
    bg_batch = s.backfill.max_batch
    clients = s.backfill.max_in_flight  # the backfill's requests in flight (LISTINGS_BACKFILL_MAX_IN_FLIGHT)
    latencies: list[float] = []
    bg_rows = 0
    start = time.perf_counter()
    stop = start + seconds
    bg_last = start  # when the last background request finished (those in flight at `stop` finish after it)
    outputs = [grpcclient.InferRequestedOutput("RESULT")]

    async def live_one(k: int) -> None:
        chunk = [titles[(k * LIVE_BATCH + j) % len(titles)] for j in range(LIVE_BATCH)]
        t = time.perf_counter()
        await client.infer(live_model, text_inputs(grpcclient, TITLE=chunk), outputs=outputs, priority=LIVE_PRIORITY)
        latencies.append((time.perf_counter() - t) * 1000)

    async def live() -> None:
        tasks, k, due = [], 0, time.perf_counter()
        while time.perf_counter() < stop:
            tasks.append(asyncio.create_task(live_one(k)))
            k += 1
            due += LIVE_BATCH / live_titles_per_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await asyncio.gather(*tasks)

    async def background(c: int) -> None:
        nonlocal bg_rows, bg_last
        i = c * 7919
        while time.perf_counter() < stop:
            chunk = [titles[(i + j) % len(titles)] for j in range(bg_batch)]
            i += bg_batch * clients
            try:
                await client.infer(
                    target, text_inputs(grpcclient, TITLE=chunk), outputs=outputs, priority=BACKFILL_PRIORITY
                )
                bg_rows += bg_batch
                bg_last = time.perf_counter()
            except Exception:  # noqa: BLE001 - the bounded low-priority queue refused it: back off, as a backfill does
                await asyncio.sleep(0.05)

    try:
        jobs = [live()] + ([background(c) for c in range(clients)] if mode != "alone" else [])
        await asyncio.gather(*jobs)
    finally:
        await client.close()
    return {
        "mode": mode,
        "live_p50_ms": round(percentile(latencies, 50), 1),
        "live_p99_ms": round(percentile(latencies, 99), 1),
        "background_titles_per_s": round(bg_rows / (bg_last - start), 1) if bg_last > start else 0.0,
    }


def copy_served(s: Settings) -> bool:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(s.triton.url)
    try:
        return bool(client.is_model_ready(s.backfill.serve_from(s.triton.model_name)))
    except Exception:  # noqa: BLE001 - unknown model
        return False
    finally:
        client.close()


def isolation(
    s: Settings,
    titles: Sequence[str],
    live_titles_per_s: float,
    seconds: float = 10.0,
    rounds: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Live p99 alone, with a full-speed background load on the live model, and with it on the copy."""
    from tqdm import tqdm

    if not copy_served(s):
        return {"skipped": f"Triton does not serve {s.backfill.serve_from(s.triton.model_name)}"}
    runs: list[dict[str, Any]] = []
    asyncio.run(_one_mode(s, titles, "alone", live_titles_per_s, 1.0))  # warm-up
    with tqdm(total=rounds * len(MODES), desc="(d'') isolation", unit="run", disable=not progress) as bar:
        for r in range(rounds):
            for mode in MODES:
                runs.append({"round": r, **asyncio.run(_one_mode(s, titles, mode, live_titles_per_s, seconds))})
                bar.update()
    med = {
        mode: {
            key: statistics.median(run[key] for run in runs if run["mode"] == mode)
            for key in ("live_p50_ms", "live_p99_ms", "background_titles_per_s")
        }
        for mode in MODES
    }
    alone = med["alone"]["live_p99_ms"] or 1.0
    return {
        "live_titles_per_s": round(live_titles_per_s, 1),
        "live_batch": LIVE_BATCH,
        "background_batch": s.backfill.max_batch,
        "background_clients": s.backfill.max_in_flight,
        "seconds": seconds,
        "rounds": rounds,
        "runs": runs,
        "median": med,
        "p99_same_over_alone": round(med["same"]["live_p99_ms"] / alone, 2),
        "p99_copy_over_alone": round(med["copy"]["live_p99_ms"] / alone, 2),
    }
