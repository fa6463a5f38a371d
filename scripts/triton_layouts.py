"""A/B of Triton instance layouts for the listing classifier: for each `COUNTxTHREADS` layout and engine, rewrite
`config.pbtxt` (instance count, `cpu_threads`, `engine`, `cascade`), reload the model on the local stack, and drive
it with the bench's closed-loop async gRPC load (held-out titles); two interleaved rounds, so a noisy machine shows
as spread rather than as a difference between layouts. The config is restored afterwards.

    .venv/bin/python scripts/triton_layouts.py --layouts 1x2,2x1 --engines onnx-int8,torch --cascade off --seconds 15

Prints one JSON line per point (titles/s, p50/p99 request latency, Triton RSS)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re

from devtools import config
from devtools.bench import engines
from devtools.bench.cli import ensure_stack
from devtools.heldout import held_out_listings
from stream.config import Settings


def with_layout(text: str, count: int, threads: int, engine: str, cascade: str) -> str:
    text = re.sub(r"instance_group \[ \{ count: \d+", f"instance_group [ {{ count: {count}", text)
    text = engines.set_parameter(text, "cpu_threads", str(threads))
    return engines.set_parameter(engines.set_parameter(text, "engine", engine), "cascade", cascade)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layouts", default="1x2,2x1", help="COUNTxTHREADS, comma-separated")
    ap.add_argument("--engines", default="onnx-int8,torch")
    ap.add_argument("--cascade", choices=("on", "off"), default="on", help="the version's cascade (config parameter)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    stack = config.load()
    ensure_stack(stack)
    s = stack.runtime(Settings())
    titles = [row["title"] for row in held_out_listings(stack.data_dir)]
    path = stack.model_repository / s.triton.model_name / "config.pbtxt"
    original = path.read_text()
    layouts = [tuple(int(x) for x in layout.split("x")) for layout in args.layouts.split(",")]
    try:
        for rnd in range(args.rounds):
            for count, threads in layouts:
                for engine in args.engines.split(","):
                    path.write_text(with_layout(original, count, threads, engine, args.cascade))
                    engines.reload_model(stack, s)
                    asyncio.run(engines.closed_loop(s, titles, 64, 4, 3.0))  # settle
                    for batch, concurrency in ((64, 4), (16, 2)):
                        point = asyncio.run(engines.closed_loop(s, titles, batch, concurrency, args.seconds))
                        point.update(count=count, threads=threads, engine=engine, cascade=args.cascade, round=rnd)
                        point["triton_rss_mib"] = engines.triton_rss_mib(stack)
                        print(json.dumps(point), flush=True)
    finally:
        path.write_text(original)
        engines.reload_model(stack, s)


if __name__ == "__main__":
    main()
